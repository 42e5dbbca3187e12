"""The defaults work together: in one folder, `clockterm central serve`, `clockterm timeserver`, the
config `clockterm config` prints and `clockterm run` with it, each with no option but the run's state
folder: the terminal syncs its clock and its punch reaches the central, with no edit to anything.

The commands listen on their default ports (central 8443, SNTP 12300, tap port 7001); a lock file
keeps two runs of this test on one machine from meeting there."""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clockterm_host.defaults import CENTRAL_PORT, SIM_SNTP_PORT

CLI = [sys.executable, "-m", "clockterm_host.cli"]
CONTROL_PORT = 7001


@contextlib.contextmanager
def default_ports(wait_s: float = 60) -> Iterator[None]:
    """The default ports, free (a minute's wait for someone else's central or terminal to end)."""
    with open(Path(tempfile.gettempdir()) / "clockterm-default-ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        deadline = time.monotonic() + wait_s
        for kind, port in ((socket.SOCK_STREAM, CENTRAL_PORT), (socket.SOCK_DGRAM, SIM_SNTP_PORT),
                           (socket.SOCK_STREAM, CONTROL_PORT)):
            while True:
                with socket.socket(socket.AF_INET, kind) as s:
                    try:
                        s.bind(("127.0.0.1", port))
                        break
                    except OSError as e:
                        if time.monotonic() > deadline:
                            raise AssertionError(f"default port {port} is taken on this machine: {e}") from e
                time.sleep(1)
        yield


def wait_for_line(p: subprocess.Popen[str], text: str, timeout: float = 30) -> str:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line and p.poll() is not None:
            break
        seen += line
        if text in line:
            return line
    raise AssertionError(f"no {text!r} from {p.args}:\n{seen}")


def send(line: str) -> str:
    with socket.create_connection(("127.0.0.1", CONTROL_PORT), timeout=10) as s:
        s.sendall(line.encode() + b"\n")
        return s.makefile("rb").readline().decode().strip()


def status() -> dict[str, Any]:
    return json.loads(send("STATUS"))


def test_the_defaults_work_together(tmp_path: Path) -> None:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([*CLI, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        procs.append(p)
        return p

    with default_ports():
        try:
            wait_for_line(start("central", "serve"), "devices      term-001:")
            wait_for_line(start("timeserver"), "SNTP server on 127.0.0.1:12300")
            r = subprocess.run([*CLI, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and "central: the secret of term-001 and the CA from central/" in r.stderr, r
            (tmp_path / "term.json").write_text(r.stdout)
            r = subprocess.run([*CLI, "config", "--check", "term.json"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.strip() == "term.json: ok", r
            term = start("run", "--config", "term.json", "--state", "st")
            wait_for_line(term, "terminal term-001 up")
            answer = send("TAP 04A1B2C3")
            assert answer.startswith("OK 1 "), answer
            deadline = time.monotonic() + 60
            st = status()
            while time.monotonic() < deadline and not (st["clock"]["synced"] and st["uplink"]["sent"] == 1):
                time.sleep(0.5)
                st = status()
            assert st["clock"]["synced"] and st["sntp"]["servers"][0]["addr"] == "127.0.0.1:12300", st["sntp"]
            assert st["uplink"]["sent"] == 1 and st["uplink"]["last_error"] is None, st["uplink"]
            r = subprocess.run([*CLI, "central", "export"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
            rows = r.stdout.strip().splitlines()
            assert len(rows) == 2 and ",term-001,04A1B2C3," in rows[1], r
        finally:
            for p in procs:
                p.kill()
                p.wait(10)
