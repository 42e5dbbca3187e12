"""`clockterm provision`: give a terminal its identity, network, central, time and endpoint tokens.

The config is built here from the board's defaults and the options, checked by the device's own
validator (lib/clockterm/config.py on the unix port: the same code the board runs) and written
atomically: on a board over its serial port (/config.json and /ca.pem, each through a temporary file
and a rename, then a reset), or into a sim terminal's state folder (config.json, ca.pem) for
`clockterm run`.

Secrets never come from the command line (it shows in `ps` and shell history): the Wi-Fi password and
the client secret are read from a file (`--wifi-password-file F`, `-` for stdin) or asked at a prompt.
With `--register` the central makes the device's client secret (admin API, `POST /devices`, with the
admin token from `--admin-token-file`), so it is created on both sides and never typed. Endpoint
tokens are generated here, printed once, and stored in the config only as their SHA-256.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from . import bundle, tznames
from .defaults import default_config

SCOPES = {"read": ["read"], "admin": ["read", "admin"]}
TOKEN_BYTES = 24  # 32 characters of URL-safe base64: 192 bits
ENDPOINT_CERT = "endpoint.crt"  # the endpoint's TLS certificate and key on the device, beside the config
ENDPOINT_KEY = "endpoint.key"


class ProvisionError(SystemExit):
    """Provisioning cannot go on: the message says why; nothing was written."""


def read_secret(what: str, path: str | None, stdin=None) -> str:
    """A secret from a file, from stdin ('-'), or from a prompt on a terminal; never from argv."""
    if path == "-":
        val = (stdin or sys.stdin).readline().rstrip("\r\n")
    elif path:
        try:
            val = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise ProvisionError(f"{what}: cannot read {path}: {e.strerror}") from None
    elif sys.stdin.isatty():
        val = getpass.getpass(f"{what}: ")
    else:
        raise ProvisionError(f"{what}: give it in a file (--{what.replace(' ', '-')}-file FILE, or - for stdin); "
                             "not on the command line")
    if "\n" in val:
        raise ProvisionError(f"{what}: one line expected")
    return val


def make_tokens(specs: list[str]) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Endpoint tokens from NAME:read|admin specs: (config entries with the hash, [(name, scope, token)])."""
    entries, shown = [], []
    names = set()
    for spec in specs:
        name, _, scope = spec.partition(":")
        if not name or scope not in SCOPES or name in names or len(name) > 32:
            raise ProvisionError(f"--token {spec!r}: expected NAME:read or NAME:admin, each NAME once, "
                                 "at most 32 characters")
        names.add(name)
        tok = secrets.token_urlsafe(TOKEN_BYTES)
        entries.append({"sha256": hashlib.sha256(tok.encode()).hexdigest(), "scopes": SCOPES[scope], "name": name})
        shown.append((name, scope, tok))
    return entries, shown


def register_device(admin_url: str, admin_token: str, device_id: str, replace: bool = False) -> str:
    """Register the device at the central's admin API; returns its new client secret."""
    body = json.dumps({"device_id": device_id, "replace": replace}).encode()
    req = Request(admin_url.rstrip("/") + "/devices", data=body, method="POST",
                  headers={"Content-Type": "application/json", "Authorization": f"Bearer {admin_token}"})
    try:
        with urlopen(req, timeout=15) as r:
            return json.loads(r.read())["client_secret"]
    except HTTPError as e:
        detail = e.read().decode(errors="replace")[:300]
        hint = " (--replace gives it a new secret)" if e.code == 409 else ""
        raise ProvisionError(f"register {device_id}: the central answered {e.code}: {detail}{hint}") from None
    except (URLError, OSError, ValueError, KeyError) as e:
        raise ProvisionError(f"register {device_id}: admin API {admin_url} not reachable ({e})") from None


