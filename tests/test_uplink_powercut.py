"""kill -9 of a sim terminal at random moments while it flushes to the real central (TLS, SNTP time):
every OK punch ends up stored at central exactly once, and the durable ack never passes what is stored."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clockterm_host.central import Handle, start_background
from clockterm_host.defaults import default_config
from clockterm_host.runner import Terminal
from clockterm_host.sim import free_port
from clockterm_host.sntp_server import SntpServer

DEVICE = "term-001"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Handle, Path]]:
    central = start_background(tmp_path / "central", devices=f"{DEVICE}:pw-{DEVICE}")
    sntp = SntpServer().start()
    cfg = default_config("sim")
    cfg["device_id"] = DEVICE
    cfg["sim"]["control_port"] = free_port()
    cfg["sntp"].update(servers=["127.0.0.1"], port=sntp.port, samples=1)  # synced soon after boot
    cfg["central"].update(url=central.url, ca=str(central.ca_path), client_id=DEVICE,
                          client_secret=central.devices[DEVICE], batch_max=4, interval_s=1)
    cfg["terminal"].update(duplicate_window_s=0, unknown_badge="record")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    try:
        yield central, path
    finally:
        sntp.stop()
        central.stop()


def stored(central: Handle) -> dict[int, dict[str, Any]]:
    rows = central.store.punches(DEVICE)
    assert len({r["journal_id"] for r in rows}) <= 1  # one journal all along
    seqs = [r["seq"] for r in rows]
    assert len(seqs) == len(set(seqs))
    return {r["seq"]: r for r in rows}


def check_ack(term: Terminal, central: Handle) -> int:
    """The durable ack point must never be ahead of what central holds."""
    acked = term.status()["journal"]["acked_seq"]
    have = stored(central)
    missing = [s for s in range(1, acked + 1) if s not in have]
    assert not missing, f"acked through {acked} but central lacks {missing[:10]}"
    return acked


def powercut_run(central: Handle, config: Path, state: Path, kills: int, seed: int) -> None:
    rnd = random.Random(seed)
    # Each cut shortens one flush: stalls hold some answers (stored, not yet acked) so cuts also land
    # between the store and the ack, and the resent batch must count as duplicates, not new punches.
    # A slow server (latency) spreads each boot's flushes over most of the time before the cut.
    central.set_faults(queue=[{"do": "stall", "s": 0.4} for _ in range(kills)], latency_s=0.1, seed=seed)
    ok: dict[int, str] = {}
    term = Terminal(config, state)
    badge = 0
    interrupted = 0  # cuts that left part of the backlog unsent
    try:
        term.start()
        for _ in range(kills):
            for _ in range(rnd.randint(3, 9)):  # a backlog for this boot's flushes
                badge += 1
                ans = term.tap(f"C{badge:06d}")
                assert ans.startswith("OK "), ans
                seq = int(ans.split()[1])
                assert seq not in ok, f"seq {seq} given twice"
                ok[seq] = f"C{badge:06d}"
            if check_ack(term, central) < max(ok, default=0) - 9:
                interrupted += 1  # the last boot's backlog (and this one's taps) was not all acked
            time.sleep(rnd.uniform(0.0, 1.0))  # sync, token and flushes all happen in here
            term.kill()
            term.start()
        # Power stays on: everything drains.
        deadline = time.monotonic() + 60
        while term.status()["journal"]["acked_seq"] < max(ok):
            assert time.monotonic() < deadline, term.status()
            time.sleep(0.2)
        check_ack(term, central)
    finally:
        term.stop()
    have = stored(central)
    assert sorted(have) == sorted(ok), "central holds other seqs than the OK answers"
    assert all(have[s]["badge"] == b for s, b in ok.items())
    stats = central.admin("/stats")
    assert stats["punches_stored"] == len(ok)
    assert interrupted >= kills // 3, (interrupted, stats)  # the cuts did land in flushes
    assert stats["punches_duplicate"] > 0, stats  # cuts between a store and its ack: resent, not doubled


def test_kill_during_flushes_exactly_once(rig: tuple[Handle, Path], tmp_path: Path) -> None:
    # The 50 random moments (about 35 s).
    central, config = rig
    powercut_run(central, config, tmp_path / "state", kills=50, seed=1)


@pytest.mark.soak
def test_kill_during_flushes_exactly_once_200(rig: tuple[Handle, Path], tmp_path: Path) -> None:
    central, config = rig
    powercut_run(central, config, tmp_path / "state", kills=200, seed=2)
