"""inout.*: what the in/out state (toggle mode) costs: flash per tap, the rebuild from the journal, heap.

Runs in the MicroPython unix port under the 100 KB heap: a Terminal on a raw journal (emulated NOR flash,
4 KB sectors, file-backed as on the sim board) and a 10,000-badge roster on a 1 MB LittleFS, as the app
builds them.
- tap_bytes_per_tap, tap_erases_per_tap: flash programmed and sectors erased per toggle tap, on both
  chips (journal and filesystem), over TAPS taps of 500 people; baseline_bytes_per_punch,
  baseline_erases_per_punch: the same punches appended to the journal alone, which is all a tap wrote
  before the state was kept (it lived in RAM only): the difference is what keeping the state costs.
- restore_ms: Terminal.restore() (at boot, or a tap right after a roster swap) over a window of
  WINDOW punches against the 10,000-badge roster; restore_us_per_punch the same per punch.
- step_ms_max: the longest housekeeping step of a background rebuild (Terminal.step), a loop stall;
  rebuild_heap_bytes: the heap a rebuild holds while it runs (with 10,000 badges: the new bits too).
- bits_bytes: heap the state holds for 10,000 badges (one bit each, plus the bytearray's header).
"""

from __future__ import annotations

import json
import tempfile

import mp

TAPS = 1000
WINDOW = 2000

SCRIPT = r"""
import gc, json, time, vfs
from clockterm.boards.cutflash import CutFlash
from clockterm.journal import Journal
from clockterm.punch import Punch
from clockterm.roster import Roster, RosterWriter
from clockterm.terminal import Terminal
D = %r
TAPS = %d
WINDOW = %d
T0 = 1795600000000

class Clock:
    utc = T0
    def now(self):
        Clock.utc += 1000
        return Clock.utc, 1, 0

class TZ:
    def offset_s(self, s):
        return 0

class Indicator:
    def feedback(self, code, text):
        pass

fs = CutFlash(4096, 256, path=D + "/fs.bin")
vfs.VfsLfs2.mkfs(fs)
vfs.mount(vfs.VfsLfs2(fs), "/flash")
w = RosterWriter("/flash/roster.bin")
for i in range(10000):
    w.add("%%08X" %% (i * 16), "E%%d" %% i, "Person %%d" %% i)
w.commit()
out = {}
cfg = {"duplicate_window_s": 0, "unknown_badge": "record", "kind_mode": "toggle", "shift_max_h": 16}

def badge(i):
    return "%%08X" %% ((i %% 500) * 16 * 20)  # 500 people spread over the roster

# The journal alone: what a tap wrote while the state lived in RAM.
jf = CutFlash(4096, 256, path=D + "/base.bin")
j = Journal(jf)
jf.reset_counters()
for i in range(TAPS):
    j.append(Punch(T0 + i * 1000, badge(i), ("in", "out")[(i // 500) & 1], 1, 0, "E%%d" %% ((i %% 500) * 20), 0))
out["baseline_bytes_per_punch"] = jf.bytes_programmed / TAPS
out["baseline_erases_per_punch"] = jf.erases / TAPS
jf.close()

jf = CutFlash(4096, 256, path=D + "/journal.bin")
roster = Roster("/flash/roster.bin")
t = Terminal(Clock(), Journal(jf), roster, TZ(), Indicator(), cfg)
t.restore()
gc.collect()
out["bits_bytes"] = len(t._inside) + 16
jf.reset_counters()
fs.reset_counters()
kinds = {}
for i in range(TAPS):
    a = t.tap(badge(i))
    kinds[t.last_result.split()[0]] = kinds.get(t.last_result.split()[0], 0) + 1
out["tap_kinds"] = kinds
out["tap_bytes_per_tap"] = (jf.bytes_programmed + fs.bytes_programmed) / TAPS
out["tap_erases_per_tap"] = (jf.erases + fs.erases) / TAPS
out["tap_fs_bytes"] = fs.bytes_programmed
# A window of WINDOW punches: the rebuild at boot.
for i in range(WINDOW - TAPS):
    t.tap(badge(i))
t0 = time.ticks_us()
t.restore()
out["restore_ms"] = time.ticks_diff(time.ticks_us(), t0) / 1000
out["restore_us_per_punch"] = time.ticks_diff(time.ticks_us(), t0) / WINDOW
out["people"] = t._people
# The same in housekeeping's steps; the heap a rebuild holds while it runs (its generators, window
# buffer and the new bits), after a collection, beside the same terminal idle.
gc.collect()
idle = gc.mem_alloc()
t.refresh_at = time.ticks_ms()
worst = 0
n = 0
held = 0
while True:
    t0 = time.ticks_us()
    t.step()
    worst = max(worst, time.ticks_diff(time.ticks_us(), t0))
    n += 1
    if n == 2:
        gc.collect()
        held = gc.mem_alloc() - idle
    if t._replay is None and n > 1:
        break
out["rebuild_heap_bytes"] = held
out["step_ms_max"] = worst / 1000
out["steps"] = n
print(json.dumps(out))
"""


def run() -> dict:
    with tempfile.TemporaryDirectory() as d:
        res = mp.mp_json(SCRIPT % (d, TAPS, WINDOW), timeout=1200)
    assert isinstance(res, dict)
    res.pop("tap_kinds")
    return {"inout": {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
