"""Roster on LittleFS: 10,000 badges under the heap budget, atomic replace, corruption keeps the old; the
size limit a 1 MB filesystem holds, and the rules every row follows (as the terminal applies them)."""

from __future__ import annotations

import random

from mp import mp_json, run_mp

SETUP = """
import vfs, json, gc, os
from clockterm.boards.norflash import NorFlash
from clockterm.roster import Roster, RosterWriter
flash = NorFlash(4096, 256, path=%r)  # 1 MB: the smallest boards' filesystem
vfs.VfsLfs2.mkfs(flash)
vfs.mount(vfs.VfsLfs2(flash), "/flash")
P = "/flash/roster.bin"
out = {}
"""


def test_ten_thousand_badges_lookup_and_replace(tmp_path):
    rng = random.Random(5)
    badges = sorted({f"{rng.getrandbits(32):08X}" for _ in range(10_000)})
    rows = "\n".join(f"{b},E{i:05d},Name {i} Ünïcode-lastname-long" for i, b in enumerate(badges))
    (tmp_path / "rows.csv").write_text(rows + "\n")
    probes = [badges[0], badges[-1], badges[4321], "00000000X", "FFFFFFFF1"]
    script = SETUP % str(tmp_path / "fs.bin") + f"""
w = RosterWriter(P)
with open({str(tmp_path / 'rows.csv')!r}) as f:
    for line in f:
        b, e, n = line.rstrip().split(",")
        w.add(b, e, n)
w.commit()
gc.collect()
free0 = gc.mem_free()
r = Roster(P)
out["count"] = r.count
out["found"] = [r.lookup(b) for b in {probes!r}]
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
out["small"] = [r.count, r.lookup("04A1B2C3"), r.lookup({badges[0]!r})]
out["index"] = [Roster(P).lookup("04A1B2C3")[2]]
print(json.dumps(out))
"""
    out = mp_json(script, timeout=300)
    assert out["count"] == len(badges)
    name0 = "Name 0 Ünïcode-lastname-long"
    while len(name0.encode()) > 16:  # names are cut to 16 bytes at a character boundary
        name0 = name0[:-1]
    assert out["found"][0] == ["E00000", name0]
    assert out["found"][1][0] == f"E{len(badges) - 1:05d}"
    assert out["found"][2][0] == "E04321" and out["found"][2][1].startswith("Name 4321 ")
    assert out["found"][3] is None and out["found"][4] is None
    assert out["heap_used"] < 2048, out["heap_used"]
    assert "not after BBBB" in out["unsorted"]
    assert out["after_unsorted"] == len(badges)
    assert out["corrupt"] == "roster: CRC mismatch"
    assert out["small"] == [1, ["E1", "Ada Lovelace-Byr", 0], None]  # 16 bytes of the name
    assert out["index"] == [0]


FULL = """
def fill(tag, n):
    # n badges (sorted hex), each with a name of 64 bytes; ValueError when refused.
    w = RosterWriter(P)
    for i in range(n):
        w.add("%08X" % (i * 7), "E%d" % i, ("%s %d " % (tag, i) + "x" * 64)[:64])
    w.commit()

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
"""


def test_full_size_roster_replaced_and_one_more_badge_refused(tmp_path):
    # 10,000 badges (roster_file.MAX_BADGES) replace 10,000 on a 1 MB filesystem (the new file is written
    # beside the one in force); a roster of 10,001 is refused at its last row with the limit named, before
    # the flash runs out (it used to end in OSError 28 somewhere past 10,000), and the old one stays.
    out = mp_json(SETUP % str(tmp_path / "fs.bin") + FULL, timeout=600)
    assert out["first"] == [10000, ["E9999", "first 9999 xxxxx", 9999]], out
    assert out["second"] == [10000, ["E9999", "second 9999 xxxx", 9999]], out
    assert out["third"] == "row 10001: roster: more than 10000 badges", out
    assert out["after_third"] == [10000, "second 1 xxxxxxx", False], out
    assert out["fourth"] == "fourth 1 xxxxxxx", out


RULES = """
from clockterm import roster_file
from clockterm.roster import normalize_badge
out["badges"] = [normalize_badge(b) for b in BADGES]
rows = []
for r in ROWS:
    try:
        rows.append(list(roster_file.check_row(*r)))
    except ValueError as e:
        rows.append(str(e))
out["rows"] = rows
print(json.dumps(out))
"""

