"""The central server's own CA and server certificates (good, expired, wrong host), in its state folder."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import trustme

# Certificate variants the server can present; tests switch between them at run time.
VARIANTS = ("good", "expired", "wronghost")
WRONG_HOST = "central.invalid"


def _ca(state: Path) -> trustme.CA:
    cert, key = state / "ca.pem", state / "ca.key"
    if cert.exists() and key.exists():
        return trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
    ca = trustme.CA(organization_name="clockterm central CA")
    key.write_bytes(ca.private_key_pem.bytes())
    key.chmod(0o600)
    cert.write_bytes(ca.cert_pem.bytes())
    return ca


def ensure(state: Path, hosts: list[str]) -> dict[str, Path]:
    """Create (once) the CA and one key+chain PEM per variant; return {variant: pem path}."""
    state.mkdir(parents=True, exist_ok=True)
    ca = _ca(state)
    names = sorted(set(["localhost", "127.0.0.1", *hosts]))
    out = {}
    now = dt.datetime.now(dt.timezone.utc)
    for variant in VARIANTS:
        path = state / f"server-{variant}.pem"
        stamp = state / f"server-{variant}.hosts"
        if not (path.exists() and stamp.exists() and stamp.read_text() == " ".join(names)):
            if variant == "good":
                leaf = ca.issue_cert(*names)
            elif variant == "expired":
                leaf = ca.issue_cert(*names, not_before=now - dt.timedelta(days=30),
                                     not_after=now - dt.timedelta(days=1))
            else:
                leaf = ca.issue_cert(WRONG_HOST)
            path.write_bytes(leaf.private_key_pem.bytes() + b"".join(b.bytes() for b in leaf.cert_chain_pems))
            path.chmod(0o600)
            stamp.write_text(" ".join(names))
        out[variant] = path
    return out


def contexts(pems: dict[str, Path]) -> dict[str, ssl.SSLContext]:
    ctxs = {}
    for variant, path in pems.items():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(path))
        ctxs[variant] = ctx
    return ctxs


def ca_der(state: Path) -> bytes:
    """The CA certificate in DER, the form a terminal's config can carry."""
    return ssl.PEM_cert_to_DER_cert((state / "ca.pem").read_text())
