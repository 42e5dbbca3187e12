# MicroPython side of the journal behaviour tests (tests/test_journal.py): records, full policies,
# warnings, corrections and corruption on both backends (the raw ring on an emulated NOR flash, or
# segment files on LittleFS over it). Each case prints what it saw as JSON.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): BACKEND ("raw" or "littlefs") and CASE, the
# case to run (a key of CASES at the end); then it appends a call of main(). The power-cut sweep is
# tests/journal_mp.py. Not collected by pytest (no test_ prefix).

import json
import os

from clockterm.boards.norflash import NorFlash, mount_lfs
from clockterm.journal import Journal, JournalFull
from clockterm.punch import Punch
from clockterm.ring_lfs import LfsRing

BACKEND = globals().get("BACKEND", "raw")
CASE = globals().get("CASE", "append_read_ack")

T0 = 1764000000000


def mk(i):
    return Punch(T0 + i * 61000, "04A1B2%02X" % (i & 255), ("in", "out")[i & 1], 1, 4 + i % 3,
                 None if i % 2 else "E%d" % i, 60)


def new_flash(sec=512, n=8):
    return NorFlash(block_size=sec, block_count=n)


def backend_flash():
    # LittleFS needs room for its own metadata next to the ring of 6 segments.
    return new_flash(512, 24) if BACKEND == "littlefs" else new_flash(512, 8)


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


def append_unsynced(j, i):
    p = mk(i)
    p.quality = 0
    j.append(p)


def append_read_ack():
    fl = backend_flash()
    j = journal(fl)
    st0 = j.status()
    for i in range(50):
        p = mk(i)
        s = j.append(p)
        assert s == i + 1 and p.seq == s and p.journal_id == j.journal_id
    j.ack(20)
    fl2, j2 = reopen(fl)
    ok = all(key(p) == key(exp(p.seq)) for p in j2.pending(0))
    print(json.dumps({"jid0": st0["journal_id"], "jid": j2.journal_id, "last": j2.last_seq, "acked": j2.acked_seq,
                      "pending": [p.seq for p in j2.pending()][:3], "n": len(seqs(j2, 0)),
                      "limit": [p.seq for p in j2.pending(None, 5)], "ok": ok, "st": j2.status(),
                      "d": next(j2.pending(0)).__dict__}))


def full_refuse():
    fl = backend_flash()
    j = journal(fl)
    warn = {}
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
    print(json.dumps({"n": n, "err": err, "warn": warn, "st": st, "again": again, "s": s,
                      "first": ok[0], "count": len(ok)}))


def overwrite():
    fl = backend_flash()
    j = journal(fl, "overwrite")
    for i in range(600):
        j.append(mk(i))
    st = j.status()
    got = seqs(j, 0)
    print(json.dumps({"st": st, "first": got[0], "last": got[-1], "n": len(got),
                      "contig": got == list(range(got[0], got[-1] + 1))}))


def correction():
    fl = backend_flash()
    j = journal(fl)
    for i in range(10):
        append_unsynced(j, i)
    j.correct(3, 6, 1500)
    j.append(mk(10))
    fl2, j2 = reopen(fl)
    res = [(p.seq, p.utc_ms - mk(p.seq - 1).utc_ms, p.quality) for p in j2.pending(0)]
    try:
        j2.correct(5, 99, 1)
        bad = "accepted"
    except ValueError as e:
        bad = str(e)
    print(json.dumps({"res": res, "bad": bad}))


