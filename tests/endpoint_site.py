"""A sim terminal with its device endpoint on (plain HTTP on 127.0.0.1), for the endpoint's tests and
benches: its tokens, a config, a client over http.client (Api), and the terminal with its central
started and stopped together (open_site)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import e2e
import rawhttp
import trustme
from rawhttp import Answer

READ = "rd-7Qk2mZp9Lx4vNc8Tb1Ws"  # a plaintext entry in the config (the device hashes it)
ADMIN = "ad-Hf3Jr6Yu0Ei5Ok8Pa2Sd"  # kept as its SHA-256, as provision writes it
WIFI = "wifi-Zx9Cv8Bn7Mq6"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Api:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, token: str | None = READ, body: bytes | str | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        """One request on a connection of its own; path from /api/v1 on (with its query)."""
        h = {"Authorization": f"Bearer {token}"} if token else {}
        h.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, "/api/v1" + path, body=body.encode() if isinstance(body, str) else body,
                         headers=h)
            r = conn.getresponse()
            data = r.read()
            pairs = r.getheaders()
        finally:
            conn.close()
        return Answer(r.status, {k.lower(): v for k, v in pairs}, data, [k for k, _ in pairs])

    def busy(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             tries: list | None = None) -> Answer:
        """An admin request as a client makes it: a 503 ("not enough memory now: try again") tried
        again, up to five times (each try noted in tries as (method, path, try, status))."""
        for n in range(1, 6):
            a = self.call(method, path, ADMIN, body, headers)
            if tries is not None:
                tries.append((method, path, n, a.status))
            if a.status != 503:
                break
            time.sleep(0.3)
        return a

    def raw(self, data: bytes, wait: float = 5.0) -> bytes:
        """rawhttp.exchange with this terminal."""
        return rawhttp.exchange(self.port, data, wait)


@dataclass
class Site:
    term: Any
    api: Api
    config_path: Path
    central: Any
    tmp: Path


def site_config(central: Any, sntp_port: int | None, plain: bool = True) -> dict:
    """plain: the read token as a plaintext entry (an older config), else as its hash."""
    cfg = e2e.config(sntp_port, server=central)
    cfg["endpoint"].update(port=e2e.free_port(), allow_plain_http=True, tokens=[
        {"name": "monitoring", "token": READ, "scopes": ["read"]} if plain else
        {"name": "monitoring", "sha256": sha(READ), "scopes": ["read"]},
        {"name": "ops", "sha256": sha(ADMIN), "scopes": ["read", "admin"]}])
    cfg["network"]["wifi_password"] = WIFI
    # A resync round in well under a second (4 samples 100 ms apart, each server may be polled again
    # after a second): the resync test need not wait out the default limits.
    cfg["sntp"].update(min_poll_s=1, burst_gap_ms=100)
    return cfg


@contextlib.contextmanager
def open_site(tmp: Path, sntp_port: int | None, plain: bool = True, client: type[Api] = Api,
              endpoint: dict | None = None, sim: dict | None = None) -> Iterator[Site]:
    """A terminal with the endpoint on and its own reference central, stopped on the way out; sntp_port
    None: no time server (the clock stays unsynced). client: the Api class the Site's api is made of;
    endpoint: settings over the config's endpoint section (cert and key: HTTPS); sim: over its sim
    section (the simulated RTC's offset, say)."""
    central = e2e.start_central(tmp)
    term = None
    try:
        cfg = site_config(central, sntp_port, plain)
        cfg["endpoint"].update(endpoint or {})
        cfg["sim"].update(sim or {})
        term = e2e.terminal(tmp, cfg)
        api = client(json.loads((tmp / "config.json").read_text())["endpoint"]["port"])
        yield Site(term, api, tmp / "config.json", central, tmp)
    finally:
        if term is not None:
            term.stop()
        central.stop()


def https_only(tmp: Path) -> tuple[dict, ssl.SSLContext]:
    """Endpoint settings for HTTPS only (a certificate for localhost and 127.0.0.1 from a CA of the
    caller's own, its files in tmp), and a client context that trusts that CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp / "ep.crt"))
    cert.private_key_pem.write_to_path(str(tmp / "ep.key"))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return {"cert": str(tmp / "ep.crt"), "key": str(tmp / "ep.key"), "allow_plain_http": False}, ctx


def tap_ok(term: Any, badge: str) -> tuple[int, int]:
    return e2e.ok_parts(term.tap(badge))
