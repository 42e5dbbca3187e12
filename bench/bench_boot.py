"""boot.first_tap_ms: process start to the first OK on the control port, beside a bare interpreter start."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from clockterm_host import bundle
from clockterm_host.defaults import default_config
from clockterm_host.runner import Terminal
from clockterm_host.sim import free_port

RUNS = 5


def _first_tap_ms(cfg_path: Path, state: Path) -> float:
    term = Terminal(cfg_path, state)
    t0 = time.monotonic()
    term.start(wait=0)
    try:
        deadline = t0 + 30
        while True:
            try:
                answer = term.tap("04A1B2C3")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
        if not answer.startswith("OK"):
            raise RuntimeError(f"first tap answered {answer!r}")
        return (time.monotonic() - t0) * 1000
    finally:
        term.stop()


def run() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-boot-"))
    try:
        cold, warm = [], []
        for i in range(RUNS):
            cfg = default_config("sim")
            cfg["sim"]["control_port"] = free_port()
            cfg["sntp"]["port"] = free_port()  # nobody answers: boot must not wait for time
            cfg_path = tmp / f"c{i}.json"
            cfg_path.write_text(json.dumps(cfg))
            state = tmp / f"s{i}"
            cold.append(_first_tap_ms(cfg_path, state))  # first power-up: flash images made
            warm.append(_first_tap_ms(cfg_path, state))  # power-up with existing state
        bare = []
        mp = bundle.tool("micropython")
        for _ in range(RUNS):
            t0 = time.monotonic()
            subprocess.run([mp, "-X", "heapsize=100K", "-c", "pass"], check=True)
            bare.append((time.monotonic() - t0) * 1000)
        return {"boot": {
            "first_tap_ms": round(statistics.median(warm), 1),
            "first_tap_cold_ms": round(statistics.median(cold), 1),
            "baseline_bare_interpreter_ms": round(statistics.median(bare), 1),
        }}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
