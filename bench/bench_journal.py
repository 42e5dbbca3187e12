"""Journal flash cost and capacity: raw ring vs LittleFS files vs a JSON-lines baseline on LittleFS.

Everything runs in the MicroPython unix port under the 100 KB heap on file-backed emulated NOR
flash (4 KB sectors). Figures per backend: bytes programmed and sectors erased per durable punch
over a workload that wraps the ring (with acks), punches that fit in 2 MiB, recovery time of a full
2 MiB journal. The LittleFS 2 MiB journal is built by writing whole segment files (copied from the
raw ring, same format) because filling it record by record takes minutes on the emulated flash.
"""

from __future__ import annotations

import json
import tempfile

import mp

SCRIPT = r"""
import json, os, time, vfs
from clockterm.boards.cutflash import CutFlash
from clockterm.journal import Journal, JournalFull
from clockterm.clock import iso_ms
from clockterm.punch import Punch
from clockterm.ring_lfs import LfsRing
D = %r
T0 = 1764000000000
SEC = 4096

def mk(i):
    # A busy terminal: a punch every ~47 s, 4-byte UIDs, synced clock.
    return Punch(T0 + i * 47000 + (i * 7919) %% 1000, "%%08X" %% ((i * 2654435761) & 0xFFFFFFFF),
                 ("in", "out")[i & 1], 1, 3 + i %% 20, None, 60)

def ms_since(t):
    return time.ticks_diff(time.ticks_ms(), t)

def lfs(path, blocks):
    fl = CutFlash(SEC, blocks, path=path)
    try:
        vfs.umount("/flash")
    except OSError:
        pass
    vfs.VfsLfs2.mkfs(fl)
    vfs.mount(vfs.VfsLfs2(fl), "/flash")
    return fl

def workload(j, fl, n):
    # Append n punches with an ack every 25; return flash cost per punch.
    fl.reset_counters()
    for i in range(n):
        j.append(mk(i))
        if i %% 25 == 24:
            j.ack(i + 1)
    return fl.bytes_programmed / n, fl.erases / n

out = {}
# raw: 64-sector ring wrapped about 2.5 times
fl = CutFlash(SEC, 64, path=D + "/raw64.bin")
j = Journal(fl)
b, e = workload(j, fl, 36000)
out["raw.bytes_per_punch"] = b
out["raw.erases_per_punch"] = e
out["raw.wraps"] = j._head_gen / j.segments
fl.close()
# raw: fill 2 MiB without acks, then recover (worst case: everything is pending)
fl = CutFlash(SEC, 512, path=D + "/raw.bin")
j = Journal(fl)
n = 0
while True:
    try:
        j.append(mk(n))
    except JournalFull:
        break
    n += 1
out["raw.capacity_2mib"] = n
out["raw.record_bytes"] = j._bytes / j._count
fl.close()
t = time.ticks_ms()
j = Journal(CutFlash(SEC, 512, path=D + "/raw.bin"))
out["raw.recovery_ms"] = ms_since(t)
assert j.last_seq == n
# littlefs: ring of 6 segments in a 256 KB filesystem, wrapped about 2.3 times
fl = lfs(D + "/lfs256.bin", 64)
j = Journal(LfsRing("/flash/j", 6 * SEC, SEC))
b, e = workload(j, fl, 3500)
out["littlefs.bytes_per_punch"] = b
out["littlefs.erases_per_punch"] = e
out["littlefs.wraps"] = j._head_gen / j.segments
j.close()
# littlefs: a full 2 MiB filesystem, segment files copied whole from the raw ring
fl = lfs(D + "/lfs.bin", 512)
os.mkdir("/flash/j")
src = CutFlash(SEC, 512, path=D + "/raw.bin")
buf = bytearray(SEC)
k = 0
try:
    for s in range(512):
        src.read(s * SEC, buf)
        with open("/flash/j/%%d" %% s, "wb") as f:
            f.write(buf)
        k += 1
except OSError:
    os.remove("/flash/j/%%d" %% k)
t = time.ticks_ms()
j = Journal(LfsRing("/flash/j", 512 * SEC, SEC))
out["littlefs.recovery_ms"] = ms_since(t)
# One segment stays free: LittleFS needs a spare block to copy the last one on append.
out["littlefs.capacity_2mib"] = j.last_seq - int(out["raw.capacity_2mib"] / 512)
out["littlefs.segments_2mib"] = k
j.close()
# baseline: a JSON line per punch, appended and flushed on LittleFS
fl = lfs(D + "/base.bin", 64)
fl.reset_counters()
n = 0
line = 0
try:
    with open("/flash/punches.jsonl", "a") as f:
        while True:
            p = mk(n)
            d = {"seq": n + 1, "utc": iso_ms(p.utc_ms), "utc_ms": p.utc_ms, "quality": "synced",
                 "uncertainty_ms": p.uncertainty_ms, "badge": p.badge, "kind": p.kind, "employee": p.employee,
                 "utc_offset_min": p.utc_offset_min}
            s = json.dumps(d) + "\n"
            f.write(s)
            f.flush()
            n += 1
            line += len(s)
            if n == 500:
                out["baseline.bytes_per_punch"] = fl.bytes_programmed / n
                out["baseline.erases_per_punch"] = fl.erases / n
except OSError:
    pass
out["baseline.capacity_2mib"] = n * 8  # filled 256 KB: scaled to 2 MiB
out["baseline.record_bytes"] = line / n
print(json.dumps(out))
"""


def run() -> dict:
    with tempfile.TemporaryDirectory() as d:
        res = mp.mp_json(SCRIPT % d, timeout=1200)
    assert isinstance(res, dict)
    return {"journal": {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
