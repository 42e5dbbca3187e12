"""Journal behaviour on both backends: records, full policies, warnings, corrections, corruption."""

from __future__ import annotations

import mp
import pytest

PRELUDE = r"""
import json, os
from clockterm.boards.norflash import NorFlash, mount_lfs
from clockterm.journal import Journal, JournalFull, open_journal
from clockterm.punch import Punch
from clockterm.ring_lfs import LfsRing
T0 = 1764000000000
BACKEND = %r

def mk(i):
    return Punch(T0 + i * 61000, "04A1B2%%02X" %% (i & 255), ("in", "out")[i & 1], 1, 4 + i %% 3,
                 None if i %% 2 else "E%%d" %% i, 60)

def new_flash(sec=512, n=8):
    return NorFlash(block_size=sec, block_count=n)

def journal(fl, policy="refuse", slots=6, **kw):
    if BACKEND == "raw":
        return Journal(fl, policy, **kw)  # the raw partition is the store
    mount_lfs(fl, "/flash")
    return Journal(LfsRing("/flash/j", slots * fl.block_size, fl.block_size), policy, **kw)

def reopen(fl, **kw):
    j2fl = NorFlash(block_size=fl.block_size, block_count=fl.block_count, image=fl._img)
    return j2fl, journal(j2fl, **kw)

def key(p):
    return (p.seq, p.utc_ms, p.quality, p.uncertainty_ms, p.badge, p.kind, p.employee, p.utc_offset_min)

def exp(s):
    q = mk(s - 1)
    q.seq = s
    return q

def seqs(j, after=0):
    return [p.seq for p in j.pending(after)]
"""

BACKENDS = ["raw", "littlefs"]


def run(backend: str, body: str) -> object:
    return mp.mp_json(PRELUDE % backend + body)


def lfs_flash(backend: str) -> str:
    # LittleFS needs room for its own metadata next to the ring of 6 segments.
    return "new_flash(512, 24)" if backend == "littlefs" else "new_flash(512, 8)"


