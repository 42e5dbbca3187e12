"""Roster on LittleFS: 10,000 badges under the heap budget, atomic replace, corruption keeps the old."""

from __future__ import annotations

import random

from mp import mp_json

SETUP = """
import vfs, json, gc, os
from clockterm.boards.norflash import NorFlash
from clockterm.roster import Roster, RosterWriter
flash = NorFlash(4096, 160, path=%r)
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
    assert out["small"] == [1, ["E1", "Ada Lovelace-Byron-K", 0], None]
    assert out["index"] == [0]
