# The employee card's screens: the real tap path and idle display drive the ESP32 board layer's
# indicator and its SSD1306 driver; each frame the driver sends over I2C is printed (make card).
#
# MicroPython code, run by clockterm_host.card under the unix port with the compiled bundle, which
# turns each printed frame into a PNG for docs/employee-card.md. Only the hardware is stood in for:
# machine's Pin, PWM and I2C (the I2C keeps the display data the driver writes). The texts come
# from clockterm.terminal (a tap's result) and app.App._idle (time, sync state, backlog).

import json
import sys


class _Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2

    def __init__(self, n, mode=None, pull=None, value=None):
        self.v = value or 0

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class _PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        pass

    def freq(self, f=None):
        return 0

    def duty_u16(self, d=None):
        return 0


class _I2C:
    def __init__(self, bus, scl=None, sda=None, freq=400000):
        self.frame = None

    def writeto(self, addr, buf):
        if buf[0] == 0x40:  # display data: the whole frame, as the driver sends it
            self.frame = bytes(buf[1:])
        return len(buf)


class _Machine:  # stands in for the machine module (the board layer imports it)
    Pin = _Pin
    PWM = _PWM
    I2C = _I2C


sys.modules["machine"] = _Machine

from clockterm import app  # noqa: E402 (after the machine stand-in)
from clockterm.boards import esp32  # noqa: E402
from clockterm.boards.cutflash import CutFlash  # noqa: E402
from clockterm.boards.norflash import NorFlash  # noqa: E402
from clockterm.clock import Clock  # noqa: E402
from clockterm.journal import Journal, JournalFull  # noqa: E402
from clockterm.punch import Punch  # noqa: E402
from clockterm.roster import RosterWriter  # noqa: E402
from clockterm.terminal import Terminal  # noqa: E402
from clockterm.tz import TZ  # noqa: E402

MINUTE_MS = 60000
BOOT_UTC_MS = 1772434650000  # 2026-03-02 06:57:30 UTC, 07:57 in Berlin: what the RTC says at boot


class Ticks:  # the clock's tick source: the script moves time on between the screens
    ms = 0

    def __call__(self):
        return Ticks.ms


class RTC:  # a battery-backed RTC that kept a plausible time while the terminal was off
    battery = True

    def now_ms(self):
        return BOOT_UTC_MS

    def set_ms(self, ms):
        pass


class Board:  # what App._idle uses
    pass


class Parts:  # what App._idle uses of the App
    pass


def screen(name, i2c):
    print(json.dumps({"name": name, "frame": i2c.frame.hex()}))


def main():
    roster = RosterWriter("card-roster.bin")
    roster.add("04A1B2C3", "E100", "Ada L.")
    roster.add("04D5E6F7", "E200", "Grace H.")
    roster.commit()
    from clockterm.roster import Roster

    ind = esp32.Indicator({"buzzer": 25, "led_ok": 26, "led_err": 27,
                           "display": {"scl": 22, "sda": 21, "width": 128, "height": 64}})
    i2c = ind.screen.d._i2c
    clock = Clock(RTC(), "card-clock.json", ticks_ms=Ticks())
    tz = TZ("CET-1CEST,M3.5.0,M10.5.0/3")
    journal = Journal(NorFlash(block_size=512, block_count=4))
    cfg = {"duplicate_window_s": 60, "unknown_badge": "deny", "kind_mode": "toggle"}
    term = Terminal(clock, journal, Roster("card-roster.bin"), tz, ind, cfg)
    parts = Parts()
    parts.clock, parts.tz, parts.journal, parts.board = clock, tz, journal, Board()
    parts.board.indicator = ind

    def idle(name):
        app.App._idle(parts)
        screen(name, i2c)

    def later(ms):  # time passes; housekeeping refreshes the idle display every 10 s meanwhile
        Ticks.ms += ms
        app.App._idle(parts)

    def tap(name, badge):
        term.tap(badge)
        screen(name, i2c)

    idle("idle-unsynced")  # before the first time sync of this boot
    Ticks.ms += 90000
    clock.correct(Ticks.ms, (BOOT_UTC_MS + 150000) * 1000)  # 07:00:00 UTC: 08:00 in Berlin
    idle("idle")
    later(MINUTE_MS)
    tap("in", "04A1B2C3")
    tap("already-done", "04A1B2C3")  # again within the duplicate window
    later(MINUTE_MS)
    tap("unknown-badge", "04FFEE01")
    cfg["unknown_badge"] = "record"
    tap("unknown-badge-recorded", "04FFEE01")
    idle("idle-backlog")
    later(510 * MINUTE_MS)
    cfg["duplicate_window_s"] = 0  # hours later: the window is long over
    tap("out", "04A1B2C3")
    # A journal full of punches the central has not stored yet (policy "refuse").
    full = Journal(NorFlash(block_size=256, block_count=3))
    try:
        while True:
            full.append(Punch(BOOT_UTC_MS, "04D5E6F7"))
    except JournalFull:
        pass
    term.journal = full
    tap("memory-full", "04D5E6F7")
    # A flash that fails the write (here: the emulated chip loses power during it).
    failing = CutFlash(block_size=512, block_count=4)
    term.journal = Journal(failing)
    failing.cut_after(0)
    tap("error", "04D5E6F7")
    term.journal = journal  # the flash works again
    later(MINUTE_MS)
    term.tap("04D5E6F7")
    clock.stale_after_s = 3600  # no time sync for longer than this
    later(61 * MINUTE_MS)
    idle("idle-stale")


main()