def correction_offset():
    # A punch stamped before the first sync at the RTC's wrong time (2000-01-01: winter, +60 in Berlin),
    # corrected to a summer time: with the terminal's zone its offset is the corrected time's (+120),
    # after a reopen too; without one (a journal read on its own) the stamped offset stays
    from clockterm import tz

    zone = tz.TZ("CET-1CEST,M3.5.0,M10.5.0/3")
    fl = backend_flash()
    j = journal(fl)
    j.tz = zone
    raw = 946684800000 + 3600000  # 2000-01-01 01:00 UTC
    j.append(Punch(raw, "04A1B2C3", "in", 0, 0x3FFFFFFF, "E1", zone.offset_s(raw // 1000) // 60))
    j.append(Punch(raw + 1000, "04A1B2C4", "in", 0, 0x3FFFFFFF, "E2", zone.offset_s(raw // 1000) // 60))
    delta = 1783000000000 - raw  # to 2026-07-02, summer time
    j.correct(1, 1, delta)
    got = [(p.seq, p.utc_offset_min, p.quality) for p in j.pending(0)]
    fl2, j2 = reopen(fl)
    plain = [(p.seq, p.utc_offset_min, p.quality) for p in j2.pending(0)]
    j2.tz = zone
    again = [(p.seq, p.utc_offset_min, p.quality) for p in j2.pending(0)]
    print(json.dumps({"got": got, "plain": plain, "again": again}))


def many_corrections():
    # One correction a boot, many boots offline: every punch still to send keeps its correction, in RAM
    # and after a reopen; the corrections of acked punches make room first
    fl = new_flash(512, 16)
    j = journal(fl, slots=16)
    n = int(globals().get("N", 20))
    for i in range(n):
        append_unsynced(j, i)
        j.correct(j.last_seq, j.last_seq, 1000 * (i + 1))
    j.ack(n - 12)  # 12 still to send, 16 kept at most: 4 of the acked ones' go
    got = [(p.seq, p.utc_ms - mk(p.seq - 1).utc_ms, p.quality) for p in j.pending()]
    fl2, j2 = reopen(fl, slots=16)
    again = [(p.seq, p.utc_ms - mk(p.seq - 1).utc_ms, p.quality) for p in j2.pending()]
    print(json.dumps({"got": got, "again": again}))


def correction_headers():
    fl = new_flash(512, 24)
    j = journal(fl)
    i = 0

    def fill_segment():
        # Append until the journal opens its next segment (whose header carries the latest correction).
        nonlocal i
        head = j.head
        while j.head == head:
            append_unsynced(j, i)
            i += 1

    for _ in range(5):
        append_unsynced(j, i)
        i += 1
    j.correct(1, 5, 1000)
    fill_segment()
    j.ack(j.last_seq - 1)  # the first segment acked: recovery scans records from the second on
    j.correct(j.last_seq, j.last_seq, 2000)
    fill_segment()
    fill_segment()
    j.correct(j.last_seq, j.last_seq, 3000)
    for _ in range(20):  # 20 headers carry this correction: more than the 16 corrections kept
        fill_segment()
    fl2, j2 = reopen(fl)
    got = [(p.seq, p.utc_ms - mk(p.seq - 1).utc_ms, p.quality) for p in j2.pending(0, 6)]
    print(json.dumps({"got": got, "head": j2.head}))


def reformat():
    fl = backend_flash()
    fp = "/flash/floor" if BACKEND == "littlefs" else None
    j = journal(fl, floor_path=fp)
    for i in range(40):
        j.append(mk(i))
    jid = j.journal_id
    j.format()
    s = j.append(mk(40))
    res = {"jid_changed": j.journal_id != jid, "s": s, "n": len(seqs(j, 0))}
    if BACKEND == "raw":
        # Partition wiped behind the journal's back: the seq floor given by the app keeps seqs going up.
        fl3 = new_flash(512, 8)
        j3 = journal(fl3, seq_floor=s)
        res["floor"] = j3.append(mk(41))
    print(json.dumps(res))


def bit_flips():
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

    a = rec_off(0, 4)
    fl._img[a + 5] ^= 0x10
    b = rec_off(1, 2)
    fl._img[b + 3] ^= 0x01
    fl2, j2 = reopen(fl)
    got = seqs(j2, 0)
    st = j2.status()
    seqs(j2, 0)
    j2.append(mk(60))
    print(json.dumps({"got": got, "bad": st["corrupt_skipped"], "bad2": j2.status()["corrupt_skipped"],
                      "last": j2.last_seq}))


def length_byte():
    fl = new_flash(512, 8)
    j = journal(fl)
    for i in range(30):
        j.append(mk(i))
    fl._img[48] = 0x03  # the first record's length byte: points into its own body
    fl2, j2 = reopen(fl)
    got = seqs(j2, 0)
    print(json.dumps({"got": got, "bad": j2.status()["corrupt_skipped"]}))


def truncated():
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


def fs_full():
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
    for _ in range(200):
        try:
            j.append(mk(n))
            n += 1
        except JournalFull as e:
            errs.append(str(e))
            break
    got = seqs(j, 0)
    os.remove("/flash/junk")
    s = j.append(mk(n))
    fl2, j2 = reopen(fl)
    print(json.dumps({"errs": errs, "n": n, "got": got, "s": s, "after": seqs(j2, 0)}))


def bad_punch():
    fl = new_flash(512, 8)
    j = journal(fl)
    res = []
    for p in (Punch(T0, "X" * 21), Punch(T0, "04A1", quality=7), Punch(T0, "04A1", employee="e" * 40)):
        try:
            j.append(p)
            res.append("stored")
        except ValueError as e:
            res.append(str(e)[:9])
    res.append(j.append(mk(0)))
    print(json.dumps(res))


CASES = {"append_read_ack": append_read_ack, "full_refuse": full_refuse, "overwrite": overwrite,
         "correction": correction, "correction_headers": correction_headers,
         "correction_offset": correction_offset, "many_corrections": many_corrections, "reformat": reformat,
         "bit_flips": bit_flips, "length_byte": length_byte, "truncated": truncated, "fs_full": fs_full,
         "bad_punch": bad_punch}


def main():
    CASES[CASE]()
