"""frozen.*: the terminal's heap with its code frozen into the interpreter (the layout of the pinned image:
firmware/manifest.py), beside the ROMFS layout in the same run, when firmware/unix/build.sh has built that
interpreter from lib/ as it is now (build/unix/frozen/micropython; the build needs GitHub, so a fresh
machine has none: then nothing is measured and the bench says so, as it does for a build of older code).

Figures (bytes unless named otherwise), each from bench_heap's scenario (boot, sync, 50 taps, STATUS,
TLS upload, the device endpoint answering a client throughout):
- peak_bytes / baseline_romfs_peak_bytes: the largest live heap sampled, frozen / from ROMFS (less the
  image the host reads into its heap).
- used_after_boot_bytes / baseline_romfs_used_after_boot_bytes: the same right after boot.
- min_heap_kb: the smallest heap (4 KB steps) with which the scenario succeeds, frozen.
- endpoint_*: bench_endpoint's figures on the frozen interpreter (what the endpoint adds listening, with
  one kept-alive client, while it serves that client, and with four hammering; GET status per second on
  one connection; the tap p99 while four clients hammer); the same from ROMFS are endpoint.* of the same
  `make bench` run (bench_endpoint runs just before this bench).
- answer_*: bench_answer's figures on the frozen interpreter (the largest heap while one client is
  answered, route by route, sampled at every event-loop turn, and its baseline with the client quiet).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from clockterm_host import bundle
from clockterm_host.central import start_background
from clockterm_host.sntp_server import SntpServer

from bench import bench_answer, bench_endpoint, bench_heap

REPO = Path(__file__).resolve().parents[1]
FROZEN = REPO / "build" / "unix" / "frozen" / "micropython"
_ENV = ("CLOCKTERM_MICROPYTHON", "CLOCKTERM_FROZEN")
ENDPOINT = ("heap_idle_cost_bytes", "heap_idle_connected_cost_bytes", "heap_serving_one_cost_bytes",
            "heap_serving_cost_bytes", "status_rps_1", "tap_hammered_latency_ms_p99")


@contextlib.contextmanager
def interpreter(frozen: bool):
    """Run the terminals started inside on the frozen interpreter, or on the venv's from ROMFS, whatever the
    caller set; the caller's settings back after."""
    saved = {k: os.environ.pop(k) for k in _ENV if k in os.environ}
    try:
        if frozen:
            os.environ.update(CLOCKTERM_MICROPYTHON=str(FROZEN), CLOCKTERM_FROZEN="1")
        yield
    finally:
        for k in _ENV:
            os.environ.pop(k, None)
        os.environ.update(saved)


def run() -> dict:
    if not FROZEN.exists():
        print(f"   no frozen interpreter ({FROZEN.relative_to(REPO)}): firmware/unix/build.sh builds it "
              "(it needs GitHub); nothing measured")
        return {}
    built = bundle.built_from(str(FROZEN))
    if built != bundle.code_id():
        print(f"   {FROZEN.relative_to(REPO)} carries code {built!r}, lib/ is {bundle.code_id()}: "
              "build it again (firmware/unix/build.sh); nothing measured")
        return {}
    out = bundle.build("sim")
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-frozen-") as t:
        tmp = Path(t)
        central = start_background(tmp / "central", devices=bench_heap.DEVICE)
        sntp = SntpServer().start()
        try:
            with interpreter(frozen=False):
                romfs = bench_heap.scenario(tmp, "160K", central, sntp.port)
                if romfs["ok"]:
                    image = bench_heap.image_alloc(out)
                    figures["baseline_romfs_peak_bytes"] = romfs["alloc_max"] - image
                    figures["baseline_romfs_used_after_boot_bytes"] = romfs["alloc_after_boot"] - image
            with interpreter(frozen=True):
                frozen = bench_heap.scenario(tmp, "160K", central, sntp.port)
                if not frozen["ok"]:
                    raise RuntimeError(f"frozen scenario failed: {frozen.get('why')}")
                figures["peak_bytes"] = frozen["alloc_max"]
                figures["used_after_boot_bytes"] = frozen["alloc_after_boot"]
                figures["min_heap_kb"] = bench_heap.min_heap_kb(tmp, central, sntp.port, 40, 100)
        finally:
            sntp.stop()
            central.stop()
    with interpreter(frozen=True):
        ep = bench_endpoint.run()["endpoint"]
        answers = bench_answer.run()["answer"]
    figures.update({f"endpoint_{k}": ep[k] for k in ENDPOINT})
    figures.update({f"answer_{k}": v for k, v in answers.items() if not k.endswith("_requests")})
    romfs_peak = figures.get("baseline_romfs_peak_bytes")
    print(f"   peak: frozen {figures['peak_bytes']:,} B, ROMFS {f'{romfs_peak:,} B' if romfs_peak else 'failed'}; "
          f"frozen runs from {figures['min_heap_kb']} KB; the endpoint adds (frozen) "
          + " / ".join(f"{figures['endpoint_' + k]:,} B" for k in ENDPOINT[:4])
          + " listening / one client connected / serving it / four hammering")
    return {"frozen": figures}
