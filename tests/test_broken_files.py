"""Broken files never crash a terminal: each file a terminal reads at boot (its config, the central's
overlay, the stored time, the journal and its seq floor, the crash count, the roster, board.json),
damaged in the ways flash and people damage files, is refused with a named reason and what came
before it stays in force; once the file is fixed, the next boot uses it.

Each boot is a sim terminal on the real interpreter under the ESP32's 100 KB heap, its config file
handed to the device as it is (the host's own check, which `clockterm run` makes first, bypassed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import mp
import pytest
from clockterm_host import roster, runner
from clockterm_host.defaults import default_config
from clockterm_host.sim import free_port

HUGE = 100 * 1024


def config(device_id: str, port: int) -> dict[str, Any]:
    cfg = default_config("sim", device_id)
    cfg["sim"]["control_port"] = port
    cfg["sntp"]["port"] = free_port()  # no time server: nothing here waits for one
    cfg["endpoint"]["port"] = free_port()
    cfg["terminal"]["duplicate_window_s"] = 0
    return cfg


class Boots:
    """Boots of one sim terminal (one state folder) from a config file given to the device as it is."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch):
        self.port = free_port()
        self.template = tmp / "template.json"  # what the host reads to start the sim board
        self.template.write_text(json.dumps(config("template", self.port)))
        self.path = tmp / "config.json"  # the file the device reads
        self.state = tmp / "state"
        made = runner.command

        def command(cfg: Path, state: Path) -> tuple[list[str], dict, Path]:
            argv, env, cwd = made(self.template, state)
            env["CLOCKTERM_CONFIG"] = str(self.path)
            return argv, env, cwd

        monkeypatch.setattr(runner, "command", command)

    def boot(self, text: bytes | str | None = None) -> runner.Terminal:
        if text is not None:
            self.path.write_bytes(text.encode() if isinstance(text, str) else text)
        return runner.Terminal(self.template, self.state).start()

    def status_after_boot(self, text: bytes | str | None = None, tap: bool = True) -> dict[str, Any]:
        """Boot, tap once (the tap must be taken), and the STATUS document; then a power cut."""
        term = self.boot(text)
        try:
            if tap:
                answer = term.tap("04A1B2C3")
                assert answer.startswith("OK "), (answer, term.console())
            st = term.status()
            st["console"] = term.console()
            return st
        finally:
            term.stop()


