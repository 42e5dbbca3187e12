"""layouts.*: the terminal's heap by code layout (ROMFS, /lib .mpy), on the 64-bit unix port and on a
32-bit MicroPython (the WebAssembly port from npm, run under Node.js).

The deployed layout is ROMFS (firmware/README.md): the code runs in place from the mapped partition.
The other layout, /lib, is what an image without ROMFS must do: each .mpy is read into the heap.
Frozen bytecode (a custom image with the code built in) costs less than either; it needs an ESP32
build, which this machine cannot make, so it is not measured here.

The WebAssembly port has no sockets, so on both interpreters the figures are of what runs without a
network: the terminal's module imports (on the WebAssembly port, https's `socket` and `tls` replaced by
empty stand-ins and os.urandom, which it lacks, by one made of random: taken before the baseline) and
an offline terminal: clock, time zone, journal over an in-memory flash (its bytes subtracted: flash on
a board), roster, and TAPS taps down the tap path.

Figures (bytes of live heap, gc.mem_alloc() after a collection, above the bare interpreter):
- <interp>_<layout>_code_bytes: the module imports.
- <interp>_<layout>_offline_peak_bytes: the largest sampled while the offline terminal takes its taps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from clockterm_host import REPO, bundle

TAPS = 50
NPM_DIR = REPO / "build" / "npm"
WASM_PKG = NPM_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"
MODULES = ("clockterm.log", "clockterm.punch", "clockterm.journal", "clockterm.clock", "clockterm.tz",
           "clockterm.roster", "clockterm.terminal", "clockterm.sntp", "clockterm.https", "clockterm.uplink",
           "clockterm.boards.norflash", "clockterm.app", "clockterm.server", "clockterm.endpoint")

# Steps run on either interpreter once the code is reachable (ROMFS mounted or /lib on sys.path). On
# the unix port they run as one script; on the WebAssembly port each is a runPython call of its own:
# there gc.collect() frees nothing that became garbage during the same call (its C stack cannot be
# scanned), so every figure is taken at the start of the step after the one that made it.
STEPS = [
    "import gc, json, sys, time\ngc.collect()\na0 = gc.mem_alloc()",
    "for m in %(modules)r:\n    __import__(m)",
    "gc.collect()\ncode = gc.mem_alloc() - a0\nfrom clockterm.boards.norflash import NorFlash\n"
    "flash = NorFlash(4096, 16)",
    """gc.collect()
flash_bytes = gc.mem_alloc() - a0 - code
from clockterm.clock import Clock
from clockterm.journal import Journal
from clockterm.roster import Roster
from clockterm.terminal import Terminal
from clockterm.tz import TZ

class _Rtc:
    battery = True
    def now_ms(self):
        return time.time_ns() // 1000000
    def set_ms(self, ms):
        pass

class _Ind:
    def feedback(self, result, text):
        pass
    def idle(self, lines):
        pass

term = Terminal(Clock(_Rtc(), %(tmp)r + '/clock.json'), Journal(flash), Roster(%(tmp)r + '/roster.bin'),
                TZ('CET-1CEST,M3.5.0,M10.5.0/3'), _Ind(),
                {'duplicate_window_s': 0, 'unknown_badge': 'record', 'kind_mode': 'toggle'})
peak = 0
i = 0""",
    *["""gc.collect()
peak = max(peak, gc.mem_alloc() - a0 - flash_bytes)
r = term.tap('04A1B2%%02X' %% i)
assert r.startswith('OK'), r
i += 1"""] * TAPS,
    "gc.collect()\npeak = max(peak, gc.mem_alloc() - a0 - flash_bytes)\n"
    "print(json.dumps({'code': code, 'offline_peak': peak}))",
]

_STUBS = """
import sys, os as _os, random as _random
class _Stub:
    pass
for _n in ('socket', 'tls'):
    sys.modules[_n] = _Stub()
class _Os:
    # The port's os module has no urandom (the journal's new ids use it).
    def __getattr__(self, name):
        return getattr(_os, name)
    def urandom(self, n):
        return bytes(_random.getrandbits(8) for _ in range(n))
