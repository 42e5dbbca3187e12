"""uplink.*: drain a 10k-punch backlog to the reference central over verified TLS, batched vs one per request."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import mp
from clockterm_host.central import start_background

BACKLOG = int(os.environ.get("BENCH_UPLINK_BACKLOG", "10000"))
# Same run, same client, same server, same journal and encoding: only batch_max differs (1 for the
# baseline). One punch per request costs the same per request whatever the backlog, so the baseline
# drains a sample and is scaled to 10k (the full 10k would take well over a minute more).
BASELINE = int(os.environ.get("BENCH_UPLINK_BASELINE", "1000"))
DRIVER = (Path(__file__).resolve().parents[1] / "tests" / "uplink_mp.py").read_text()


def _drain(state: Path, batch_max: int, journal: str, backlog: int) -> dict[str, Any]:
    h = start_background(state, devices="term-1:pw1")
    try:
        cfg = {"url": h.url, "ca": str(h.ca_path), "device": "term-1", "secret": "pw1", "journal_id": journal,
               "initial": backlog, "batch_max": batch_max, "deadline_ms": 600_000}
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(cfg, f)
            f.flush()
            out = mp.mp_json(DRIVER, args=[f.name], timeout=900)
        assert isinstance(out, dict)
        stored = len([r for r in h.store.punches("term-1") if r["journal_id"] == journal])
        if out["acked"] != backlog or stored != backlog or out["done_ms"] is None:
            raise RuntimeError(f"drain incomplete: acked {out['acked']}, stored {stored} of {backlog}")
        return out
    finally:
        h.stop()


def run() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        batched = _drain(Path(tmp) / "batched", 200, "bench-batched", BACKLOG)
        baseline = _drain(Path(tmp) / "baseline", 1, "bench-single", BASELINE)
    b_s = batched["done_ms"] / 1000 * 10_000 / BACKLOG
    base_s = baseline["done_ms"] / 1000 * 10_000 / BASELINE
    return {"uplink": {
        "backlog_10k_s": round(b_s, 3),
        "baseline_10k_s": round(base_s, 3),
        "speedup_x": round(base_s / b_s, 1),
        "tls_handshakes": batched["connections"],
        "requests": batched["batches"],
        "punches_per_request": round(BACKLOG / batched["batches"], 1),
        "heap_peak_bytes": batched["heap_peak"],
    }}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
