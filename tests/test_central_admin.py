"""The central's admin API: every route behind the admin token, documented in docs/central-admin-api.yaml,
config overlays checked by the device's validator, bad query parameters refused."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from clockterm_host.central import Handle, start_background
from clockterm_host.central.app import build_admin

REPO = Path(__file__).resolve().parents[1]


def admin(h: Handle, method: str, path: str, body: bytes | None = None, token: str | None = "",
          ) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON or text) of an admin call; token "" means the central's own, None none."""
    hdrs = {}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token or h.admin_token}"
    req = urllib.request.Request(h.admin_url + path, data=body, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw, st, headers = r.read(), r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        raw, st, headers = e.read(), e.code, dict(e.headers)
    try:
        return st, headers, json.loads(raw)
    except ValueError:
        return st, headers, raw.decode()


def routes() -> list[tuple[str, str]]:
    """(method, path) of every route the admin app serves."""
    from clockterm_host.central.app import Central
    from clockterm_host.central.store import Store

    auth = build_admin(Central(Store(Path(":memory:")), "00" * 32))
    out = []
    for r in auth.app.routes:  # AdminAuth wraps the Starlette app
        for m in sorted(r.methods - {"HEAD"}):
            out.append((m, r.path))
    return out


def test_every_admin_route_needs_the_token_and_is_documented(central: Handle) -> None:
    spec = yaml.safe_load((REPO / "docs" / "central-admin-api.yaml").read_text())
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = set(routes())
    assert served == documented, (served ^ documented)
    assert spec["security"] == [{"admin": []}] and spec["components"]["securitySchemes"]["admin"]["scheme"] == "bearer"
    for method, path in sorted(served):
        p = path.replace("{device_id}", "term-1")
        body = b"{}" if method == "POST" else None
        for token in (None, "0" * 64, "not-hex", central.admin_token[:-1]):
            st, hdrs, ans = admin(central, method, p, body, token=token)
            assert st == 401 and ans["error"] == "unauthorized", (method, path, token, st, ans)
            assert hdrs["www-authenticate"].startswith("Bearer"), hdrs
    # With the token, a route answers (the config route with the empty overlay: valid, stored).
    assert admin(central, "POST", "/config/term-1", b"{}")[0] == 200
    assert admin(central, "GET", "/stats")[0] == 200


def test_admin_token_file_created_once_owner_only(tmp_path: Path) -> None:
    h = start_background(tmp_path / "c", devices="term-1:pw1")
    try:
        f = tmp_path / "c" / "admin.token"
        tok = f.read_text().strip()
        assert len(tok) == 64 and int(tok, 16) >= 0 and tok == h.admin_token
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    finally:
        h.stop()
    h = start_background(tmp_path / "c", devices="term-1:pw1")  # a restart keeps it
    try:
        assert h.admin_token == tok and h.admin("/stats")["punches_stored"] == 0
    finally:
        h.stop()


@pytest.mark.parametrize(("overlay", "detail"), [
    ({"terminal": {"duplicate_window_s": "abc"}}, "terminal.duplicate_window_s: expected int, got string"),
    ({"terminal": {"duplicate_window_s": 99999}}, "terminal.duplicate_window_s: 99999 is out of range 0..3600"),
    ({"terminal": {"shift_max_h": 0}}, "terminal.shift_max_h: 0 is out of range 1..72"),
    ({"terminal": {"kind_mode": "sideways"}}, "terminal.kind_mode: 'sideways' is not one of toggle, in, out, keys"),
    ({"device_id": "evil"}, "device_id: not allowed from central"),
    ({"central": {"url": "https://evil.example"}}, "central.url: not allowed from central"),
    ({"tz": "not a rule"}, "tz:"),
    ([1, 2], "overlay: expected a JSON object, got list"),
    ({"terminal": {"kind_mode": "in"}, "tz": "UTC0", "sntp": {"servers": ["x" * 60] * 8},
      "journal": {"full_policy": "refuse"}, "pad": "x" * 2000}, "overlay over 2048 bytes"),
])
def test_bad_overlay_refused_and_nothing_stored(central: Handle, overlay: Any, detail: str) -> None:
    assert admin(central, "POST", "/config/term-1", json.dumps({"terminal": {"duplicate_window_s": 5}}).encode())[0] \
        == 200
    st, _, ans = admin(central, "POST", "/config/term-1", json.dumps(overlay).encode())
    assert st == 400 and ans["error"] == "bad_config" and ans["detail"].startswith(detail), ans
    assert central.store.device("term-1")["config"] == {"terminal": {"duplicate_window_s": 5}}


def test_overlay_accepted_unknown_device_and_broken_body(central: Handle) -> None:
    good = {"terminal": {"duplicate_window_s": 30, "shift_max_h": 12}, "tz": "CET-1CEST,M3.5.0,M10.5.0/3"}
    assert admin(central, "POST", "/config/term-1", json.dumps(good).encode())[0] == 200
    assert central.store.device("term-1")["config"] == good
    st, _, ans = admin(central, "POST", "/config/term-9", json.dumps(good).encode())
    assert st == 404 and ans["error"] == "unknown_device"
    st, _, ans = admin(central, "POST", "/config/term-1", b"{not json")
    assert st == 400 and ans["detail"] == "the body is not JSON"


@pytest.mark.parametrize(("query", "detail"), [
    ("/export.csv?tz=Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("/export.csv?from=2026-13-01", "bad date '2026-13-01'"),
    ("/export.csv?report=salaries", "unknown report 'salaries'"),
    ("/export.csv?report=pairs", "the pairs report needs a range"),
    ("/export.csv?from=2026-05-02&to=2026-05-01", "empty range"),
    ("/export.csv?columns=date,salary", "unknown export columns ['salary']"),
    ("/export.csv?report=pairs&from=2026-05-01&to=2026-05-02&max_shift_h=abc",
     "max_shift_h: expected hours as a number, got 'abc'"),
    ("/export.csv?delimiter=|", "delimiter: one of"),
    ("/punches?from=yesterday", "bad date 'yesterday'"),
])
def test_bad_export_queries_are_400(central: Handle, query: str, detail: str) -> None:
    st, _, ans = admin(central, "GET", query)
    assert st == 400 and detail in ans["detail"], ans
