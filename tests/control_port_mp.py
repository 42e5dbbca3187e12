# MicroPython side of the control port tests: the sim board's control-port server (lib/clockterm/
# boards/sim.py) answering STATUS and TAP on a real socket, through an answer buffer that another user
# fills whole at every turn of the event loop.
#
# tests/test_control_port.py runs this under the unix port with the compiled bundle (linted with the
# firmware's rules, lib/ruff.toml). It prepends the setting CFG (JSON text: the STATUS documents to
# answer, null for one that raises MemoryError; the commands to send; the state folder, the port and
# the buffer's size) as an assignment and appends a call of main(), which prints the answer lines and
# how often the buffer was overwritten as one JSON document. Not collected by pytest (no test_ prefix).

import asyncio
import json

from clockterm.app import OutBuf
from clockterm.boards import sim

CFG = globals().get("CFG", "{}")


async def talk(cfg, board, status, out):
    srv = board.start(lambda badge: "OK 1 " + badge, status, out)
    asyncio.create_task(srv.run())
    clobbers = 0

    async def other_user():
        # The buffer's other users (the uplink, another client): fill it whole at every loop turn.
        nonlocal clobbers
        while True:
            out.reset().write(b"#" * len(out.buf))
            clobbers += 1
            await asyncio.sleep_ms(0)

    other = asyncio.create_task(other_user())
    r, w = await asyncio.open_connection("127.0.0.1", cfg["port"])
    lines = []
    for cmd in cfg["cmds"]:
        w.write(cmd.encode() + b"\n")
        await w.drain()
        lines.append((await r.readline()).decode())
    w.close()
    other.cancel()
    print(json.dumps({"lines": lines, "clobbers": clobbers}))


def main():
    cfg = json.loads(CFG)
    docs = cfg["docs"]
    board = sim.Board({"flash": {"fs_kb": 8, "journal": {"backend": "raw", "size_kb": 8}}}, cfg["state"])
    board.port = cfg["port"]
    out = OutBuf(cfg["buf"])

    def status():
        d = docs.pop(0)
        if d is None:
            raise MemoryError("status")
        return d

    asyncio.run(talk(cfg, board, status, out))
