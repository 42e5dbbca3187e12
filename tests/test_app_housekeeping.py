"""The app's housekeeping task under micropython: the watchdog is fed from the first turn while every
critical task is alive, whatever its other duties (display, crash count) throw; a dead critical task
stops the feeding."""

from __future__ import annotations

from mp import mp_json

SCRIPT = r"""
import asyncio, json
from clockterm import app, log

class WDT:
    timeout_ms = 200  # fed every 50 ms
    feeds = 0
    def feed(self):
        self.feeds += 1

class Display:
    def idle(self, items):
        raise OSError(19)  # ENODEV: the display does not answer on its bus

class Board:
    fs_root = "/tmp"
    watchdog = WDT()
    indicator = Display()

class Clock:
    def now(self):
        return 1795600000000, 1, 0

class TZ:
    def offset_s(self, s):
        return 3600

class Journal:
    last_seq = 5
    acked_seq = 2

class App(app.App):
    def __init__(self):  # only what housekeeping uses, not a whole terminal
        self.board = Board()
        self.tasks = {}
        self.stall_ms_max = 0
        self.clock = Clock()
        self.tz = TZ()
        self.journal = Journal()

async def crash():
    raise RuntimeError("boom")

async def main():
    a = App()
    a.supervise("fine", lambda: asyncio.sleep(60))
    asyncio.create_task(a._housekeeping())
    await asyncio.sleep_ms(30)
    first = Board.watchdog.feeds
    await asyncio.sleep_ms(400)
    healthy = Board.watchdog.feeds
    # A critical task that keeps crashing: 20 restarts and the feeding stops (fast restarts here).
    a.supervise("bad", crash)
    a.tasks["bad"]["restarts"] = 20
    await asyncio.sleep_ms(100)
    n = Board.watchdog.feeds
    await asyncio.sleep_ms(400)
    print(json.dumps({"first": first, "healthy": healthy, "stopped": Board.watchdog.feeds - n,
                      "errors": log.errors, "alive": a.tasks["fine"]["alive"]}))

asyncio.run(main())
"""


def test_watchdog_fed_from_the_first_turn_whatever_the_display_throws() -> None:
    out = mp_json(SCRIPT)
    assert out["first"] >= 1, out  # armed at the first turn, not a quarter timeout later
    assert out["healthy"] >= 6, out  # every 50 ms over 430 ms, the display failing all along
    assert any("housekeeping: OSError" in e for e in out["errors"]), out  # said, not swallowed
    assert out["alive"] is True
    assert out["stopped"] == 0, out  # a crash-looping critical task: no more feeding
