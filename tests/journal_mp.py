# MicroPython side of the journal tests: workload, model check and power-cut sweep (one process).
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The pytest file prepends the settings BACKEND ("raw" or "littlefs") and POLICY as assignments and
# appends a call of main(). Not collected by pytest (no test_ prefix).

import gc
import json

from clockterm.boards.cutflash import CutFlash, PowerCut
from clockterm.boards.norflash import mount_lfs
from clockterm.journal import Journal
from clockterm.punch import Punch
from clockterm.ring_lfs import LfsRing

BACKEND = globals().get("BACKEND", "raw")
POLICY = globals().get("POLICY", "refuse")

T0 = 1764000000000
KINDS = ("in", "out", "unknown", "break")
BADGES = ("04A1B2%02X", "04A1B2C3D4E5%02X", "%d:45678", "guest-%d")

if BACKEND == "raw":
    SEC, NSEC = 256, 10  # the ring: 10 sectors of 256 bytes
else:
    SEC, NSEC = 512, 24  # the filesystem: 24 blocks of 512 bytes; the ring: 6 files of 512 bytes
    LFS_SLOTS = 6
IMG = SEC * NSEC


def mkpunch(i):
    b = BADGES[i % 4]
    emp = None if i % 3 == 0 else ("E-%d" % i if i % 3 == 1 else str(1000 + i))
    return Punch(T0 + i * 37000 + (i * i) % 1000, b % (i & 255), KINDS[i % 4], i % 3, (i * 7) % 500,
                 emp, 60 if i < 150 else 120)


def key(p):
    return (p.seq, p.utc_ms, p.quality, p.uncertainty_ms, p.badge, p.kind, p.employee, p.utc_offset_min)


def open_j(img):
    """Power-up: a fresh chip object over the image, the store, the journal (recovery)."""
    fl = CutFlash(block_size=SEC, block_count=NSEC, image=img)
    if BACKEND == "raw":
        return fl, Journal(fl, POLICY)  # the raw partition is the store
    mount_lfs(fl, "/flash")
    return fl, Journal(LfsRing("/flash/j", LFS_SLOTS * SEC, SEC), POLICY)


class Model:
    """What the caller knows: appends that returned (seq i+1 for punch i), acks, corrections."""

    def __init__(self):
        self.nret = 0
        self.acked = 0  # highest ack that returned
        self.ack_req = 0  # highest ack asked for (also one in flight)
        self.corr = []  # corrections that returned
        self.flight = None  # ("a", punch) / ("k", seq) / ("c", (f, t, d)) while a step runs

    def clone(self):
        c = Model()
        c.nret, c.acked, c.ack_req, c.corr = self.nret, self.acked, self.ack_req, list(self.corr)
        return c

    def expected(self, seq, alt=False):
        p = mkpunch(seq - 1)
        p.seq = seq
        corr = self.corr
        if alt and self.flight and self.flight[0] == "c":
            corr = corr + [self.flight[1]]
        for f, t, d in corr:
            if f <= seq <= t:
                p.utc_ms += d
                p.quality = 3
                break
        return p


def verify(m, j, extra=()):
    """Check the recovered journal against the model; extra: punches that may be present too."""
    a = j.acked_seq
    assert m.acked <= a <= m.ack_req, ("acked", m.acked, a, m.ack_req)
    assert j.last_seq >= m.nret, ("last", j.last_seq, m.nret)
    first = prev = 0
    for p in j.pending(0):
        s = p.seq
        assert s == prev + 1 or not prev, ("order/gap", prev, s)
        prev = s
        if not first:
            first = s
        if s <= m.nret:
            k = key(p)
            assert k == key(m.expected(s)) or k == key(m.expected(s, True)), ("content", k)
        else:
            k = key(p)[1:]
            assert any(k == key(e)[1:] for e in extra), ("unexpected", key(p))
    assert prev >= m.nret, ("lost tail", prev, m.nret)
    if m.nret > m.acked:
        assert first and first <= m.acked + 1, ("lost unacked", first, m.acked)
    return prev


def step(m, j, st):
    kind, arg = st
    m.flight = st
    if kind == "a":
        s = j.append(mkpunch(arg))
        assert s == arg + 1, ("seq", s, arg)
        m.nret += 1
    elif kind == "k":
        m.ack_req = max(m.ack_req, arg)
        j.ack(arg)
        assert not j.ack_unsaved
        m.acked = max(m.acked, arg)
    else:
        j.correct(*arg)
        m.corr.append(arg)
    m.flight = None


def workload(np_):
    for i in range(np_):
        yield ("a", i)
        if i % 9 == 8:
            yield ("k", i + 1 - 4)
        if i == 40:
            yield ("c", (31, 41, 1500))


def probe(m, j, last):
    p = mkpunch(9999)
    s = j.append(p)
    assert s > last and s > m.nret, ("seq reused", s, last, m.nret)
    got = list(j.pending(s - 1))
    assert len(got) == 1 and key(got[0])[1:] == key(p)[1:], ("probe", got)


def sweep(np_, torn, sample=1, recut=0):
    """Cut the power at every (sample-th) operation of every step; recover and check each time.

    For each step of the workload: restore the image from before the step, power up, arm a cut
    at operation c, run the step; on the cut, power up again, check, probe. The first c at
    which the step completes leaves the image in its state after the step, and the next begins.
    """
    live = bytearray(IMG)
    for i in range(IMG):
        live[i] = 0xFF
    snap = bytearray(IMG)
    fl, j = open_j(live)
    m = Model()
    tried = recuts = n = 0
    for st in workload(np_):
        snap[:] = live
        pre = m.clone()
        c = (-n) % sample
        while True:
            if c:
                live[:] = snap
                fl, j = open_j(live)
            fl.reset_counters()
            fl.cut_after(c, torn)
            mm = pre.clone()
            try:
                step(mm, j, st)
            except PowerCut:
                pass
            else:
                fl.cut_after(-1)
                m = mm
                n += fl.ops
                break
            tried += 1
            safe_close(j)
            f3, j3 = open_j(live)
            ex = [mkpunch(st[1])] if st[0] == "a" else []
            last = verify(mm, j3, ex)
            if recut and tried % recut == 0:
                # Cut again in the first write after recovery, recover, check again.
                f3.cut_after(tried % 3, torn)
                pp = mkpunch(9999)
                try:
                    j3.append(pp)
                except PowerCut:
                    pass
                recuts += 1
                safe_close(j3)
                f3, j3 = open_j(live)
                last = verify(mm, j3, ex + [pp])
            probe(mm, j3, last)
            safe_close(j3)
            c += sample
    gc.collect()
    return {"cuts": tried, "recuts": recuts, "ops": n, "steps": np_, "last_seq": j.last_seq,
            "wraps": j._head_gen / j.segments, "mem_free": gc.mem_free()}


def safe_close(j):
    try:
        j.close()
    except OSError:
        pass  # files of a filesystem whose chip lost power


def main(np_, torn, sample, recut):
    """Print the sweep's figures as one JSON line (sweep() says what the arguments are)."""
    print(json.dumps(sweep(np_, torn, sample, recut)))
