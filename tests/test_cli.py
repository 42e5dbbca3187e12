"""The CLI with a user's mistakes: each gets a clear message naming what is wrong and exit code 2, never
a Python traceback; `clockterm config --check` refuses what the device refuses and more (what only the
host can know), and takes time zones by name."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clockterm_host.defaults import default_config
from clockterm_host.sim import free_port


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clockterm_host.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def refused(r: subprocess.CompletedProcess[str], says: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 2 and says in out, (r.returncode, out)
    assert "Traceback" not in out, out


def usable(tmp: Path, board: str = "sim") -> dict[str, Any]:
    """A config `config --check` passes: the central's secret and a CA file filled in."""
    cfg = default_config(board, "term-7")
    cfg["central"]["client_secret"] = "s3cret"
    (tmp / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    cfg["central"]["ca"] = "ca.pem"
    if board != "sim":
        cfg["network"].update(wifi_ssid="office", wifi_password="pw")
    return cfg


def change(path: str, value: Any, delete: bool = False) -> Callable[[dict[str, Any]], None]:
    def do(cfg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if delete:
            del node[last]
        else:
            node[last] = value
    return do


CHECKS = [  # (board, change, what the refusal says)
    ("sim", change("board", "esp33"), "board: unknown board 'esp33' (known: esp32-devkitc-rc522"),
    ("sim", change("sntp.intervall_s", 60), "sntp.intervall_s: unknown field (did you mean sntp.interval_s?)"),
    ("sim", change("devise_id", "x"), "devise_id: unknown field (did you mean device_id?)"),
    ("sim", change("termnal", {}), "termnal: unknown field (did you mean terminal?)"),
    ("sim", change("central.client_secret", ""), "central.client_secret: empty"),
    ("sim", change("central.client_id", ""), "central.client_id: empty"),
    ("sim", change("central.ca", None), "central.ca: missing"),
    ("sim", change("central.ca", "nowhere/ca.pem"), "central.ca: no file"),
    ("sim", change("central.url", "http://localhost:8443"), "central.url: must start with https://"),
    ("sim", change("central.url", "https://localhost:0"), "central.url: 'localhost:0' is not a usable address"),
    ("sim", change("sntp.servers", ["300.1.1.1"]), "sntp.servers[0]: '300.1.1.1' is not a usable address"),
    ("sim", change("network.dns", "8.8.8.888"), "network.dns: '8.8.8.888' is not a usable address"),
    ("sim", change("tz", "Europe/Nowhere"), "tz: unknown time zone 'Europe/Nowhere'"),
    ("sim", change("device_id", None, delete=True), "device_id: missing"),
    ("esp32-devkitc-rc522", change("network.wifi_ssid", ""),
     "network.wifi_ssid: empty, and board esp32-devkitc-rc522 connects over Wi-Fi"),
    ("esp32-devkitc-rc522", change("network.wifi_password", ""), "network.wifi_password: empty"),
]


@pytest.mark.parametrize(("board", "mutate", "says"), CHECKS, ids=[c[2].split(":")[0] for c in CHECKS])
def test_config_check_names_the_field(tmp_path: Path, board: str, mutate: Callable[[dict[str, Any]], None],
                                      says: str) -> None:
    cfg = usable(tmp_path, board)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    r = cli("config", "--check", str(path))
    assert r.returncode == 0 and r.stdout.strip().endswith("c.json: ok"), r.stdout + r.stderr
    mutate(cfg)
    path.write_text(json.dumps(cfg))
    refused(cli("config", "--check", str(path)), f"c.json: {says}")


@pytest.mark.parametrize(("data", "says"), [
    (b"\xef\xbb\xbf{}", "config: starts with a byte order mark"),
    (b'{"board": "sim", "tz": "\xff"}', "config: not UTF-8 text (byte 24)"),
    (b'{"board": "sim",', "config: not valid JSON (Expecting property name enclosed in double quotes: line 1"),
    (b"[]", "config: expected a JSON object, got list"),
])
def test_config_check_refuses_broken_files(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(data)
    refused(cli("config", "--check", str(path)), says)
    refused(cli("run", "--config", str(path), "--state", str(tmp_path / "st")), says)


def test_config_check_takes_a_time_zone_by_name(tmp_path: Path) -> None:
    cfg = usable(tmp_path)
    cfg["tz"] = "America/Sao_Paulo"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    r = cli("config", "--check", str(path))
    assert r.returncode == 0 and "tz: America/Sao_Paulo is <-03>3 (the rule the terminal runs on)" in r.stdout, r


def test_run_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    esp = default_config("esp32-devkitc-rc522")
    (tmp_path / "esp.json").write_text(json.dumps(esp))
    refused(cli("run", "--config", str(tmp_path / "esp.json"), "--state", str(tmp_path / "st")),
            "board esp32-devkitc-rc522: `clockterm run` runs the sim board on this machine")
    cfg = default_config("sim")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        cfg["sim"]["control_port"] = busy.getsockname()[1]
        (tmp_path / "sim.json").write_text(json.dumps(cfg))
        refused(cli("run", "--config", str(tmp_path / "sim.json"), "--state", str(tmp_path / "st")),
                f"sim.control_port {cfg['sim']['control_port']} is in use")
    (tmp_path / "file").write_text("")
    cfg["sim"]["control_port"] = free_port()
    (tmp_path / "sim.json").write_text(json.dumps(cfg))
    refused(cli("run", "--config", str(tmp_path / "sim.json"), "--state", str(tmp_path / "file" / "st")),
            "state folder")


def test_commands_with_bad_input_say_why(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_bytes(b"badge,employee_id,name\nA\xff,E1,x\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        cases = [
            (("config", "--board", "esp33"), "unknown board 'esp33'"),
            (("bundle", "--board", "esp33"), "unknown board 'esp33'"),
            (("central", "serve", "--state", str(tmp_path / "c"), "--port", port),
             f"cannot listen on 127.0.0.1:{port}: Address already in use"),
            (("central", "serve", "--state", str(tmp_path / "c"), "--port", "70000"), "'70000' is not a port"),
            (("central", "serve", "--state", str(tmp_path / "bad.csv" / "x")), "state folder"),
            (("central", "serve", "--state", str(tmp_path / "c"), "--devices", ":pw"), "':pw' has no device id"),
            (("central", "export", "--state", str(tmp_path / "none")), "no central database in"),
            (("central", "roster", "import", "--state", str(tmp_path / "c"), str(tmp_path / "nope.csv")),
             "nope.csv: No such file or directory"),
            (("central", "roster", "import", "--state", str(tmp_path / "c"), str(tmp_path / "bad.csv")),
             "line 2: not UTF-8 (byte 0xff)"),
            (("roster", "install", "--state", str(tmp_path / "st"), "--csv", str(tmp_path / "bad.csv")),
             "line 2: not UTF-8 (byte 0xff)"),
            (("timeserver", "--port", "x"), "'x' is not a port"),
        ]
        for args, says in cases:
            refused(cli(*args, timeout=30), says)
    # An export into a folder that is not there
    from clockterm_host.central.store import Store

    (tmp_path / "c2").mkdir()
    Store(tmp_path / "c2" / "central.db").close()
    refused(cli("central", "export", "--state", str(tmp_path / "c2"), "-o", str(tmp_path / "none" / "out.csv")),
            f"cannot write {tmp_path / 'none' / 'out.csv'}: No such file or directory")
