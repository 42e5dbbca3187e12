# MicroPython side of the housekeeping tests (tests/test_app_housekeeping.py): clockterm.app's App.main
# and its supervision with fakes around them (no board, no network). Each case prints what it saw as
# JSON on its last line (supervise: after the log lines the App writes).
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): CASE, the case to run (a key of CASES at
# the end); then it appends a call of main(). Not collected by pytest (no test_ prefix).

import asyncio
import json
import time

from clockterm import app

CASE = globals().get("CASE", "supervise")


# --- supervise: App.main, a watchdog, a display that fails, tasks that crash or return ----------------

class WDT:
    timeout_ms = 200  # fed every 50 ms
    feeds = 0

    def feed(self):
        self.feeds += 1

    async def watch(self):
        return


class Display:
    def idle(self, items):
        raise OSError(19)  # ENODEV: the display does not answer on its bus


class Board:
    name = "fake"
    fs_root = "/tmp"
    control = None
    link = None  # no run(): nothing to supervise
    watchdog = WDT()
    indicator = Display()

    def readers(self):
        return ()


class Clock:
    def now(self):
        return 1795600000000, 1, 0


class TZ:
    def offset_s(self, s):
        return 3600


class Journal:
    last_seq = 5
    acked_seq = 2


starts = {"sntp": 0, "uplink": 0, "flaky": 0}


class Sntp:  # crashes 10 ms after each start
    async def run(self):
        starts["sntp"] += 1
        await asyncio.sleep_ms(10)
        raise RuntimeError("boom")


class Uplink:  # returns 10 ms after each start
    async def run(self):
        starts["uplink"] += 1
        await asyncio.sleep_ms(10)


class Terminal:
    expired = 0

    def expire(self):
        Terminal.expired += 1

    def step(self):
        pass


class App(app.App):
    def __init__(self):  # only what main and housekeeping use, not a whole terminal
        self.board = Board()
        self.device_id = "t-1"
        self.tasks = {}
        self._sup = []
        self.stall_ms_max = 0
        self.clock = Clock()
        self.tz = TZ()
        self.journal = Journal()
        self.sntp = Sntp()
        self.uplink = Uplink()
        self.terminal = Terminal()
        self.servers = []
        self.endpoint = None


async def ended():
    return


def flaky():  # starts once; every restart then fails in the supervision step itself
    starts["flaky"] += 1
    if starts["flaky"] > 1:
        raise ValueError("no start")
    return ended()


async def crash():
    raise RuntimeError("again")


def snap(a, name):
    return dict(a.tasks[name], starts=starts.get(name))


async def supervise():
    a = App()
    w = Board.watchdog
    t0 = time.ticks_ms()
    asyncio.create_task(a.main())
    await asyncio.sleep_ms(0)
    a.supervise("flaky", flaky, critical=False)
    await asyncio.sleep_ms(30)
    out = {"first": w.feeds}
    await asyncio.sleep_ms(220)
    out["at_250"] = {"sntp": snap(a, "sntp"), "uplink": snap(a, "uplink")}  # waiting out 500 ms
    await asyncio.sleep_ms(750)
    out["at_1000"] = {"sntp": snap(a, "sntp"), "uplink": snap(a, "uplink")}  # restarted; now 1000 ms
    await asyncio.sleep_ms(900)
    out["at_1900"] = {"sntp": snap(a, "sntp"), "uplink": snap(a, "uplink"), "flaky": snap(a, "flaky")}
    out["healthy"] = w.feeds
    out["healthy_ms"] = time.ticks_diff(time.ticks_ms(), t0)
    # A non-critical task that crash-loops past 20 restarts: the feeding goes on.
    a.supervise("optional", crash, critical=False)
    a.tasks["optional"]["restarts"] = 19
    await asyncio.sleep_ms(100)
    n = w.feeds
    await asyncio.sleep_ms(400)
    out["optional"] = dict(a.tasks["optional"], fed=w.feeds - n)
    # A critical one that reaches 20 restarts: no more feeding.
    a.supervise("bad", crash)
    a.tasks["bad"]["restarts"] = 19
    await asyncio.sleep_ms(100)
    n = w.feeds
    await asyncio.sleep_ms(400)
    out["bad"] = dict(a.tasks["bad"], fed=w.feeds - n)
    out["expired"] = Terminal.expired  # the duplicate window's slots, although the display fails
    print(json.dumps(out))


# --- backoff: supervision alone, on an ESP32's ticks, with tasks that end when the case says ----------

class WrapTime:  # time with an ESP32's ticks: ms wrapping every 2**30, ticks_add refusing 2**29 or more
    PERIOD = 1 << 30
    ms = PERIOD - 30000  # 30 s before a wrap

    def ticks_ms(self):
        return WrapTime.ms % WrapTime.PERIOD

    def ticks_diff(self, a, b):
        d = (a - b) % WrapTime.PERIOD
        return d - WrapTime.PERIOD if d >= WrapTime.PERIOD // 2 else d

    def ticks_add(self, a, d):
        if not -(1 << 29) < d < (1 << 29):
            raise OverflowError("ticks interval overflow")
        return (a + d) % WrapTime.PERIOD


class Task:
    data = None  # as asyncio keeps what ended it: None while it runs

    def done(self):
        return self.data is not None


started = []  # the ticks at which each task was made
made = []  # the tasks


class Asyncio:  # only what supervision uses; the tasks end when the case says
    def create_task(self, coro):
        task = Task()
        started.append(WrapTime.ms)
        made.append(task)
        return task


class SupervisionApp(app.App):
    def __init__(self):  # supervision only
        self.tasks = {}
        self._sup = []


def backoff():
    app.time = WrapTime()
    app.asyncio = Asyncio()
    a = SupervisionApp()

    def tick(ms):  # housekeeping's turns over the next ms, 20 ms apart
        end = WrapTime.ms + ms
        while WrapTime.ms < end:
            WrapTime.ms += 20
            a._restart(WrapTime().ticks_ms())

    t0 = WrapTime.ms
    a.supervise("x", lambda: None)
    ends = []
    for run_ms in (100, 100, 100, 61000, 100):  # three quick crashes, a long run (past the wrap), one more
        tick(run_ms)
        made[-1].data = RuntimeError("end")
        ends.append(WrapTime.ms)
        n = len(started)
        while len(started) == n:  # until restarted
            tick(20)
    waits = [s - e for s, e in zip(started[1:], ends)]  # noqa: B905 - MicroPython's zip takes no strict=
    print(json.dumps({"waits": waits, "restarts": a.tasks["x"]["restarts"], "wrapped": WrapTime().ticks_ms() < t0}))


# --- warm_up: app.load_modules when a module loaded only now and then cannot be imported -------------

def warm_up():
    import builtins
    import sys

    from clockterm import log

    real = builtins.__import__

    def refusing(name, *args):
        if name == "clockterm.endpoint":
            raise MemoryError("memory allocation failed")
        return real(name, *args)

    builtins.__import__ = refusing
    try:
        app.load_modules()
    finally:
        builtins.__import__ = real
    print(json.dumps({"errors": log.errors, "pulls_kept": "clockterm.pulls" in sys.modules,
                      "journal": "clockterm.journal" in sys.modules}))


CASES = {"supervise": supervise, "backoff": backoff, "warm_up": warm_up}


def main():
    run = CASES[CASE]()
    if run is not None:  # an async case: its coroutine
        asyncio.run(run)
