"""frozen.* and frozen32.*: the terminal's heap with its code frozen into the interpreter (the layout of the
pinned image: firmware/manifest.py), beside the ROMFS layout in the same run, on the unix ports that
firmware/unix/build.sh builds (it needs GitHub, so a fresh machine has none: then nothing is measured and
the bench says so, as it does for a build of older code than lib/):
- frozen.*: on this 64-bit host (8-byte words, 32-byte GC blocks); ROMFS on the venv's interpreter.
- frozen32.*: on the 32-bit x86 builds with single-precision floats, whose words, GC blocks (16 bytes),
  small ints and floats are an ESP32's: the figures a board's heap has (build/unix/frozen32 and, for
  ROMFS, build/unix/plain32).

Figures (bytes unless named otherwise), each from bench_heap's scenario (boot, sync, 50 taps, STATUS,
TLS upload, the device endpoint answering a client throughout):
- peak_bytes / baseline_romfs_peak_bytes: the largest live heap sampled, frozen / from ROMFS (less the
  image the host reads into its heap).
- used_after_boot_bytes / baseline_romfs_used_after_boot_bytes: the same right after boot.
- min_heap_kb / baseline_romfs_min_heap_kb: the smallest heap (4 KB steps) with which the scenario
  succeeds, frozen / from ROMFS.
- endpoint_*: bench_endpoint's figures on the frozen interpreter (what the endpoint adds listening, with
  one kept-alive client, while it serves that client, and with four hammering; GET status per second on
  one connection; the tap p99 while four clients hammer); the same from ROMFS on the venv's interpreter
  are endpoint.* of the same `make bench` run (bench_endpoint runs just before this bench).
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
UNIX = REPO / "build" / "unix"
FROZEN = UNIX / "frozen" / "micropython"
_ENV = ("CLOCKTERM_MICROPYTHON", "CLOCKTERM_FROZEN")
ENDPOINT = ("heap_idle_cost_bytes", "heap_idle_connected_cost_bytes", "heap_serving_one_cost_bytes",
            "heap_serving_cost_bytes", "status_rps_1", "tap_hammered_latency_ms_p99")


@contextlib.contextmanager
def interpreter(path: Path | None, frozen: bool = False):
    """Run the terminals started inside on the interpreter at path (None: the venv's), with the code frozen
    in or from ROMFS, whatever the caller set; the caller's settings back after."""
    saved = {k: os.environ.pop(k) for k in _ENV if k in os.environ}
    try:
        if path is not None:
            os.environ["CLOCKTERM_MICROPYTHON"] = str(path)
        if frozen:
            os.environ["CLOCKTERM_FROZEN"] = "1"
        yield
    finally:
        for k in _ENV:
            os.environ.pop(k, None)
        os.environ.update(saved)


def _built(frozen: Path) -> bool:
    # The frozen interpreter at frozen is there and carries lib/ as it is now (else said, and False)
    if not frozen.exists():
        print(f"   no {frozen.relative_to(REPO)}: firmware/unix/build.sh builds it (it needs GitHub); "
              "nothing measured on it")
        return False
    built = bundle.built_from(str(frozen))
    if built != bundle.code_id():
        print(f"   {frozen.relative_to(REPO)} carries code {built!r}, lib/ is {bundle.code_id()}: "
              "build it again (firmware/unix/build.sh); nothing measured on it")
        return False
    return True


def _layouts(tmp: Path, romfs: Path | None, frozen: Path) -> dict:
    """bench_heap's scenario from ROMFS on the interpreter romfs (None: the venv's) and frozen on frozen;
    then the endpoint's and the answers' figures on frozen."""
    out = bundle.build("sim")
    figures: dict = {}
    central = start_background(tmp / "central", devices=bench_heap.DEVICE)
    sntp = SntpServer().start()
    try:
        with interpreter(romfs):
            r = bench_heap.scenario(tmp, "160K", central, sntp.port)
            if r["ok"]:
                image = bench_heap.image_alloc(out)
                figures["baseline_romfs_peak_bytes"] = r["alloc_max"] - image
                figures["baseline_romfs_used_after_boot_bytes"] = r["alloc_after_boot"] - image
                figures["baseline_romfs_min_heap_kb"] = bench_heap.min_heap_kb(tmp, central, sntp.port, 40, 160)
        with interpreter(frozen, frozen=True):
            r = bench_heap.scenario(tmp, "160K", central, sntp.port)
            if not r["ok"]:
                raise RuntimeError(f"frozen scenario failed: {r.get('why')}")
            figures["peak_bytes"] = r["alloc_max"]
            figures["used_after_boot_bytes"] = r["alloc_after_boot"]
            figures["min_heap_kb"] = bench_heap.min_heap_kb(tmp, central, sntp.port, 40, 100)
    finally:
        sntp.stop()
        central.stop()
    with interpreter(frozen, frozen=True):
        ep = bench_endpoint.run()["endpoint"]
        answers = bench_answer.run()["answer"]
    figures.update({f"endpoint_{k}": ep[k] for k in ENDPOINT})
    figures.update({f"answer_{k}": v for k, v in answers.items() if not k.endswith("_requests")})
    romfs_peak = figures.get("baseline_romfs_peak_bytes")
    print(f"   peak: frozen {figures['peak_bytes']:,} B, ROMFS {f'{romfs_peak:,} B' if romfs_peak else 'failed'}; "
          f"frozen runs from {figures['min_heap_kb']} KB; the endpoint adds (frozen) "
          + " / ".join(f"{figures['endpoint_' + k]:,} B" for k in ENDPOINT[:4])
          + " listening / one client connected / serving it / four hammering")
    return figures


def run() -> dict:
    res = {}
    for name, romfs, frozen in (("frozen", None, FROZEN),
                                ("frozen32", UNIX / "plain32" / "micropython", UNIX / "frozen32" / "micropython")):
        print(f"   {name}: {frozen.relative_to(REPO)}")
        if not _built(frozen) or (romfs is not None and not romfs.exists()):
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as t:
            res[name] = _layouts(Path(t), romfs, frozen)
    return res