def build_config(a: argparse.Namespace, client_secret: str, wifi_password: str | None,
                 tokens: list[dict]) -> dict:
    cfg = default_config(a.board, a.device_id)
    try:
        cfg["tz"] = tznames.resolve(a.tz)
    except tznames.TZNameError as e:
        raise ProvisionError(f"--tz: {e}") from None
    if a.sntp:
        cfg["sntp"]["servers"] = [s.strip() for s in a.sntp.split(",") if s.strip()]
    if a.sntp_port:
        cfg["sntp"]["port"] = a.sntp_port
    cfg["central"].update(url=a.central, client_id=a.device_id, client_secret=client_secret,
                          ca="ca.pem" if a.ca else None)
    ep = cfg["endpoint"]
    ep["tokens"] = tokens
    tls = bool(a.endpoint_cert or a.endpoint_key)
    if tls and not (a.endpoint_cert and a.endpoint_key):
        raise ProvisionError("--endpoint-cert and --endpoint-key go together")
    if tls and a.endpoint_plain_http:
        raise ProvisionError("--endpoint-plain-http or a certificate and key, not both")
    if tls:
        ep.update(cert=ENDPOINT_CERT, key=ENDPOINT_KEY)
    ep["allow_plain_http"] = bool(a.endpoint_plain_http)
    ep["health_public"] = bool(a.health_public)
    if a.endpoint_port is not None:
        ep["port"] = a.endpoint_port
    elif tls or a.endpoint_plain_http:
        ep["port"] = 443 if tls else 80
    if ep["port"] and not (tls or a.endpoint_plain_http):
        raise ProvisionError("the endpoint needs --endpoint-cert and --endpoint-key (HTTPS), or "
                             "--endpoint-plain-http on a network that is yours")
    if ep["port"] and not tokens:
        raise ProvisionError("the endpoint needs at least one --token NAME:read|admin")
    net = cfg["network"]
    net.update(wifi_ssid=a.wifi_ssid or "", wifi_password=wifi_password or "", static_ip=a.static_ip,
               gateway=a.gateway, dns=a.dns)
    if a.board == "sim" and a.control_port:
        cfg["sim"]["control_port"] = a.control_port
    return cfg


def _check(cfg: dict, board: str) -> None:
    from .cli import check_config

    with tempfile.TemporaryDirectory(prefix="provision-") as d:
        p = Path(d) / "config.json"
        p.write_text(json.dumps(cfg))
        ok, msg = check_config(p, board)
    if not ok:
        raise ProvisionError(f"the device's validator refused the config: {msg}")


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_state(state: Path, cfg: dict, ca: bytes | None) -> Path:
    """A sim terminal's state folder: config.json (and ca.pem, named by its absolute path in the config)."""
    state.mkdir(parents=True, exist_ok=True)
    if ca is not None:
        _write_atomic(state / "ca.pem", ca, 0o644)
        cfg["central"]["ca"] = str((state / "ca.pem").resolve())
    _write_atomic(state / "config.json", json.dumps(cfg, indent=2).encode())
    return state / "config.json"


def write_board(port: str, cfg: dict, ca: bytes | None, restart: bool = True, extra: dict | None = None) -> None:
    """/ca.pem, the endpoint's certificate and key (extra: {path: bytes}) and /config.json on the board,
    each through a temporary file and a rename; then a reset."""
    from .device import Session, sha256_hex

    s = Session(port)
    try:
        # Written from a fresh interpreter (boot.py run, the app not started), not beside an app that
        # the session's Ctrl-C stopped half-way, with its files open
        s.soft_reset()
        files = dict(extra or {})
        if ca is not None:
            files["/ca.pem"] = ca
        # The config last: it is never in force without the files it names
        files["/config.json"] = json.dumps(cfg, separators=(",", ":")).encode()
        for path, data in files.items():
            s.write(path, data)
        theirs = s.hashes(list(files))
        bad = [p for p, d in files.items() if theirs.get(p) != sha256_hex(d)]
        if bad:
            raise ProvisionError(f"written but not read back the same: {', '.join(bad)}")
    except BaseException:
        s.close()
        raise
    if restart:
        s.restart()
    else:
        s.close()


def read_pem(what: str, path: str, marker: bytes) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ProvisionError(f"{what}: cannot read {path}: {e.strerror}") from None
    if marker not in data:
        raise ProvisionError(f"{what}: {path} is not a PEM {marker.decode().strip('-')}")
    return data


