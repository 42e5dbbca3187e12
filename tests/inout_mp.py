# MicroPython side of the in/out state tests: a Terminal on a real journal (emulated NOR flash) and a
# real roster (LittleFS), a settable UTC clock and ESP32-like ticks (wrapping at 2**30 ms).
#
# tests/test_inout.py runs this under the unix port with the compiled bundle (linted with the firmware's
# rules, lib/ruff.toml). It prepends the setting D (a scratch folder for the flash images) as an
# assignment; the module runs its scenarios as it is imported and prints one JSON document of what each
# scenario saw. Not collected by pytest (no test_ prefix).

import json
import vfs

from clockterm import log
from clockterm import terminal as term_mod
from clockterm.boards.norflash import NorFlash
from clockterm.clock import iso_ms
from clockterm.journal import Journal
from clockterm.punch import Punch
from clockterm.roster import Roster, RosterWriter
from clockterm.terminal import Terminal

D = globals()["D"]  # no default: the flash images are written there

H = 3600000
T0 = 1795600000000  # 2026-11-25


class Ticks:
    # time with an ESP32's ticks: ms wrapping every 2**30, advanced by the test
    PERIOD = 1 << 30
    ms = (1 << 30) - 5000  # a wrap comes soon

    def ticks_ms(self):
        return Ticks.ms % Ticks.PERIOD

    def ticks_diff(self, a, b):
        d = (a - b) % Ticks.PERIOD
        return d - Ticks.PERIOD if d >= Ticks.PERIOD // 2 else d

    def ticks_add(self, a, b):
        if not -(1 << 29) < b < (1 << 29):
            raise OverflowError("ticks interval overflow")
        return (a + b) % Ticks.PERIOD


term_mod.time = Ticks()


class Clock:
    utc = T0

    def now(self):
        return Clock.utc, 1, 0


class TZ:
    def offset_s(self, s):
        return 0


class Indicator:
    def feedback(self, code, text):
        pass


def advance(ms):
    Clock.utc += ms
    Ticks.ms += ms


flash = NorFlash(4096, 64, path=D + "/fs.bin")
vfs.VfsLfs2.mkfs(flash)
vfs.mount(vfs.VfsLfs2(flash), "/fs")
jflash = NorFlash(4096, 32, path=D + "/journal.bin")


def write_roster(badges, holders=None):
    # holders: {badge: employee id} for badges not held by their own "E<badge>"
    w = RosterWriter("/fs/roster.bin")
    for b in sorted(badges):
        w.add(b, (holders or {}).get(b) or "E" + b.replace(":", ""), "N" + b)
    w.commit()


CFG = {"duplicate_window_s": 0, "unknown_badge": "record", "kind_mode": "toggle", "shift_max_h": 8}


def boot():
    # A terminal as the app builds it after a power-up: journal recovered from flash, state restored.
    t = Terminal(Clock(), Journal(jflash), Roster("/fs/roster.bin"), TZ(), Indicator(), CFG)
    t.restore()
    return t


def kind(t, badge):
    a = t.tap(badge)
    if not a.startswith("OK"):
        return a
    return t.last_result.split()[0]


def steps(t, n=1000):
    for _ in range(n):
        t.step()
        if t._replay is None and t._inside_for == t.roster.opened:
            break


out = {}
write_roster(["04A1B2C3", "04D5E6F7", "123:45678"])
t = boot()
out["first"] = [kind(t, "04A1B2C3"), kind(t, "04D5E6F7"), kind(t, "04A1B2C3"), kind(t, "123:45678")]
advance(60000)
# power cut: a new terminal from the same flash
t = boot()
out["after_boot"] = [kind(t, "04A1B2C3"), kind(t, "04D5E6F7"), t.status()["inside"]]
# A roster swap that moves indexes (badges sorted before), drops 123:45678 (IN) and keeps the others.
write_roster(["0000", "0001", "0002", "04A1B2C3", "04D5E6F7", "AAAA"])
t.roster.open()
out["after_swap_tap"] = [kind(t, "04A1B2C3"), kind(t, "AAAA")]  # the tap finishes the rebuild first
out["after_swap_people"] = t.status()["inside"]
# The work-day rule while running: 9 hours on (window 8 h), housekeeping's refresh ages the INs out.
advance(9 * H)
steps(t)
out["aged_people"] = t.status()["inside"]
out["aged"] = kind(t, "AAAA")  # its IN was 9 h ago: IN again
# Taps during a rebuild in steps: the rebuild replays them too (none lost between its end and install).
for i in range(600):
    advance(1000)
    kind(t, "%04X" % (0xB000 + i))  # unknown badges: journal traffic
kind(t, "0000")  # IN
t.refresh_at = Ticks().ticks_ms()
t.step()
t.step()
mid = t._replay is not None
out["mid_tap"] = [mid, kind(t, "0000"), kind(t, "0001")]  # OUT, IN: decided on the live bits
steps(t)
out["after_mid"] = [kind(t, "0000"), kind(t, "0001"), t.status()["inside"]]  # IN, OUT
# A long outage: the clock says 3 days later at boot; everyone is out.
advance(72 * H)
t = boot()
out["outage"] = [t.status()["inside"], kind(t, "0000")]
# An RTC that lost its time (2000-01-01): the window counts back from the newest journal segment, so the
# last punches still decide and the replay is bounded.
Clock.utc = 946684800000
t = boot()
st = t.status()
out["lost_clock"] = [st["inside"], iso_ms(st["inside_since_ms"])[:4], kind(t, "0000")]
out["status"] = t.status()


def broken(after):
    raise OSError(5)


# A journal that cannot be read while the state is rebuilt: taps go on (everyone outside), said once.
t.journal.pending = broken
write_roster(["0000", "04A1B2C3"])
t.roster.open()
out["broken"] = [kind(t, "0000"), kind(t, "0000"), t.status()["inside"], len(log.errors)]
# Journal.recent on a journal of many segments: from a good clock and from one that lost its time.
j = Journal(NorFlash(512, 16, path=D + "/small.bin"))
for i in range(300):
    j.append(Punch(T0 + i * 60000, "%08X" % i, "in"))
now = T0 + 299 * 60000
out["recent"] = [j.last_seq, j.recent(H, now), j.recent(H, 946684800000)]
# A badge handed to someone else (the same badge, another employee id in the new roster): its new holder
# starts outside, as only punches made under their own id count; the others keep their state.
Clock.utc = T0 + 100 * H
jflash = NorFlash(4096, 32, path=D + "/reassign.bin")
write_roster(["04A1B2C3", "04D5E6F7"])
t = boot()
first = [kind(t, "04A1B2C3"), kind(t, "04D5E6F7")]  # IN, IN
write_roster(["04A1B2C3", "04D5E6F7"], {"04A1B2C3": "E2002"})
t.roster.open()
out["reassigned"] = first + [kind(t, "04A1B2C3"), kind(t, "04D5E6F7")]
print(json.dumps(out))
