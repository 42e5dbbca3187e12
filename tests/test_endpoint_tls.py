"""The device endpoint over HTTPS: `clockterm provision --endpoint-cert/--endpoint-key` puts a certificate
on a sim terminal, which then serves its API with TLS (verified against the CA that signed it, host name
included); plain HTTP is served only when the config allows it, and a config that allows neither keeps
the endpoint off, said in the log, the terminal clocking all the same. `clockterm check --url` reads the
terminal through it."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import trustme
from clockterm_host.runner import Terminal
from clockterm_host.sim import free_port
from clockterm_host.sntp_server import SntpServer

CLI = str(Path(sys.executable).parent / "clockterm")


def ct(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, input=input, timeout=120)


@pytest.fixture
def sntp():
    s = SntpServer().start()
    yield s
    s.stop()


def _provision(tmp_path: Path, central, sntp, *extra: str) -> subprocess.CompletedProcess:
    return ct("provision", "--state", str(tmp_path / "st"), "--device-id", "sim-9", "--central", central.url,
              "--ca", str(central.ca_path), "--register", "--admin", central.admin_url, "--admin-token-file", "-",
              "--sntp", "127.0.0.1", "--sntp-port", str(sntp.port), "--control-port", str(free_port()), *extra,
              input=central.admin_token + "\n")


def _get(url: str, token: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """A GET as a client makes it: a 503 (not enough memory for this answer now: try again, as
    docs/device-api.yaml says; a config document over TLS right after boot may meet it) tried again."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    for _ in range(5):
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            code, body = e.code, e.read()
        if code != 503:
            break
        time.sleep(0.3)
    return code, body


def test_https_endpoint_from_provisioned_certificate(tmp_path, central, sntp):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "ep.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "ep.key"))
    port = free_port()
    r = _provision(tmp_path, central, sntp, "--token", "mon:read", "--token", "ops:admin",
                   "--endpoint-cert", str(tmp_path / "ep.crt"), "--endpoint-key", str(tmp_path / "ep.key"),
                   "--endpoint-port", str(port))
    assert r.returncode == 0, r.stdout + r.stderr
    tokens = dict(re.findall(r"^  (\w+)\s+(?:read|admin)\s+(\S+)$", r.stdout, re.M))
    st = tmp_path / "st"
    cfg = json.loads((st / "config.json").read_text())
    assert cfg["endpoint"]["port"] == port and not cfg["endpoint"]["allow_plain_http"]
    assert (st / "endpoint.key").stat().st_mode & 0o077 == 0  # the key: owner only
    term = Terminal(st / "config.json", st).start()
    try:
        client = ssl.create_default_context()
        ca.configure_trust(client)
        base = f"https://localhost:{port}/api/v1"
        code, body = _get(base + "/status", tokens["mon"], client)
        assert code == 200 and json.loads(body)["device_id"] == "sim-9"
        assert _get(base + "/config", tokens["mon"], client)[0] == 403  # a read token on an admin route
        code, body = _get(base + "/config", tokens["ops"], client)
        assert code == 200 and tokens["ops"] not in body.decode()
        # Another CA's client refuses the terminal's certificate; plain HTTP on the TLS port gets nothing.
        with pytest.raises(urllib.error.URLError):
            _get(base + "/status", tokens["mon"], ssl.create_default_context())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                data = s.recv(100)
            except OSError:
                data = b""
            assert not data.startswith(b"HTTP/1.1 200")
        # The technician's check over the network, against the real terminal: the system's CAs do not
        # know this one (said, not a crash); with --ca it reads the status.
        r = ct("check", "--url", f"https://localhost:{port}", "--token-file", "-", "--json",
               input=tokens["mon"] + "\n")
        assert r.returncode == 2 and "certificate" in r.stderr.lower(), r.stdout + r.stderr
        ca.cert_pem.write_to_path(str(tmp_path / "ep-ca.pem"))
        r = ct("check", "--url", f"https://localhost:{port}", "--token-file", "-", "--json", "--ca",
               str(tmp_path / "ep-ca.pem"), input=tokens["mon"] + "\n")
        doc = json.loads(r.stdout)
        assert doc["status"]["device_id"] == "sim-9", r.stdout + r.stderr
        assert r.returncode == (1 if doc["attention"] else 0), r.stdout + r.stderr  # as the screen's last line
        assert term.tap("04A1B2C3").startswith("OK 1 ")  # taps go on beside it
    finally:
        term.stop()


def test_endpoint_without_tls_or_permission_stays_off_and_taps_go_on(tmp_path, central, sntp):
    port = free_port()
    r = _provision(tmp_path, central, sntp, "--token", "mon:read", "--endpoint-port", str(port))
    assert r.returncode == 2 and "--endpoint-plain-http" in r.stderr  # provision refuses it up front
    r = _provision(tmp_path, central, sntp, "--token", "mon:read", "--endpoint-plain-http", "--endpoint-port",
                   str(port))
    assert r.returncode == 0, r.stderr
    st = tmp_path / "st"
    cfg = json.loads((st / "config.json").read_text())
    cfg["endpoint"]["allow_plain_http"] = False  # a hand-edited config: neither TLS nor plain HTTP allowed
    (st / "config.json").write_text(json.dumps(cfg))
    term = Terminal(st / "config.json", st).start()
    try:
        assert term.tap("04A1B2C3").startswith("OK 1 ")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        deadline = time.monotonic() + 10
        while "endpoint: not started" not in term.console():
            assert time.monotonic() < deadline, term.console()
            time.sleep(0.1)
        assert any("endpoint" in e for e in term.status()["errors"])
    finally:
        term.stop()
