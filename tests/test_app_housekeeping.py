"""The app's housekeeping loop under micropython (App.main with fakes around it): it is the
supervisor, restarting a task that crashed or returned with backoff, its crash logged once; it feeds
the watchdog from the first turn whatever its other duties (display, a failing restart) throw, and
stops feeding once a critical task has crash-looped 20 times (a non-critical one does not count)."""

from __future__ import annotations

import json

from mp import run_mp

SCRIPT = r"""
import asyncio, json, time
from clockterm import app, log

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

async def main():
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

asyncio.run(main())
"""


def test_housekeeping_supervises_and_feeds_the_watchdog() -> None:
    r = run_mp(SCRIPT)
    lines = r.stdout.splitlines()
    out = json.loads(lines[-1])
    # The watchdog: armed at the first turn, then fed every 50 ms, the display failing all along.
    assert out["first"] >= 1, out
    assert out["expired"] >= 1, out
    assert out["healthy"] >= out["healthy_ms"] // 100, out  # due every 50 ms, looked at every 20
    assert any(" E housekeeping: OSError" in ln for ln in lines), r.stdout  # said, not swallowed
    # A crashing task: restarted after 500 ms, then 1000 ms; not alive while it waits.
    assert out["at_250"]["sntp"] == {"restarts": 1, "alive": False, "critical": True, "starts": 1}, out
    assert out["at_1000"]["sntp"] == {"restarts": 2, "alive": False, "critical": True, "starts": 2}, out
    assert out["at_1900"]["sntp"]["starts"] == 3, out
    # Each crash logged once, under the task's name, with its type and message.
    crashes = [ln for ln in lines if "RuntimeError: boom" in ln and " E " in ln]
    assert len(crashes) == 3 and all(" E sntp: RuntimeError: boom" in ln for ln in crashes), crashes
    # A task that returns: said, and restarted with the same backoff.
    assert out["at_250"]["uplink"] == {"restarts": 1, "alive": False, "critical": True, "starts": 1}, out
    assert out["at_1000"]["uplink"]["starts"] == 2, out
    assert out["at_1900"]["uplink"]["starts"] == 3, out
    assert sum(" W uplink: task ended; restarting" in ln for ln in lines) == 3, r.stdout
    # A restart that fails in the supervision step: logged, backed off like an end, feeding goes on.
    assert any(" E housekeeping: ValueError: no start" in ln for ln in lines), r.stdout
    assert out["at_1900"]["flaky"]["restarts"] >= 2, out
    # Crash loops past 20 restarts: a non-critical one is no reason to stop feeding, a critical one is.
    assert out["optional"]["restarts"] >= 20 and out["optional"]["fed"] >= 6, out
    assert out["bad"]["restarts"] == 20 and out["bad"]["fed"] == 0, out


BACKOFF = r"""
import json
from clockterm import app

class T:  # time with an ESP32's ticks: ms wrapping every 2**30, ticks_add refusing 2**29 or more
    PERIOD = 1 << 30
    ms = PERIOD - 30000  # 30 s before a wrap
    def ticks_ms(self):
        return T.ms % T.PERIOD
    def ticks_diff(self, a, b):
        d = (a - b) % T.PERIOD
        return d - T.PERIOD if d >= T.PERIOD // 2 else d
    def ticks_add(self, a, d):
        if not -(1 << 29) < d < (1 << 29):
            raise OverflowError("ticks interval overflow")
        return (a + d) % T.PERIOD

class Task:
    data = None  # as asyncio keeps what ended it: None while it runs
    def done(self):
        return self.data is not None

class Asyncio:  # only what supervision uses; the tasks end when the script says
    def create_task(self, coro):
        task = Task()
        starts.append(T.ms)
        tasks.append(task)
        return task

app.time = T()
app.asyncio = Asyncio()
starts = []
tasks = []

class App(app.App):
    def __init__(self):  # supervision only
        self.tasks = {}
        self._sup = []

def tick(ms):  # housekeeping's turns over the next ms, 20 ms apart
    end = T.ms + ms
    while T.ms < end:
        T.ms += 20
        a._restart(T().ticks_ms())

a = App()
t0 = T.ms
a.supervise("x", lambda: None)
ends = []
for run_ms in (100, 100, 100, 61000, 100):  # three quick crashes, a long run (past the wrap), one more
    tick(run_ms)
    tasks[-1].data = RuntimeError("end")
    ends.append(T.ms)
    n = len(starts)
    while len(starts) == n:  # until restarted
        tick(20)
print(json.dumps({"waits": [s - e for s, e in zip(starts[1:], ends)], "restarts": a.tasks["x"]["restarts"],
                  "wrapped": T().ticks_ms() < t0}))
"""


def test_restart_backoff_doubles_and_resets_after_a_long_run_across_a_ticks_wrap() -> None:
    from mp import mp_json

    out = mp_json(BACKOFF)
    assert out["restarts"] == 5 and out["wrapped"], out
    # An end is seen at the next turn (20 ms), the restart follows the backoff: 500 ms, doubled at each
    # restart; after a run longer than _RESTART_MAX_MS (60 s) it is 500 ms again.
    assert out["waits"] == [520, 1020, 2020, 520, 1020], out