sys.modules['os'] = _Os()
"""

_ROMFS_MOUNT = """
import vfs, sys
_b = bytearray(%(size)d)
with open(%(img)r, 'rb') as _f:
    _f.readinto(_b)
vfs.mount(vfs.VfsRom(_b), '/rom')
sys.path.insert(0, '/rom/lib')
del _f
"""


def _last_json(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


def _steps(tmp: str) -> list[str]:
    return [st % {"modules": MODULES, "tmp": tmp} for st in STEPS]


def unix(out: Path, layout: str, tmp: str) -> dict:
    """The figures on the unix port: ROMFS as bundle.launch mounts it (its image subtracted), or /lib."""
    if layout == "romfs":
        # The image the host holds in its heap stands for the board's mapped flash: counted from a0 on,
        # the script's baseline is taken after the mount, so it is not in the figures.
        argv, env = bundle.launch(out, "400K", "\n".join(_steps(tmp)))
    else:
        env = dict(os.environ, MICROPYPATH=f"{out / 'lib'}:.frozen")
        argv = [bundle.tool("micropython"), "-X", "heapsize=400K", "-c", "\n".join(_steps(tmp))]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"unix {layout}: {r.stdout[-500:]}{r.stderr[-500:]}")
    return _last_json(r.stdout)


def wasm(out: Path, layout: str, tmp: Path) -> dict:
    """The figures on the WebAssembly port (32-bit), its files given through its in-memory filesystem."""
    node = shutil.which("node")
    if not node or not WASM_PKG.exists():
        raise RuntimeError("the WebAssembly port is not installed: run 'make setup' (Node.js and npm needed)")
    files = {}
    if layout == "romfs":
        files["/romfs.img"] = out / "romfs.img"
        pre = _ROMFS_MOUNT % {"size": (out / "romfs.img").stat().st_size, "img": "/romfs.img"}
    else:
        for p in (out / "lib").rglob("*.mpy"):
            files["/lib/" + p.relative_to(out / "lib").as_posix()] = p
        pre = "import sys\nsys.path.insert(0, '/lib')\n"
    steps = [_STUBS + pre, *_steps("/tmp")]
    js = tmp / "run.mjs"
    js.write_text(f"""
import {{ loadMicroPython }} from {json.dumps(str(WASM_PKG))};
import {{ readFileSync }} from "fs";
const files = {json.dumps({k: str(v) for k, v in files.items()})};
const mp = await loadMicroPython({{stdout: (s) => process.stdout.write(s + "\\n"), linebuffer: true}});
for (const [dst, src] of Object.entries(files)) {{
  const parts = dst.split("/").slice(1, -1);
  let d = "";
  for (const p of parts) {{ d += "/" + p; try {{ mp.FS.mkdir(d); }} catch (e) {{}} }}
  mp.FS.writeFile(dst, readFileSync(src));
}}
try {{
  for (const step of {json.dumps(steps)}) mp.runPython(step);
}} catch (e) {{
  console.error("MicroPython: " + e.message);
  process.exit(1);
}}
""")
    r = subprocess.run([node, str(js)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"wasm {layout}: {r.stdout[-500:]}{r.stderr[-800:]}")
    return _last_json(r.stdout)


def run() -> dict:
    out = bundle.build("sim")
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-layouts-") as t:
        for layout in ("romfs", "lib"):
            for interp, fn in (("unix64", unix), ("wasm32", wasm)):
                d = Path(t) / f"{interp}-{layout}"
                d.mkdir()
                res = fn(out, layout, d if interp == "wasm32" else str(d))
                figures[f"{interp}_{layout}_code_bytes"] = res["code"]
                figures[f"{interp}_{layout}_offline_peak_bytes"] = res["offline_peak"]
                print(f"   {interp} {layout}: code {res['code']} B, offline peak {res['offline_peak']} B", flush=True)
    return {"layouts": figures}
