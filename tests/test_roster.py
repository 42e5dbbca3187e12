"""Roster on LittleFS: 10,000 badges under the heap budget, atomic replace, corruption keeps the old; the
size limit a 1 MB filesystem holds, and the rules every row follows (as the terminal applies them)."""

from __future__ import annotations

import random
from pathlib import Path

from mp import mp_json, run_mp, script


def roster_mp(case: str, fs: Path, **settings: object) -> str:
    """tests/roster_mp.py's `case`, its flash image in the file `fs`, with `settings`."""
    return script("roster_mp.py", {"CASE": case, "FS": str(fs), **settings}, "main()")


def test_ten_thousand_badges_lookup_and_replace(tmp_path):
    rng = random.Random(5)
    badges = sorted({f"{rng.getrandbits(32):08X}" for _ in range(10_000)})
    rows = "\n".join(f"{b},E{i:05d},Name {i} Ünïcode-lastname-long" for i, b in enumerate(badges))
    (tmp_path / "rows.csv").write_text(rows + "\n")
    probes = [badges[0], badges[-1], badges[4321], "00000000X", "FFFFFFFF1"]
    text = roster_mp("big", tmp_path / "fs.bin", ROWS_FILE=str(tmp_path / "rows.csv"), PROBES=probes,
                     FIRST=badges[0])
    out = mp_json(text, timeout=300)
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


def test_full_size_roster_replaced_and_one_more_badge_refused(tmp_path):
    # 10,000 badges (roster_file.MAX_BADGES) replace 10,000 on a 1 MB filesystem (the new file is written
    # beside the one in force); a roster of 10,001 is refused at its last row with the limit named, before
    # the flash runs out (it used to end in OSError 28 somewhere past 10,000), and the old one stays.
    out = mp_json(roster_mp("full", tmp_path / "fs.bin"), timeout=600)
    assert out["first"] == [10000, ["E9999", "first 9999 xxxxx", 9999]], out
    assert out["second"] == [10000, ["E9999", "second 9999 xxxx", 9999]], out
    assert out["third"] == "row 10001: roster: more than 10000 badges", out
    assert out["after_third"] == [10000, "second 1 xxxxxxx", False], out
    assert out["fourth"] == "fourth 1 xxxxxxx", out


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
    out = mp_json(roster_mp("rules", tmp_path / "fs.bin", BADGES=list(GOOD_BADGES), ROWS=rows))
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
    r = run_mp(script("roster_mp.py", {"CASE": "badge_interns"}, "main()"))
    lines = r.stdout.splitlines()
    pools = [ln for ln in lines if ln.startswith("qstr pool")]
    assert len(pools) == 2 and pools[0] == pools[1], r.stdout
    assert "[None, None, None, '123:04567']" in r.stdout, r.stdout


def test_a_roster_csv_line_interns_no_character(tmp_path):
    """RosterWriter.feed parses a CSV line an admin PUTs to the endpoint: the character after a closing
    quote, whatever it is, must not be interned (each PUT of a bad line would add one for good, and
    the 621st interned name allocates a whole new pool)."""
    r = run_mp(roster_mp("csv_interns", tmp_path / "fs.bin"))
    pools = [ln for ln in r.stdout.splitlines() if ln.startswith("qstr pool")]
    assert len(pools) == 2 and pools[0] == pools[1], r.stdout
    assert r.stdout.count("line 2: text after a closing quote") == 4, r.stdout
