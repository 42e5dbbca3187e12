"""tap.*: control-port tap latency on a sim terminal, idle and while the uplink flushes a backlog over TLS,
the stamp error of taps after sync on an RTC an hour off drifting +50 ppm, loop stalls and heap in use.

One terminal run, in phases:
1. unsynced (the time server sits behind a closed gate, so the uplink waits for the clock and is idle):
   BACKLOG taps back to back -> the idle baseline `tap.idle_latency_ms_*`; the stamp error of these
   taps is the unsynced baseline `tap.unsynced_ts_err_ms_max` (the RTC's hour).
2. the gate opens: SNTP syncs, the uplink flushes the whole backlog over TLS to the reference central
   while taps go on back to back and a thread reads STATUS 4 times a second (standing in for endpoint
   load; STATUS runs gc.collect and serialises a few KB of JSON) -> `tap.latency_ms_*`, and from the
   STATUS samples the heap figures.
3. synced and idle again: 100 taps -> `tap.ts_err_ms_max` (how far a stamp lies outside the host's UTC
   interval [before, after] of its tap; the stamp is whole ms, truncated) and `tap.ts_mid_err_ms_max`
   (the distance from the middle of the stamp's ms to the middle of the tap's interval: a stricter look
   that also counts the round trip).
`loop.stall_ms_max` is read from STATUS after phase 1 (`loop.stall_ms_max_idle`) and after phase 2.

Heap (heap.peak_bytes and heap.free_min_bytes proper are bench_heap's): STATUS reports gc.mem_free()
and mem_alloc() right after a gc.collect(), so `tap.heap_live_max_bytes` is the largest live heap seen at
a STATUS sample during the flush (not the transient peak between collections), less the ROMFS image the
unix port keeps in its heap (a board maps it from flash); `tap.heap_live_idle_bytes` the same after
phase 1 (the baseline); `tap.heap_free_min_bytes` the least free heap after a collection, out of the
sim board's heap (board_configs/sim.json).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import e2e  # noqa: E402
from clockterm_host.sntp_server import SntpServer  # noqa: E402

BACKLOG = 3000
TS_TAPS = 100
HOUR_MS = 3_600_000


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _figures(prefix: str, lat: list[float]) -> dict[str, float]:
    return {f"{prefix}latency_ms_p50": round(statistics.median(lat), 3),
            f"{prefix}latency_ms_p99": round(_pct(lat, 99), 3),
            f"{prefix}latency_ms_max": round(max(lat), 3)}


class StatusSampler(threading.Thread):
    def __init__(self, term, every_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.term = term
        self.every_s = every_s
        self.stop = threading.Event()
        self.samples: list[dict] = []

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self.samples.append(self.term.status())
            except (OSError, ValueError):
                pass


def _image_bytes() -> int:
    from clockterm_host import bundle

    return (bundle.build("sim") / "romfs.img").stat().st_size


def run() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-tap-"))
    central = e2e.start_central(tmp)
    sntp = SntpServer().start()
    term = None
    try:
        with e2e.UdpGate(sntp.port) as gate:
            cfg = e2e.config(gate.port, central, sntp={"min_poll_s": 1, "timeout_ms": 200},
                             terminal={"duplicate_window_s": 0},
                             sim={"rtc_offset_ms": HOUR_MS, "rtc_drift_ppm": 50.0})
            term = e2e.terminal(tmp, cfg)
            # 1. idle baseline, building the backlog
            idle, unsynced_err = [], []
            for i in range(BACKLOG):
                before, answer, after, rtt = e2e.timed_tap(term, f"{i:08X}")
                _, stamp = e2e.ok_parts(answer)
                idle.append(rtt)
                unsynced_err.append(e2e.stamp_error_ms(before, stamp, after))
            st = term.status()
            if st["uplink"]["state"] != "waiting_clock" or central.store.count():
                raise RuntimeError(f"uplink was not idle while the baseline ran: {st['uplink']}")
            stall_idle = st["loop"]["stall_ms_max"]
            idle_alloc = st["heap"]["alloc"]

            # 2. under load: sync, flush the backlog over TLS, STATUS polled
            sampler = StatusSampler(term)
            sampler.start()
            gate.open = True
            loaded = []
            i = 0
            t0 = time.monotonic()
            while central.store.count() < BACKLOG:
                if time.monotonic() - t0 > 300:
                    raise RuntimeError(f"backlog not flushed in 300 s: {central.store.count()} stored")
                _, answer, _, rtt = e2e.timed_tap(term, f"E{i:07X}")
                e2e.ok_parts(answer)
                loaded.append(rtt)
                i += 1
            flush_s = time.monotonic() - t0
            sampler.stop.set()
            sampler.join(5)
            st = term.status()
            if st["clock"]["quality"] != "synced" or st["uplink"]["connections"] < 1:
                raise RuntimeError(f"not synced or never connected: {st['clock']} {st['uplink']}")

            # 3. stamp error after sync
            ts_err, ts_off = [], []
            for k in range(TS_TAPS):
                before, answer, after, _ = e2e.timed_tap(term, f"D{k:07X}")
                stamp = e2e.ok_parts(answer)[1]
                ts_err.append(e2e.stamp_error_ms(before, stamp, after))
                ts_off.append(abs(stamp + 0.5 - (before + after) / 2))  # to the middle of both intervals

            samples = sampler.samples + [st]
            img = _image_bytes()  # the unix port holds the ROMFS image in the GC heap; a board maps it
            out = {"tap": {**_figures("", loaded), **_figures("idle_", idle),
                           "taps_under_load": len(loaded), "flush_s": round(flush_s, 2),
                           "ts_err_ms_max": round(max(ts_err), 3),
                           "ts_mid_err_ms_max": round(max(ts_off), 3),
                           "unsynced_ts_err_ms_max": round(max(unsynced_err), 1),
                           "heap_live_max_bytes": max(s["heap"]["alloc"] for s in samples) - img,
                           "heap_live_idle_bytes": idle_alloc - img,
                           "heap_free_min_bytes": min(s["heap"]["free"] for s in samples),
                           "status_samples": len(samples)},
                   "loop": {"stall_ms_max": st["loop"]["stall_ms_max"], "stall_ms_max_idle": stall_idle}}
            return out
    finally:
        if term is not None:
            term.stop()
        sntp.stop()
        central.stop()


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