@pytest.mark.parametrize("backend", BACKENDS)
def test_append_read_ack_reopen(backend: str) -> None:
    out = run(backend, f"""
fl = {lfs_flash(backend)}
j = journal(fl)
st0 = j.status()
got = []
for i in range(50):
    p = mk(i)
    s = j.append(p)
    assert s == i + 1 and p.seq == s and p.journal_id == j.journal_id
j.ack(20)
fl2, j2 = reopen(fl)
ok = all(key(p) == key(exp(p.seq)) for p in j2.pending(0))
print(json.dumps({{"jid0": st0["journal_id"], "jid": j2.journal_id, "last": j2.last_seq, "acked": j2.acked_seq,
    "pending": [p.seq for p in j2.pending()][:3], "n": len(seqs(j2, 0)), "limit": [p.seq for p in j2.pending(None, 5)],
    "ok": ok, "st": j2.status(), "d": next(j2.pending(0)).__dict__}}))
""")
    assert out["jid0"] == out["jid"] and len(out["jid"]) == 8
    assert out["last"] == 50 and out["acked"] == 20
    assert out["pending"] == [21, 22, 23] and out["n"] == 50 and out["limit"] == [21, 22, 23, 24, 25]
    assert out["ok"]
    st = out["st"]
    assert st["backend"] == backend and st["pending"] == 30 and st["used"] == 50 and st["oldest_seq"] == 1
    assert st["oldest_ms"] == 1764000000000 and st["corrupt_skipped"] == 0 and st["full_policy"] == "refuse"
    assert st["capacity"] > 100
    assert out["d"] == {"seq": 1, "journal_id": out["jid"], "utc_ms": 1764000000000, "quality": 1, "uncertainty_ms": 4,
                        "badge": "04A1B200", "kind": "in", "employee": "E0", "utc_offset_min": 60}


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_refuse_warnings_then_ack_frees(backend: str) -> None:
    out = run(backend, f"""
fl = {lfs_flash(backend)}
j = journal(fl)
warn = {{}}
n = 0
err = None
while True:
    try:
        j.append(mk(n))
    except JournalFull as e:
        err = str(e)
        break
    n += 1
    for w in j.status()["warnings"]:
        warn.setdefault(w, n)
st = j.status()
fl2, j2 = reopen(fl)
try:
    j2.append(mk(n))
    again = "stored"
except JournalFull as e:
    again = str(e)
j2.ack(n // 2)
s = j2.append(mk(n))
ok = seqs(j2, 0)
print(json.dumps({{"n": n, "err": err, "warn": warn, "st": st, "again": again, "s": s,
    "first": ok[0], "count": len(ok)}}))
""")
    n = out["n"]
    assert out["err"] == "memory full" and out["again"] == "memory full"
    assert "memory 80%" in out["warn"] and "memory 90%" in out["warn"]
    assert out["warn"]["memory 80%"] < out["warn"]["memory 90%"] < n
    assert out["st"]["warnings"] == ["memory full"] and out["st"]["pending"] == n
    assert out["s"] == n + 1
    # Nothing unacknowledged was dropped to make room.
    assert out["first"] <= n // 2 + 1 and out["count"] >= n + 1 - n // 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_overwrite_policy_drops_oldest_with_counter(backend: str) -> None:
    out = run(backend, f"""
fl = {lfs_flash(backend)}
j = journal(fl, "overwrite")
for i in range(600):
    j.append(mk(i))
st = j.status()
got = seqs(j, 0)
print(json.dumps({{"st": st, "first": got[0], "last": got[-1], "n": len(got),
    "contig": got == list(range(got[0], got[-1] + 1))}}))
""")
    st = out["st"]
    assert out["last"] == 600 and out["contig"]
    assert st["dropped"] == out["first"] - 1 > 0
    assert st["oldest_seq"] == out["first"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_correction_applies_and_survives_restart(backend: str) -> None:
    out = run(backend, f"""
fl = {lfs_flash(backend)}
j = journal(fl)
for i in range(10):
    p = mk(i); p.quality = 0; j.append(p)
j.correct(3, 6, 1500)
j.append(mk(10))
fl2, j2 = reopen(fl)
res = [(p.seq, p.utc_ms - mk(p.seq - 1).utc_ms, p.quality) for p in j2.pending(0)]
try:
    j2.correct(5, 99, 1)
    bad = "accepted"
except ValueError as e:
    bad = str(e)
print(json.dumps({{"res": res, "bad": bad}}))
""")
    res = {s: (d, q) for s, d, q in out["res"]}
    assert all(res[s] == (1500, 3) for s in range(3, 7))
    assert all(res[s] == (0, 0) for s in (1, 2, 7, 8, 9, 10)) and res[11] == (0, 1)
    assert out["bad"] == "bad correction range"


def test_a_correction_in_many_headers_is_kept_once() -> None:
    # Every new segment header carries the latest correction, so recovery meets one correction in
    # several headers (and its record): each must count once among the _MAX_CORR (8) kept, or the
    # older corrections fall out and their punches come back uncorrected.
    out = run("raw", """
fl = new_flash(512, 8)
j = journal(fl)
i = 0
def fill_segment():
    # Append until the journal opens its next segment (whose header carries the latest correction).
    global i
    head = j.head
    while j.head == head:
        p = mk(i); p.quality = 0; j.append(p); i += 1
for _ in range(5):
    p = mk(i); p.quality = 0; j.append(p); i += 1
j.correct(1, 5, 1000)
fill_segment()
j.ack(j.last_seq - 1)  # the first segment acked: recovery scans records from the second on
j.correct(j.last_seq, j.last_seq, 2000)
fill_segment(); fill_segment()
j.correct(j.last_seq, j.last_seq, 3000)
for _ in range(4):
    fill_segment()
fl2, j2 = reopen(fl)
got = [(p.seq, p.utc_ms - mk(p.seq - 1).utc_ms, p.quality) for p in j2.pending(0, 6)]
print(json.dumps({"got": got, "head": j2.head}))
""")
    assert out["head"] == 7  # the ring's last segment: seven headers carry a correction
    assert out["got"] == [[s, 1000, 3] for s in range(1, 6)] + [[6, 0, 0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reformat_new_id_seq_continues(backend: str) -> None:
    out = run(backend, f"""
fl = {lfs_flash(backend)}
fp = "/flash/floor" if BACKEND == "littlefs" else None
j = journal(fl, floor_path=fp)
for i in range(40):
    j.append(mk(i))
jid = j.journal_id
j.format()
s = j.append(mk(40))
res = {{"jid_changed": j.journal_id != jid, "s": s, "n": len(seqs(j, 0))}}
if BACKEND == "raw":
    # Partition wiped behind the journal's back: the seq floor given by the app keeps seqs going up.
    fl3 = new_flash(512, 8)
    j3 = journal(fl3, seq_floor=s)
    res["floor"] = j3.append(mk(41))
print(json.dumps(res))
""")
    assert out["jid_changed"] and out["s"] == 41 and out["n"] == 1
    if backend == "raw":
        assert out["floor"] == 42


def test_raw_bit_flips_skipped_and_counted() -> None:
    out = run("raw", """
fl = new_flash(512, 8)
j = journal(fl)
for i in range(60):
    j.append(mk(i))
# Flip bits inside the 5th record of sector 0 and the 3rd of sector 1 (bit rot).
def rec_off(sector, k):
    p = 48
    for _ in range(k):
        p += fl._img[sector * 512 + p]
    return sector * 512 + p
a = rec_off(0, 4); fl._img[a + 5] ^= 0x10
b = rec_off(1, 2); fl._img[b + 3] ^= 0x01
fl2, j2 = reopen(fl)
got = seqs(j2, 0)
st = j2.status()
again = seqs(j2, 0)
j2.append(mk(60))
print(json.dumps({"got": got, "bad": st["corrupt_skipped"], "bad2": j2.status()["corrupt_skipped"],
    "last": j2.last_seq}))
""")
    got = out["got"]
    assert len(got) == 58 and 5 not in got and out["bad"] == 2 == out["bad2"]
    missing = set(range(1, 61)) - set(got)
    assert got == sorted(got) and len(missing) == 2 and 5 in missing
    assert out["last"] == 61


def test_raw_corrupt_length_byte_resyncs() -> None:
    out = run("raw", """
fl = new_flash(512, 8)
j = journal(fl)
for i in range(30):
    j.append(mk(i))
fl._img[48] = 0x03  # the first record's length byte: points into its own body
fl2, j2 = reopen(fl)
got = seqs(j2, 0)
print(json.dumps({"got": got, "bad": j2.status()["corrupt_skipped"]}))
""")
    assert out["got"] == list(range(2, 31)) and out["bad"] == 1


def test_littlefs_truncated_segment() -> None:
    out = run("littlefs", """
fl = new_flash(512, 24)
j = journal(fl)
for i in range(40):
    j.append(mk(i))
j.close()
size = os.stat("/flash/j/0")[6]
with open("/flash/j/0", "rb") as f:
    data = f.read()
with open("/flash/j/0", "wb") as f:
    f.write(data[:size - 7])  # cut the last record of the first segment in half
fl2, j2 = reopen(fl)
got = seqs(j2, 0)
print(json.dumps({"got": got, "bad": j2.status()["corrupt_skipped"], "s": j2.append(mk(40))}))
""")
    got = out["got"]
    assert len(got) == 39 and out["bad"] == 1 and out["s"] == 41
    missing = sorted(set(range(1, 41)) - set(got))
    assert len(missing) == 1 and got == sorted(got)


def test_littlefs_filesystem_full_is_a_clear_error() -> None:
    out = run("littlefs", """
fl = new_flash(512, 24)
j = journal(fl, slots=20)
for i in range(20):
    j.append(mk(i))
# Something else fills the filesystem.
junk = open("/flash/junk", "wb")
try:
    while True:
        junk.write(b"x" * 256)
        junk.flush()
except OSError:
    pass
junk.close()
errs = []
n = 20
for k in range(200):
    try:
        j.append(mk(n)); n += 1
    except JournalFull as e:
        errs.append(str(e)); break
got = seqs(j, 0)
os.remove("/flash/junk")
s = j.append(mk(n))
fl2, j2 = reopen(fl)
print(json.dumps({"errs": errs, "n": n, "got": got, "s": s, "after": seqs(j2, 0)}))
""")
    assert out["errs"] == ["memory full: no space left on the filesystem"]
    n = out["n"]
    assert out["got"] == list(range(1, n + 1))
    assert out["s"] == n + 1 and out["after"] == list(range(1, n + 2))


def test_bad_punch_is_rejected_cleanly() -> None:
    out = run("raw", """
fl = new_flash(512, 8)
j = journal(fl)
res = []
for p in (Punch(T0, "X" * 21), Punch(T0, "04A1", quality=7), Punch(T0, "04A1", employee="e" * 40)):
    try:
        j.append(p); res.append("stored")
    except ValueError as e:
        res.append(str(e)[:9])
res.append(j.append(mk(0)))
print(json.dumps(res))
""")
    assert out == ["bad punch"] * 3 + [1]
