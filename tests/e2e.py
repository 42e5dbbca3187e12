"""Helpers for the end-to-end tests and benches on sim terminals: configs, a gated UDP relay in front of
a time server, timed taps, and the reference central wired to a terminal."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from clockterm_host.defaults import default_config  # noqa: E402
from clockterm_host.runner import Terminal  # noqa: E402
from clockterm_host.sim import free_port  # noqa: E402

DEVICE = "e2e-001"


def host_ms() -> float:
    """The host's UTC in ms (float, sub-ms): the reference the sim RTC and chrony both serve."""
    return time.time_ns() / 1e6


def iso_to_ms(iso: str) -> int:
    """'2026-11-25T14:13:20.123Z' -> Unix ms."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000 + 0.5)


def ok_parts(answer: str) -> tuple[int, int]:
    """'OK <seq> <iso>' -> (seq, utc_ms); anything else fails the test with the answer."""
    words = answer.split()
    assert len(words) == 3 and words[0] == "OK", answer
    return int(words[1]), iso_to_ms(words[2])


def config(sntp_port: int | None = None, server: Any = None, **sections: Any) -> dict:
    """A sim terminal config with free ports; sntp_port None points at a port nobody serves."""
    cfg = default_config("sim", DEVICE)
    cfg["sim"]["control_port"] = free_port()
    # (the device endpoint stays off: its tests turn it on, see test_endpoint_*.py)
    cfg["sntp"]["servers"] = ["127.0.0.1"]
    cfg["sntp"]["port"] = sntp_port or free_port()
    if server is not None:  # the reference central (a Handle)
        cfg["central"]["url"] = server.url
        cfg["central"]["ca"] = str(server.ca_path)
        cfg["central"]["client_id"] = DEVICE
        cfg["central"]["client_secret"] = server.devices[DEVICE]
        cfg["central"]["interval_s"] = 1
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def terminal(tmp: Path, cfg: dict, start: bool = True) -> Terminal:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    term = Terminal(path, tmp / "state")
    return term.start() if start else term


def start_central(tmp: Path) -> Any:
    from clockterm_host.central import start_background

    return start_background(tmp / "central", devices=DEVICE)


def timed_tap(term: Terminal, badge: str) -> tuple[float, str, float, float]:
    """(host ms before, answer, host ms after, round trip ms) of one control-port tap."""
    t0 = time.perf_counter()
    before = host_ms()
    answer = term.tap(badge)
    after = host_ms()
    return before, answer, after, (time.perf_counter() - t0) * 1000


def stamp_error_ms(before: float, stamp_ms: int, after: float) -> float:
    """How far a stamp (whole ms, truncated) lies outside the host interval in which the tap happened."""
    if stamp_ms + 1 < before:
        return before - (stamp_ms + 1)
    if stamp_ms > after:
        return stamp_ms - after
    return 0.0


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class UdpGate:
    """A UDP relay on 127.0.0.1 in front of a time server: while closed it drops every request, so a
    terminal pointed at it stays unsynced until the test opens it. The relay adds a few tens of
    microseconds each way (symmetric), well inside the 5 ms the tests allow."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.open = False
        self.dropped = 0
        self.relayed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> UdpGate:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.bind(("127.0.0.1", 0))
        up.settimeout(1.0)
        try:
            while not self._stop.is_set():
                try:
                    data, client = self.sock.recvfrom(1024)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not self.open:
                    self.dropped += 1
                    continue
                up.sendto(data, self.target)
                try:
                    reply, _ = up.recvfrom(1024)
                except TimeoutError:
                    continue
                self.relayed += 1
                self.sock.sendto(reply, client)
        finally:
            up.close()