GOOD_BADGES = {
    "04a1b2c3": "04A1B2C3",  # MFRC522 4-byte UID, lower case folded
    "04A1B2C3D4E5F6": "04A1B2C3D4E5F6",  # 7-byte UID
    "04A1B2C3D4E5F60718293": None,  # 21 hex digits: longer than any reader gives
    "04A1B2C3D4E5F6071829": "04A1B2C3D4E5F6071829",  # 10-byte UID: 20 digits
    " 123:04567 ": "123:04567",  # Wiegand 26 / RDM6300 fc, trimmed
    "12345:04567": "12345:04567",  # Wiegand 34
    "12345:045678": "12345:045678",  # Wiegand 37
    "123:4567": None,  # not padded as a reader prints it: would never match
    "1234:04567": None,
    "12A:04567": None,
    "0001234567": "0001234567",  # RDM6300 dec
    "7B11D7": "7B11D7",  # Wiegand hex
    ":": None, "-": None, "": None, "   ": None, "04-A1": None, "XYZ": None, "ÄB": None, "12:34:56": None,
}


def test_roster_rules_on_the_device(tmp_path):
    rows = [("04a1", " E-1 ", " Ada "), ("04a1", "E 1", "Ada"), ("04a1", "", "Ada"), ("04a1", "E" * 13, "Ada"),
            ("04a1", "Ü1", "Ada"), ("04a1", "E1", ""), ("04a1", "E1", "a\tb"), ("04a1", "E1", "é" * 33),
            ("04a1", "E1", "é" * 32), ("zz", "E1", "Ada")]
    script = (SETUP % str(tmp_path / "fs.bin") + f"BADGES = {list(GOOD_BADGES)!r}\nROWS = {rows!r}\n" + RULES)
    out = mp_json(script)
    assert dict(zip(GOOD_BADGES, out["badges"], strict=True)) == GOOD_BADGES
    got = out["rows"]
    assert got[0] == ["04A1", "E-1", "Ada"]
    assert got[1].startswith('employee_id "E 1": only letters')
    assert got[2].startswith('employee_id "": 1 to 12') and got[3].startswith('employee_id "EEEEEEEEEEEEE": 1 to 12')
    assert got[4].startswith('employee_id "Ü1": only letters')
    assert got[5].startswith('name "": 1 to 64 bytes') and got[6] == 'name "a\\tb": a control character'
    assert got[7] == f'name "{"é" * 33}": 1 to 64 bytes of UTF-8'
    assert got[8] == ["04A1", "E1", "é" * 32]
    assert got[9].startswith('badge "zz": not a badge id')


def test_a_badge_check_interns_no_character():
    """normalize_badge runs at every tap: it must not intern the badge's characters (a str's characters
    are one-character strings, interned for good; with a fragmented heap, growing the pool for the first
    badge with a D or an F failed that tap with a MemoryError)."""
    r = run_mp("""
import micropython
from clockterm.roster import normalize_badge
badges = [bytes(b).decode() for b in ([0x30, 0x44, 0x7E], [0x30, 0x46, 0x3A], [0x5A, 0x51],
                                      [0x31, 0x32, 0x33, 0x3A, 0x30, 0x34, 0x35, 0x36, 0x37])]
normalize_badge("00")
micropython.qstr_info()
print([normalize_badge(b) for b in badges])
micropython.qstr_info()
""")
    lines = r.stdout.splitlines()
    pools = [ln for ln in lines if ln.startswith("qstr pool")]
    assert len(pools) == 2 and pools[0] == pools[1], r.stdout
    assert "[None, None, None, '123:04567']" in r.stdout, r.stdout


def test_a_roster_csv_line_interns_no_character(tmp_path):
    """RosterWriter.feed parses a CSV line an admin PUTs to the endpoint: the character after a closing
    quote, whatever it is, must not be interned (each PUT of a bad line would add one for good, and
    the 621st interned name allocates a whole new pool)."""
    r = run_mp(SETUP % str(tmp_path / "fs.bin") + """
import micropython
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
""")
    pools = [ln for ln in r.stdout.splitlines() if ln.startswith("qstr pool")]
    assert len(pools) == 2 and pools[0] == pools[1], r.stdout
    assert r.stdout.count("line 2: text after a closing quote") == 4, r.stdout
