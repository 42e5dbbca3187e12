# MicroPython side of the tap path tests (tests/test_tap_path.py): clockterm.terminal's duplicate window
# on a Terminal built from small fakes (no flash, no network). Each case prints what it saw as JSON.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): CASE, the case to run (a key of CASES at
# the end); then it appends a call of main(). Not collected by pytest (no test_ prefix).

import gc
import json

from clockterm import terminal as term_mod

CASE = globals().get("CASE", "ring")


# The parts a Terminal is built from, as small fakes
class Clock:
    def now(self):
        return 1795600000000, 1, 0


class TZ:
    def offset_s(self, s):
        return 0


class Journal:
    seq = 0

    def append(self, p):
        self.seq += 1
        return self.seq


class Indicator:
    def feedback(self, code, text):
        pass


def terminal(window_s):
    return term_mod.Terminal(Clock(), Journal(), None, TZ(), Indicator(),
                             {"duplicate_window_s": window_s, "unknown_badge": "record", "kind_mode": "toggle"})


def ring():
    t = terminal(3600)
    cfg = t.cfg
    out = {}

    def tap(b):
        return t.tap(b).split()[0]

    # The ring's heap is taken at construction: filling it with 16 badges keeps no more.
    tap("F00")  # (the last result's text, kept for STATUS, exists from here on)
    gc.collect()
    before = gc.mem_alloc()
    for i in range(16):
        tap("E%02dABCDEF" % i)
    gc.collect()
    out["full"] = gc.mem_alloc() - before
    # The same badge again: a duplicate; a badge that is a prefix of one remembered, or shares its prefix: not.
    out["first"] = [tap("ABC"), tap("ABC"), tap("AB"), tap("ABCD"), tap("ABD"), tap("abc")]
    # A badge of the longest length, then 15 others: still remembered; one more: its slot is taken again.
    long = "0123456789ABCDEF0123"
    tap(long)
    for i in range(15):
        tap("C%02d" % i)
    out["still"] = tap(long)
    tap("D00")
    out["evicted"] = tap(long)
    # The window: a duplicate only within duplicate_window_s.
    cfg["duplicate_window_s"] = 0
    out["expired"] = tap("D00")
    print(json.dumps(out))


class T:  # time with an ESP32's ticks: ms wrapping every 2**30
    PERIOD = 1 << 30
    ms = 0

    def ticks_ms(self):
        return T.ms % T.PERIOD

    def ticks_diff(self, a, b):
        d = (a - b) % T.PERIOD
        return d - T.PERIOD if d >= T.PERIOD // 2 else d


def wrap():
    term_mod.time = T()
    day = 86400000
    t = terminal(60)
    out = [t.tap("04A1B2C3").split()[0]]
    T.ms = 7 * day  # half a wrap on, ticks_diff to the slot is negative
    out.append(t.tap("04A1B2C3").split()[0])
    T.ms += 30000  # and the window still works
    out.append(t.tap("04A1B2C3").split()[0])
    # With housekeeping's expire() every few seconds, a slot never lives to see a wrap:
    t2 = terminal(60)
    T.ms = 0
    t2.tap("04D5E6F7")
    T.ms = 61000
    t2.expire()
    T.ms = (1 << 30) + 100  # a whole wrap later: ticks_diff would say 100 ms
    expired = t2.tap("04D5E6F7").split()[0]
    print(json.dumps({"taps": out, "after_wrap": expired}))


CASES = {"ring": ring, "wrap": wrap}


def main():
    CASES[CASE]()
