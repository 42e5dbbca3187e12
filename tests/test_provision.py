"""`clockterm provision --state` for a sim terminal, which then runs against the reference central; secrets
never on the command line; the journal's factory reset refused while it holds unsent punches."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clockterm_host import cli, recover
from clockterm_host.device import DeviceError
from clockterm_host.runner import Terminal
from clockterm_host.sim import free_port
from clockterm_host.sntp_server import SntpServer

CLI = str(Path(sys.executable).parent / "clockterm")


def ct(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, input=input, timeout=120)


def _provision(tmp_path, central, sntp, *extra: str, input: str | None = None) -> subprocess.CompletedProcess:
    if input is None:
        input = central.admin_token + "\n"  # the admin API's token (its state folder's admin.token)
    return ct("provision", "--state", str(tmp_path / "st"), "--device-id", "sim-9", "--central", central.url,
              "--ca", str(central.ca_path), "--register", "--admin", central.admin_url, "--admin-token-file", "-",
              "--sntp", "127.0.0.1", "--sntp-port", str(sntp.port), "--control-port", str(free_port()), *extra,
              input=input)


@pytest.fixture
def sntp():
    s = SntpServer().start()
    yield s
    s.stop()


def _wait(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_provisioned_sim_terminal_syncs_takes_taps_and_uploads(tmp_path, central, sntp):
    r = _provision(tmp_path, central, sntp, "--token", "mon:read", "--tz", "Europe/Berlin")
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = json.loads((tmp_path / "st" / "config.json").read_text())
    assert cfg["tz"] == "CET-1CEST,M3.5.0,M10.5.0/3"
    assert cfg["central"]["client_secret"] == central.store.device("sim-9")["secret"]
    tok = re.search(r"^  mon\s+read\s+(\S+)$", r.stdout, re.M).group(1)
    assert cfg["endpoint"]["tokens"] == [{"sha256": hashlib.sha256(tok.encode()).hexdigest(), "scopes": ["read"],
                                          "name": "mon"}]
    assert (tmp_path / "st" / "config.json").stat().st_mode & 0o077 == 0  # secrets inside: owner only
    t = Terminal(tmp_path / "st" / "config.json", tmp_path / "st").start()
    try:
        _wait(lambda: t.status()["clock"]["synced"])
        assert t.tap("04A1B2C3").startswith("OK 1 ")
        _wait(lambda: t.status()["journal"]["acked_seq"] >= 1)
    finally:
        t.stop()
    assert [p["badge"] for p in central.store.punches("sim-9")] == ["04A1B2C3"]


def test_secrets_are_never_taken_from_the_command_line(capsys):
    for opt in ("--wifi-password", "--client-secret", "--admin-token"):
        with pytest.raises(SystemExit):
            cli.main(["provision", "--state", "x", "--device-id", "d", "--central", "https://c", opt, "secret"])
        assert "unrecognized arguments" in capsys.readouterr().err


def test_a_refused_config_registers_nothing_and_writes_nothing(tmp_path, central, sntp):
    r = _provision(tmp_path, central, sntp, "--tz", "Mars/Olympus_Mons")
    assert r.returncode == 2 and "unknown time zone 'Mars/Olympus_Mons'" in r.stderr
    r = _provision(tmp_path, central, sntp, "--sntp", ",,")
    assert r.returncode == 2 and "the device's validator refused the config: sntp.servers" in r.stderr
    r = _provision(tmp_path, central, sntp, "--token", "a:root")
    assert r.returncode == 2 and "NAME:read or NAME:admin" in r.stderr
    assert central.store.device("sim-9") is None
    assert not (tmp_path / "st" / "config.json").exists()
    # Registered once; a second registration of the same id is refused unless --replace.
    assert _provision(tmp_path, central, sntp).returncode == 0
    first = central.store.device("sim-9")["secret"]
    r = _provision(tmp_path, central, sntp)
    assert r.returncode == 2 and "409" in r.stderr and "--replace" in r.stderr
    assert _provision(tmp_path, central, sntp, "--replace").returncode == 0
    assert central.store.device("sim-9")["secret"] != first


def test_registration_needs_the_admin_api(tmp_path, central, sntp):
    r = ct("provision", "--state", str(tmp_path / "st"), "--device-id", "d1", "--central", central.url,
           "--register", "--admin", "http://127.0.0.1:9", "--admin-token-file", "-", input="t\n")
    assert r.returncode == 2 and "admin API http://127.0.0.1:9 not reachable" in r.stderr


def test_journal_reset_refused_with_unsent_punches_then_forced_after_export(tmp_path, central, sntp):
    assert _provision(tmp_path, central, sntp).returncode == 0
    central.set_faults(error_rate=1.0)  # the central refuses every upload: the punches stay unsent
    t = Terminal(tmp_path / "st" / "config.json", tmp_path / "st").start()
    try:
        _wait(lambda: t.status()["clock"]["synced"])
        for b in ("04A1B2C3", "04D5E6F7", "1234"):
            assert t.tap(b).startswith("OK ")
    finally:
        t.stop()
    st = ["--state", str(tmp_path / "st")]
    r = ct("recover", "status", *st)
    assert "3 unsent" in r.stdout, r.stdout + r.stderr
    old_id = re.search(r"^journal +(\w+):", r.stdout, re.M).group(1)
    r = ct("recover", "reset-journal", *st)
    assert r.returncode == 2 and "holds 3 unsent punches; refused" in r.stderr
    # The board refuses too, whoever asks: without force, and forced with another count than it holds.
    target = recover.Target(None, str(tmp_path / "st"))
    with pytest.raises(DeviceError, match="journal holds 3 unsent punches: export them"):
        target.run("reset_journal()")
    with pytest.raises(DeviceError, match="not the 2 exported"):
        target.run("reset_journal(True, 2)")
    assert "3 unsent" in ct("recover", "status", *st).stdout
    out = tmp_path / "unsent.jsonl"
    r = ct("recover", "reset-journal", *st, "--force", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [(p["seq"], p["badge"], p["journal_id"]) for p in rows] == [
        (1, "04A1B2C3", old_id), (2, "04D5E6F7", old_id), (3, "1234", old_id)]
    assert all(p["quality"] == "synced" for p in rows)
    r = ct("recover", "status", *st)
    new_id = re.search(r"^journal +(\w+): last seq (\d+)", r.stdout, re.M)
    assert new_id.group(1) != old_id and new_id.group(2) == "3" and "0 unsent" in r.stdout
    # The terminal runs on; the next punch's seq is never one used before.
    central.set_faults(error_rate=0.0)
    t = Terminal(tmp_path / "st" / "config.json", tmp_path / "st").start()
    try:
        assert t.tap("04A1B2C3").startswith("OK 4 ")
    finally:
        t.stop()


def test_recover_on_a_sim_state_clears_crashes_and_restores_the_config(tmp_path, central, sntp):
    assert _provision(tmp_path, central, sntp).returncode == 0
    t = Terminal(tmp_path / "st" / "config.json", tmp_path / "st").start()  # a good boot keeps a good copy
    t.stop()
    st = ["--state", str(tmp_path / "st")]
    assert "crash count    0" in ct("recover", "status", *st).stdout
    cfg = tmp_path / "st" / "config.json"
    good = cfg.read_text()
    cfg.write_text('{"version": 2}')
    r = ct("recover", "status", *st)
    assert "config         version: 2 is out of range 1..1" in r.stdout, r.stdout + r.stderr
    r = ct("recover", "restore-config", *st)
    # The sim board keeps the last good config in its flash image, as a board does: put back in force
    assert r.returncode == 0, r.stdout + r.stderr
    assert cfg.read_text() == good and (tmp_path / "st" / "config.bad.json").read_text() == '{"version": 2}'
    r = ct("recover", "status", *st)
    assert "config         ok" in r.stdout and "last good      ok" in r.stdout, r.stdout