def flash(state: Path, files: dict[str, bytes | None]) -> None:
    """Write (or remove: None) files in a stopped sim terminal's flash, through the device's own
    LittleFS, in pieces (a file may be larger than the interpreter's heap): tests/fsimage_mp.py."""
    fs_kb = mp.bundle.board_config("sim")["flash"]["fs_kb"]
    with tempfile.TemporaryDirectory() as tmp:
        plan = []
        for i, (name, data) in enumerate(files.items()):
            src = None
            if data is not None:
                src = str(Path(tmp) / str(i))
                Path(src).write_bytes(data)
            plan.append([name, src])
        settings = {"OP": "put", "IMAGE": str(state / "fs.bin"), "BLOCKS": fs_kb * 1024 // 4096, "PLAN": plan}
        assert mp.run_mp(mp.script("fsimage_mp.py", settings, "main()")).stdout.strip().endswith("ok")


NESTED = b"[" * 3000 + b"]" * 3000


def broken_configs(good: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    """(what, the file's bytes, what the refusal says)"""
    text = json.dumps(good, indent=1).encode()

    def changed(path: str, value: Any) -> bytes:
        doc = json.loads(text)
        node = doc
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
        return json.dumps(doc).encode()

    return [
        ("invalid UTF-8", text.replace(b'"template"', b'"t\xff\xfe"'), "config: not UTF-8 text"),
        ("100 KB", text + b" " * HUGE, "config: over 8192 bytes"),
        ("deeply nested", NESTED, "config: more than 100 objects and lists"),
        ("a byte order mark", b"\xef\xbb\xbf" + text, "config: starts with a byte order mark"),
        ("NUL bytes", text[:40] + b"\x00\x00" + text[40:], "config: NUL byte at 40"),
        ("erased flash", b"\xff" * 4096, "config: not UTF-8 text"),
        ("empty", b"", "config: not valid JSON"),
        ("cut short", text[: len(text) // 2], "config: not valid JSON"),
        ("a list", b"[1, 2]", "config: expected a JSON object, got list"),
        ("a section of the wrong type", changed("sim", "fast"), "sim: expected object, got string"),
        ("a field of the wrong type", changed("device_id", 5), "device_id: expected string, got int"),
        ("a control character", changed("device_id", "a\r\nX-Evil: 1"), "device_id: control character"),
        ("an impossible address", changed("network.static_ip", "10.0.0.300"),
         "network.static_ip: '10.0.0.300' is not a usable address"),
        ("plain http", changed("central.url", "http://127.0.0.1:8443"), "central.url: must start with https://"),
    ]


def test_broken_config_keeps_the_last_good_one_then_the_fixed_one_loads(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    boots = Boots(tmp_path, monkeypatch)
    good = config("good-id", boots.port)
    st = boots.status_after_boot(json.dumps(good))
    assert st["device_id"] == "good-id" and st["config_error"] is None
    for what, data, says in broken_configs(config("template", boots.port)):
        st = boots.status_after_boot(data)
        assert st["device_id"] == "good-id", (what, st["device_id"])  # the last good config in force
        assert st["config_error"] and st["config_error"].startswith(says), (what, st["config_error"])
        assert "Traceback" not in st["console"] and st["tasks"]["uplink"]["restarts"] == 0, what
    st = boots.status_after_boot(json.dumps(config("fixed-id", boots.port)))
    assert st["device_id"] == "fixed-id" and st["config_error"] is None, st["config_error"]
    assert st["journal"]["last_seq"] == len(broken_configs(good)) + 2  # every boot took its tap


def test_broken_central_overlay_boots_the_local_config_then_the_fixed_one_applies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boots = Boots(tmp_path, monkeypatch)
    boots.status_after_boot(json.dumps(config("local-id", boots.port)))
    for what, data, says in [
        ("100 KB", b'{"tz": "JST-9"}' + b" " * HUGE, "overlay: over 8192 bytes"),
        ("invalid UTF-8", b'{"tz": "JST\xff"}', "overlay: not UTF-8 text"),
        ("deeply nested", NESTED, "overlay: more than 100 objects and lists"),
        ("a field it may not set", b'{"device_id": "evil"}', "device_id: not allowed from central"),
        ("a section of the wrong type", b'{"terminal": [1]}', "terminal: expected an object, got list"),
        ("NUL bytes", b'{"tz": "JST-9"}\x00', "overlay: NUL byte"),
    ]:
        flash(boots.state, {"config.central.json": data})
        st = boots.status_after_boot()
        assert st["device_id"] == "local-id"
        assert st["config_error"].startswith("central overlay refused, local config in force: " + says), \
            (what, st["config_error"])
    flash(boots.state, {"config.central.json": b'{"tz": "JST-9", "terminal": {"duplicate_window_s": 3600}}'})
    term = boots.boot()
    try:
        assert term.tap("04000001").startswith("OK ") and term.tap("04000001") == "DENY duplicate"
        assert term.status()["config_error"] is None and "central overlay applied" in term.console()
    finally:
        term.stop()


def test_broken_stored_time_is_no_stored_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boots = Boots(tmp_path, monkeypatch)
    boots.status_after_boot(json.dumps(config("t", boots.port)))
    for what, data in [
        ("100 KB", b'{"utc_ms": 1790000000000}' + b" " * HUGE),
        ("invalid UTF-8", b'{"utc_ms": 1790000000000, "x": "\xff"}'),
        ("deeply nested", NESTED[:200]),
        ("a string", b'{"utc_ms": "1790000000000"}'),
        ("inf", b'{"utc_ms": 1790000000000, "unc_ms": 1e999}'),
        ("a string sync time", b'{"utc_ms": 1790000000000, "sync_ms": "soon"}'),
        ("a bool", b'{"utc_ms": true}'),
        ("a list", b"[1790000000000]"),
    ]:
        flash(boots.state, {"clock.json": data})
        st = boots.status_after_boot()
        assert st["clock"]["source"] == "rtc", (what, st["clock"])  # the RTC's time, not the file's
        assert "clock.json refused" in st["console"], what
    # Fixed: a stored time ahead of the RTC (which therefore lost power) is the boot time again
    flash(boots.state, {"clock.json": b'{"utc_ms": 4102444800000, "drift_ppb": 0, "unc_ms": 5}'})
    st = boots.status_after_boot()
    assert st["clock"]["source"] == "store" and st["clock"]["utc_ms"] >= 4102444800000, st["clock"]


def test_broken_journal_floor_and_crash_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boots = Boots(tmp_path, monkeypatch)
    boots.status_after_boot(json.dumps(config("j", boots.port)))
    garbage = bytes(range(256)) * 16
    for what, floor, crashes in [
        ("100 KB", b"9" * HUGE, b"9" * HUGE),
        ("over what the journal holds", b"99999999999", b"99999"),
        ("negative", b"-5", b"-5"),
        ("garbage", garbage, garbage),
    ]:
        (boots.state / "journal.bin").write_bytes(garbage * 512)  # its journal gone too: made anew
        flash(boots.state, {"journal.floor": floor, "crashes": crashes})
        st = boots.status_after_boot()  # taken: OK 1 of a new journal, not safe mode
        assert st["journal"]["last_seq"] == 1, (what, st["journal"])
    # Fixed: the floor is honoured by the next journal made, the crash count counts
    (boots.state / "journal.bin").write_bytes(garbage * 512)
    flash(boots.state, {"journal.floor": b"41", "crashes": b"3"})
    term = runner.Terminal(boots.template, boots.state).start(wait=0)
    assert term.proc is not None
    term.proc.wait(20)
    assert term.proc.returncode == 4 and "SAFE MODE (3 crashes in a row)" in term.console()  # the count counts
    term.stop()
    flash(boots.state, {"crashes": None})
    st = boots.status_after_boot()
    assert st["journal"]["last_seq"] == 42, st["journal"]


def test_broken_roster_is_no_roster_then_a_good_one_is_used(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    boots = Boots(tmp_path, monkeypatch)
    boots.status_after_boot(json.dumps(config("r", boots.port)))
    for data, says in [(os.urandom(4800), "roster:"), (b"", "roster: truncated"), (b"\xff" * HUGE, "roster:")]:
        flash(boots.state, {"roster.bin": data})
        st = boots.status_after_boot()
        assert st["roster"]["badges"] == 0 and st["roster"]["error"].startswith(says), st["roster"]
    roster.install_sim(boots.state, roster.read_csv("badge,employee_id,name\n04A1B2C3,E1,Ada L.\n"))
    st = boots.status_after_boot()
    assert st["roster"] == {"badges": 1, "error": None} and "Ada L." in st["console"]


def test_broken_board_json_starts_nothing_and_says_why(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(mp.device_dir("sim"), bundle)
    state = tmp_path / "state"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config("b", free_port())))
    good = (bundle / "board.json").read_bytes()

    def boot() -> subprocess.CompletedProcess[str]:
        argv, env = mp.bundle.launch(bundle, "100K", "import boot\nimport main")
        env.update(CLOCKTERM_CONFIG=str(cfg), CLOCKTERM_STATE=str(state))
        try:
            return subprocess.run(argv, env=env, cwd=bundle, capture_output=True, text=True, timeout=3)
        except subprocess.TimeoutExpired as e:  # it runs: the terminal is up
            return subprocess.CompletedProcess(argv, -1, (e.stdout or b"").decode(), "")

    for data in (b"{", b"\xff" * 100, b"[1]", b'{"board": "sim"}', b'{"board": 5}', good + b" " * HUGE,
                 NESTED):
        (bundle / "board.json").write_bytes(data)
        r = boot()
        assert r.returncode == 0 and "board.json unusable, nothing started" in r.stdout, (data[:20], r)
        assert "Traceback" not in r.stdout + r.stderr
    (bundle / "board.json").write_bytes(good)
    r = boot()
    assert r.returncode == -1 and "terminal b up" in r.stdout, r.stdout
