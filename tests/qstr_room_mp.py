# MicroPython side of tests/test_qstr_room.py: boots a sim terminal in this process as app.run does
# (its modules, the board, the config, the App, its tasks for a moment), then loads the modules the
# terminal loads only now and then, and prints the interned-name count (micropython.qstr_info lines,
# parsed by the host) after each step and, last, a JSON line with how many more names fit before the
# qstr pool doubles. Settings (prepended by the test): none. The environment names the config
# (CLOCKTERM_CONFIG) and the state folder (CLOCKTERM_STATE). Not collected by pytest (no test_ prefix).

import gc
import json
import sys

import asyncio
import micropython

import clockterm
from clockterm import app


def step(tag):
    gc.collect()
    print("STEP", tag)
    micropython.qstr_info()


async def running(a):
    asyncio.create_task(a.main())
    await asyncio.sleep_ms(300)


def room():
    # Intern new names until the heap drops by a new pool (pools double): how many fitted before.
    class Names:
        pass

    o = Names()
    n = 0
    while n < 2000:
        gc.collect()
        free = gc.mem_free()
        setattr(o, "zz%d" % n, 0)
        if free - gc.mem_free() > 1000:
            break
        n += 1
    return n


def main():
    app.load_modules()
    board = app.load_board()
    board.mount_fs()
    a = app._build(board)
    asyncio.run(running(a))
    step("up")
    for name in ("endpoint", "pulls", "roster_file", "config", "tzparse"):
        __import__("clockterm." + name)
        clockterm.forget("clockterm." + name)
    step("later")
    print(json.dumps({"room": room()}))
    sys.exit(0)
