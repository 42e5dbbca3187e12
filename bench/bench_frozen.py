"""frozen.*: the terminal's heap with its code frozen into the interpreter, beside the ROMFS layout in the
same run, when firmware/unix/build.sh has built that interpreter (build/unix/frozen/micropython; the
build needs GitHub, so a fresh machine has none: then nothing is measured and the bench says so).

Figures (bytes unless named otherwise), each from bench_heap's scenario (boot, sync, 50 taps, STATUS,
TLS upload, the device endpoint answering a client throughout):
- peak_bytes / baseline_romfs_peak_bytes: the largest live heap sampled, frozen / from ROMFS (less the
  image the host reads into its heap).
- used_after_boot_bytes / baseline_romfs_used_after_boot_bytes: the same right after boot.
- min_heap_kb: the smallest heap (4 KB steps) with which the scenario succeeds, frozen.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from clockterm_host import bundle
from clockterm_host.central import start_background
from clockterm_host.sntp_server import SntpServer

from bench import bench_heap

REPO = Path(__file__).resolve().parents[1]
FROZEN = REPO / "build" / "unix" / "frozen" / "micropython"


def run() -> dict:
    if not FROZEN.exists():
        print(f"   no frozen interpreter ({FROZEN.relative_to(REPO)}): firmware/unix/build.sh builds it "
              "(it needs GitHub); nothing measured")
        return {}
    out = bundle.build("sim")
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-frozen-") as t:
        tmp = Path(t)
        central = start_background(tmp / "central", devices=bench_heap.DEVICE)
        sntp = SntpServer().start()
        # The baseline on the venv's interpreter from ROMFS whatever the caller set; the caller's settings
        # back after
        saved = {k: os.environ.pop(k) for k in ("CLOCKTERM_MICROPYTHON", "CLOCKTERM_FROZEN") if k in os.environ}
        try:
            romfs = bench_heap.scenario(tmp, "160K", central, sntp.port)
            if romfs["ok"]:
                image = bench_heap.image_alloc(out)
                figures["baseline_romfs_peak_bytes"] = romfs["alloc_max"] - image
                figures["baseline_romfs_used_after_boot_bytes"] = romfs["alloc_after_boot"] - image
            os.environ.update(CLOCKTERM_MICROPYTHON=str(FROZEN), CLOCKTERM_FROZEN="1")
            frozen = bench_heap.scenario(tmp, "160K", central, sntp.port)
            if not frozen["ok"]:
                raise RuntimeError(f"frozen scenario failed: {frozen.get('why')}")
            figures["peak_bytes"] = frozen["alloc_max"]
            figures["used_after_boot_bytes"] = frozen["alloc_after_boot"]
            figures["min_heap_kb"] = bench_heap.min_heap_kb(tmp, central, sntp.port, 40, 100)
        finally:
            os.environ.pop("CLOCKTERM_MICROPYTHON", None)
            os.environ.pop("CLOCKTERM_FROZEN", None)
            os.environ.update(saved)
            sntp.stop()
            central.stop()
    romfs_peak = figures.get("baseline_romfs_peak_bytes")
    print(f"   peak: frozen {figures['peak_bytes']:,} B, ROMFS {f'{romfs_peak:,} B' if romfs_peak else 'failed'}; "
          f"frozen runs from {figures['min_heap_kb']} KB")
    return {"frozen": figures}
