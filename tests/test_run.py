"""A terminal run on the host from a config and state folder: taps, power cuts, bad configs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
from clockterm_host.cli import check_config
from clockterm_host.defaults import default_config
from clockterm_host.runner import Terminal
from clockterm_host.sim import free_port

OK_RE = re.compile(r"^OK (\d+) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)$")


def make_config(tmp_path, **sim) -> os.PathLike:
    cfg = default_config("sim")
    cfg["sim"]["control_port"] = free_port()
    cfg["sntp"]["port"] = free_port()  # no time server: taps must not wait for one
    cfg["sim"].update(sim)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture
def terminal(tmp_path):
    term = Terminal(make_config(tmp_path), tmp_path / "state")
    yield term
    term.stop()


def test_tap_kill_restart(terminal):
    terminal.start()
    m = OK_RE.match(terminal.tap("04A1B2C3"))
    assert m and m.group(1) == "1", terminal.console()
    terminal.kill()  # power cut
    terminal.start()
    m = OK_RE.match(terminal.tap("04A1B2C3"))
    assert m and m.group(1) == "2", terminal.console()
    status = terminal.status()
    assert status["journal"]["last_seq"] == 2
    assert status["device_id"] == "term-001"
    assert status["heap"]["free"] > 0


def test_duplicate_window_and_bad_input(terminal):
    terminal.start()
    assert terminal.tap("04A1B2C3").startswith("OK 1 ")
    assert terminal.tap("04a1b2c3") == "DENY duplicate"
    assert terminal.tap("NOT*A*BADGE") == "ERR bad badge"
    assert terminal.send("HELLO") == "ERR bad command"
    assert terminal.send("TAP") == "ERR bad command"
    assert terminal.tap("0123456789ABCDEF0123456789") == "ERR bad badge"
    # An over-long line is refused without being held in memory; the connection goes on.
    with socket.create_connection(("127.0.0.1", terminal.control_port), timeout=5) as s:
        s.sendall(b"TAP " + b"A" * 50000 + b"\nTAP 04000001\n")
        f = s.makefile("rb")
        assert f.readline() == b"ERR line too long\n"
        assert f.readline().startswith(b"OK 2 ")
    assert terminal.tap("04FFFFFF").startswith("OK 3 ")
    counts = terminal.status()["terminal"]["counts"]
    assert counts["ok"] == 3 and counts["duplicate"] == 1 and counts["bad"] == 2


def test_console_shows_feedback(terminal):
    terminal.start()
    terminal.tap("04A1B2C3")
    terminal.tap("04A1B2C3")
    out = terminal.console()
    assert re.search(r"\[display\] \d\d:\d\d UNKNOWN BADGE 04A1B2C3  \[beep:ok\]", out), out
    assert "[display] ALREADY DONE  [beep:dup]" in out


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clockterm_host.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.pop("device_id"), "device_id: missing"),
    (lambda c: c["sntp"].update(port="123"), "sntp.port: expected int, got string"),
    (lambda c: c["terminal"].update(duplicate_window_s=-1), "terminal.duplicate_window_s: -1 is out of range"),
])
def test_run_refuses_bad_config(tmp_path, mutate, message):
    cfg = default_config("sim")
    mutate(cfg)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    r = _cli("run", "--config", str(path), "--state", str(tmp_path / "s"))
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_run_refuses_broken_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"board": "sim", ')
    r = _cli("run", "--config", str(path), "--state", str(tmp_path / "s"))
    assert r.returncode == 2 and "config: not valid JSON" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_device_refuses_bad_config_itself(tmp_path):
    # Started directly (no host pre-check), the device's own loader names the field and exits 2.
    cfg = default_config("sim")
    cfg["sim"]["control_port"] = free_port()
    cfg["tz"] = 5
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    term = Terminal(path, tmp_path / "state")
    with pytest.raises(RuntimeError, match="tz: expected string, got int"):
        term.start(wait=20)
    assert term.proc.returncode == 2
    term.stop()


def test_config_command_prints_a_config_run_accepts(tmp_path):
    r = _cli("config", "--board", "sim", cwd=tmp_path)
    assert r.returncode == 0
    cfg = json.loads(r.stdout)
    for field in (("sim", "control_port"), ("endpoint", "port"), ("sntp", "servers"), ("central", "url"),
                  ("sim", "rtc_offset_ms"), ("sim", "rtc_drift_ppm")):
        assert field[1] in cfg[field[0]]
    cfg["sim"]["control_port"] = free_port()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    assert check_config(path) == (True, "ok")  # what `run` takes
    # `config --check` wants the central's secret too: printed beside no central (stderr said so), it is
    # empty (with one, see test_defaults)
    r = _cli("config", "--check", str(path))
    assert r.returncode == 2 and "central.client_secret: empty" in r.stderr, r
    term = Terminal(path, tmp_path / "state")
    try:
        term.start()
        assert term.tap("12345678").startswith("OK 1 ")
    finally:
        term.stop()
