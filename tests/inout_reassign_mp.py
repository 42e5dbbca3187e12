# MicroPython side of tests/test_inout.py's badge reassignment: a badge handed to someone else does not
# hand them its last holder's in/out state (toggle mode). D: a folder for the emulated flash files.
import json

import vfs
from clockterm.boards.norflash import NorFlash
from clockterm.journal import Journal
from clockterm.roster import Roster, RosterWriter
from clockterm.terminal import Terminal

D = globals()["D"]


class Clock:
    utc = 1795600000000

    def now(self):
        Clock.utc += 60000
        return Clock.utc, 1, 0


class TZ:
    def offset_s(self, s):
        return 0


class Indicator:
    def feedback(self, code, text):
        pass


def roster(*rows):
    w = RosterWriter("/fs/roster.bin")
    for r in rows:
        w.add(*r)
    w.commit()


def main():
    flash = NorFlash(4096, 64, path=D + "/fs.bin")
    vfs.VfsLfs2.mkfs(flash)
    vfs.mount(vfs.VfsLfs2(flash), "/fs")
    roster(("04A1B2C3", "E1001", "Alice"), ("04D5E6F7", "E3003", "Carol"))
    cfg = {"duplicate_window_s": 0, "unknown_badge": "record", "kind_mode": "toggle", "shift_max_h": 16}
    j = Journal(NorFlash(4096, 32, path=D + "/journal.bin"))
    t = Terminal(Clock(), j, Roster("/fs/roster.bin"), TZ(), Indicator(), cfg)
    t.restore()
    t.tap("04A1B2C3")  # Alice clocks in, leaves without clocking out, hands her card back
    t.tap("04D5E6F7")  # Carol clocks in
    roster(("04A1B2C3", "E2002", "Bob"), ("04D5E6F7", "E3003", "Carol"))  # the card given to Bob
    t.roster.open()
    t.tap("04A1B2C3")  # Bob's first tap of the day
    t.tap("04D5E6F7")  # Carol leaves: her state kept across the new roster
    print(json.dumps([(p.seq, p.employee, p.kind) for p in j.pending(0)]))


main()
