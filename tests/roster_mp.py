# MicroPython side of the roster tests (tests/test_roster.py): clockterm.roster and roster_file on
# LittleFS over an emulated 1 MB NOR flash (the smallest boards' filesystem), under the heap budget. Each
# case prints what it saw as JSON (the interning cases: micropython.qstr_info() before and after).
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): CASE, the case to run (a key of CASES at
# the end), FS (a file for the flash image), and the case's own: ROWS_FILE, PROBES and FIRST (big: a CSV
# of rows, badges to look up, the first badge), BADGES and ROWS (rules); then it appends a call of
# main(). Not collected by pytest (no test_ prefix).

import gc
import json
import os

import micropython
import vfs

from clockterm.boards.norflash import NorFlash
from clockterm.roster import Roster, RosterWriter, normalize_badge

CASE = globals().get("CASE", "rules")
FS = globals().get("FS", "/tmp/ct-roster-fs.bin")
ROWS_FILE = globals().get("ROWS_FILE", "")  # big: badge,employee_id,name lines, sorted by badge
PROBES = globals().get("PROBES", [])  # big: badges to look up
FIRST = globals().get("FIRST", "")  # big: the roster's first badge
BADGES = globals().get("BADGES", [])  # rules: badge texts to normalize
ROWS = globals().get("ROWS", [])  # rules: (badge, employee_id, name) to check

P = "/flash/roster.bin"


def mount():
    flash = NorFlash(4096, 256, path=FS)  # 1 MB: the smallest boards' filesystem
    vfs.VfsLfs2.mkfs(flash)
    vfs.mount(vfs.VfsLfs2(flash), "/flash")


def big():
    # 10,000 badges: lookups, the heap a roster takes, refused rosters (unsorted, corrupt), a replace
    mount()
    out = {}
    w = RosterWriter(P)
    with open(ROWS_FILE) as f:
        for line in f:
            b, e, n = line.rstrip().split(",")
            w.add(b, e, n)
    w.commit()
    gc.collect()
    free0 = gc.mem_free()
    r = Roster(P)
    out["count"] = r.count
    out["found"] = [r.lookup(b) for b in PROBES]
    out["found"] = [f[:2] if f else f for f in out["found"]]
    gc.collect()
    out["heap_used"] = free0 - gc.mem_free()
    # an unsorted new roster is refused and the old one stays
    w = RosterWriter(P)
    w.add("BBBB", "1", "b")
    try:
        w.add("AAAA", "2", "a")
        out["unsorted"] = "accepted"
    except ValueError as e:
        out["unsorted"] = str(e)
    r.open()
    out["after_unsorted"] = r.count
    # a corrupt new file never replaces the old: flip a byte in a copy and check it
    w = RosterWriter(P + "2")
    w.add("AAAA", "1", "Ada L.")
    w.commit()
    with open(P + "2", "r+b") as f:
        f.seek(20)
        f.write(b"Z")
    try:
        from clockterm import roster
        roster.check(P + "2")
        out["corrupt"] = "accepted"
    except ValueError as e:
        out["corrupt"] = str(e)
    # replace with a small roster: atomic swap
    w = RosterWriter(P)
    w.add("04A1B2C3", "E1", "Ada Lovelace-Byron-King")
    w.commit()
    r.open()
    out["small"] = [r.count, r.lookup("04A1B2C3"), r.lookup(FIRST)]
    out["index"] = [Roster(P).lookup("04A1B2C3")[2]]
    print(json.dumps(out))


def fill(tag, n):
    # n badges (sorted hex), each with a name of 64 bytes; ValueError when refused.
    w = RosterWriter(P)
    for i in range(n):
        w.add("%08X" % (i * 7), "E%d" % i, ("%s %d " % (tag, i) + "x" * 64)[:64])
    w.commit()


def full():
    # rosters of the largest size replacing each other on the 1 MB filesystem, and one badge more
    mount()
    out = {}
    fill("first", 10000)
    r = Roster(P)
    out["first"] = [r.count, r.lookup("%08X" % (9999 * 7))]
    fill("second", 10000)  # the new one beside the old: two full rosters on the 1 MB filesystem
    r.open()
    out["second"] = [r.count, r.lookup("%08X" % (9999 * 7))]
    try:
        fill("third", 10001)
        out["third"] = "accepted"
    except ValueError as e:
        out["third"] = str(e)
    r.open()
    out["after_third"] = [r.count, r.lookup("00000007")[1], "roster.bin.new" in os.listdir("/flash")]
    fill("fourth", 10000)  # the refused one left its room free
    r.open()
    out["fourth"] = r.lookup("00000007")[1]
    print(json.dumps(out))


def rules():
    # what normalize_badge makes of BADGES, what roster_file.check_row makes of ROWS (or its error)
    mount()
    from clockterm import roster_file
    out = {"badges": [normalize_badge(b) for b in BADGES]}
    rows = []
    for r in ROWS:
        try:
            rows.append(list(roster_file.check_row(*r)))
        except ValueError as e:
            rows.append(str(e))
    out["rows"] = rows
    print(json.dumps(out))


def badge_interns():
    # normalize_badge on badges with characters never seen before: the qstr pools before and after
    badges = [bytes(b).decode() for b in ([0x30, 0x44, 0x7E], [0x30, 0x46, 0x3A], [0x5A, 0x51],
                                          [0x31, 0x32, 0x33, 0x3A, 0x30, 0x34, 0x35, 0x36, 0x37])]
    normalize_badge("00")
    micropython.qstr_info()
    print([normalize_badge(b) for b in badges])
    micropython.qstr_info()


def csv_interns():
    # RosterWriter.feed on lines with a character after a closing quote: the qstr pools before and after
    mount()
    w = RosterWriter(P)
    w.feed(b'"04A1",E1,"Ada"', 1)
    lines = [b'"0B",E2,"Bo"' + c for c in (b"\xe4\xb8\xad", b"\xe6\x96\x87", b"\xe5\xad\x97", b"~")]
    micropython.qstr_info()
    for line in lines:
        try:
            w.feed(line, 2)
        except ValueError as e:
            print(e)
    micropython.qstr_info()


CASES = {"big": big, "full": full, "rules": rules, "badge_interns": badge_interns, "csv_interns": csv_interns}


def main():
    CASES[CASE]()