def provision(a: argparse.Namespace) -> int:
    if a.board != "sim" and a.state:
        raise ProvisionError("--state provisions a sim terminal: use --board sim with it")
    bundle.board_config(a.board)  # an unknown board stops here
    ca = None
    if a.ca:
        try:
            ca = Path(a.ca).read_bytes()
        except OSError as e:
            raise ProvisionError(f"--ca: cannot read {a.ca}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in ca:
            raise ProvisionError(f"--ca: {a.ca} is not a PEM certificate")
    extra = {}
    if a.endpoint_cert and a.endpoint_key:
        extra["/" + ENDPOINT_CERT] = read_pem("--endpoint-cert", a.endpoint_cert, b"-----BEGIN CERTIFICATE-----")
        extra["/" + ENDPOINT_KEY] = read_pem("--endpoint-key", a.endpoint_key, b"PRIVATE KEY-----")
    wifi_pw = read_secret("wifi password", a.wifi_password_file) if a.wifi_ssid else None
    tokens, shown = make_tokens(a.token)
    if a.register:
        if not a.admin:
            raise ProvisionError("--register needs --admin URL (the central's admin API)")
        admin_token = read_secret("admin token", a.admin_token_file)
        pending = None
    else:
        admin_token = None
        pending = read_secret("client secret", a.client_secret_file)
    # Validate with a stand-in secret first: a refused config must not leave a device registered.
    cfg = build_config(a, pending or "x" * 24, wifi_pw, tokens)
    _check(cfg, a.board)
    if a.register:
        cfg["central"]["client_secret"] = register_device(a.admin, admin_token, a.device_id, a.replace)
        print(f"{a.device_id}: registered at the central; its client secret is in the config only")
    if a.state:
        Path(a.state).mkdir(parents=True, exist_ok=True)
        for name, data in extra.items():
            _write_atomic(Path(a.state) / name[1:], data, 0o600)
            cfg["endpoint"]["cert" if name[1:] == ENDPOINT_CERT else "key"] = str((Path(a.state) / name[1:]).resolve())
        path = write_state(Path(a.state), cfg, ca)
        print(f"{path}: written; run it with: clockterm run --config {path} --state {a.state}")
    else:
        write_board(a.port, cfg, ca, restart=not a.no_restart, extra=extra)
        print(f"{a.port}: /config.json{' and /ca.pem' if ca else ''} written and read back; the terminal restarts. "
              f"Next: clockterm check --port {a.port}")
    if shown:
        print("Endpoint tokens (shown once, kept nowhere: store them now; the device keeps only their SHA-256):")
        for name, scope, tok in shown:
            print(f"  {name:<16} {scope:<6} {tok}")
    return 0


def cmd_provision(a: argparse.Namespace) -> int:
    try:
        return provision(a)
    except ProvisionError as e:
        print(f"provision: {e.code}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # DeviceError: the board did not answer
        print(f"provision: {e}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("provision", help="device id, network, central and credentials, time zone, time servers, "
                                         "endpoint tokens: validated, then written on the board (or a sim state)",
                          allow_abbrev=False)  # "--wifi-password X" must not pass as --wifi-password-file X
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of a deployed board")
    where.add_argument("--state", help="state folder of a sim terminal (with --board sim)")
    s.add_argument("--board", default="sim", help="board config name (default sim)")
    s.add_argument("--device-id", required=True)
    s.add_argument("--central", required=True, help="the central API's URL (https://...)")
    s.add_argument("--ca", help="the central's CA certificate (PEM), copied to the device")
    s.add_argument("--register", action="store_true", help="register the device at the central (admin API)")
    s.add_argument("--replace", action="store_true", help="with --register: give a known device a new secret")
    s.add_argument("--admin", help="the central's admin API URL (loopback on the central's host)")
    s.add_argument("--admin-token-file", help="file with the central's admin token (- for stdin)")
    s.add_argument("--client-secret-file", help="without --register: file with the client secret (- for stdin)")
    s.add_argument("--wifi-ssid")
    s.add_argument("--wifi-password-file", help="file with the Wi-Fi password (- for stdin); else a prompt")
    s.add_argument("--static-ip", help="A.B.C.D/N (default: DHCP)")
    s.add_argument("--gateway")
    s.add_argument("--dns")
    s.add_argument("--tz", default="Europe/Berlin", help="IANA name (Europe/Berlin) or a POSIX TZ rule")
    s.add_argument("--sntp", help="time servers, comma-separated (default pool.ntp.org)")
    s.add_argument("--sntp-port", type=int, help=argparse.SUPPRESS)  # a lab's SNTP server on another port
    s.add_argument("--token", action="append", default=[], metavar="NAME:SCOPE",
                   help="an endpoint token to generate, scope read or admin (repeatable)")
    s.add_argument("--endpoint-port", type=int, help="default 443 with a certificate, 80 with plain HTTP")
    s.add_argument("--endpoint-cert", metavar="PEM", help="the endpoint's TLS certificate (chain), copied over")
    s.add_argument("--endpoint-key", metavar="PEM", help="its private key, copied to the device")
    s.add_argument("--endpoint-plain-http", action="store_true",
                   help="serve the endpoint without TLS (only on a network that is yours)")
    s.add_argument("--health-public", action="store_true", help="GET /api/v1/health without a token")
    s.add_argument("--control-port", type=int, help="sim only: the tap control port")
    s.add_argument("--no-restart", action="store_true", help="leave the board at its REPL afterwards")
    s.set_defaults(func=cmd_provision)
