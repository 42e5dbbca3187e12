"""The reference central API on the host: tokens, dedup, validation, ETags, CSV, fault modes."""

from __future__ import annotations

import csv
import io
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from clockterm_host.central import Handle
from clockterm_host.central.cli import main as central_main


def call(
    h: Handle,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    form: bool = False,
) -> tuple[int, dict[str, str], Any]:
    ctx = ssl.create_default_context(cafile=str(h.ca_path))
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        if form:
            data = body.encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(h.url + path, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            raw = r.read()
            return r.status, dict(r.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, dict(e.headers), json.loads(raw) if raw else None


def token(h: Handle, dev: str = "term-1", secret: str = "pw1") -> str:
    st, _, body = call(
        h,
        "POST",
        "/v1/oauth/token",
        f"grant_type=client_credentials&client_id={dev}&client_secret={secret}",
        form=True,
    )
    assert st == 200, body
    return body["access_token"]


def punch(seq: int, **kw: Any) -> dict[str, Any]:
    p = {
        "seq": seq,
        "badge": f"B{seq:04d}",
        "kind": "in",
        "utc_ms": 1_780_000_000_000 + seq * 1000,
        "utc_offset_min": 60,
        "quality": "synced",
        "uncertainty_ms": 5,
        "employee_id": None,
    }
    p.update(kw)
    return p


def batch(seqs: range, journal: str = "j1", device: str = "term-1") -> dict[str, Any]:
    return {"device_id": device, "journal_id": journal, "punches": [punch(s) for s in seqs]}


def test_token_grant_and_rejections(central: Handle) -> None:
    st, hdrs, body = call(
        central,
        "POST",
        "/v1/oauth/token",
        "grant_type=client_credentials&client_id=term-1&client_secret=pw1",
        form=True,
    )
    assert st == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert set(body["scope"].split()) == {"punches:write", "roster:read", "config:read"}
    assert (
        call(
            central,
            "POST",
            "/v1/oauth/token",
            "grant_type=client_credentials&client_id=term-1&client_secret=nope",
            form=True,
        )[0]
        == 401
    )
    assert (
        call(central, "POST", "/v1/oauth/token", "grant_type=password&client_id=term-1", form=True)[0] == 400
    )
    # A token limited to one scope cannot upload.
    st, _, b = call(
        central,
        "POST",
        "/v1/oauth/token",
        "grant_type=client_credentials&client_id=term-1&client_secret=pw1&scope=roster:read",
        form=True,
    )
    assert st == 200
    assert call(central, "POST", "/v1/punches", batch(range(1, 2)), token=b["access_token"])[0] == 403


def test_batches_are_idempotent_by_device_journal_seq(central: Handle) -> None:
    tok = token(central)
    st, _, body = call(central, "POST", "/v1/punches", batch(range(1, 11)), token=tok)
    assert (st, body["stored_through"], body["inserted"], body["duplicates"]) == (200, 10, 10, 0)
    # Overlapping resend: the old ones are reported as stored, not stored twice.
    st, _, body = call(central, "POST", "/v1/punches", batch(range(6, 16)), token=tok)
    assert (st, body["stored_through"], body["inserted"], body["duplicates"]) == (200, 15, 5, 5)
    # Same seqs under a new journal id are new punches.
    st, _, body = call(central, "POST", "/v1/punches", batch(range(1, 3), journal="j2"), token=tok)
    assert body["inserted"] == 2
    rows = central.store.punches("term-1")
    assert len(rows) == 17
    assert len({(r["journal_id"], r["seq"]) for r in rows}) == 17


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(punches=[]),
        lambda b: b["punches"][0].update(quality="great"),
        lambda b: b["punches"][0].update(seq="1"),
        lambda b: b["punches"][0].update(utc_ms=True),
        lambda b: b["punches"].reverse(),
        lambda b: b["punches"][1].pop("badge"),
        lambda b: b.pop("journal_id"),
    ],
)
def test_bad_batches_are_400_and_store_nothing(central: Handle, mutate: Any) -> None:
    b = batch(range(1, 4))
    mutate(b)
    st, _, body = call(central, "POST", "/v1/punches", b, token=token(central))
    assert st == 400 and body["error"] == "bad_batch"
    assert central.store.count() == 0


def test_auth_errors(central: Handle) -> None:
    assert call(central, "POST", "/v1/punches", batch(range(1, 2)))[0] == 401
    st, hdrs, _ = call(central, "POST", "/v1/punches", batch(range(1, 2)), token="forged")
    assert st == 401 and "Bearer" in hdrs["www-authenticate"]
    # term-2's token cannot upload for term-1.
    assert (
        call(central, "POST", "/v1/punches", batch(range(1, 2)), token=token(central, "term-2", "pw2"))[0]
        == 403
    )
    central.set_faults(token_ttl_s=-1)
    assert call(central, "POST", "/v1/punches", batch(range(1, 2)), token=token(central))[0] == 401
    assert central.store.count() == 0


def test_413_by_count_and_bytes(central: Handle) -> None:
    tok = token(central)
    central.set_faults(max_batch=5)
    assert call(central, "POST", "/v1/punches", batch(range(1, 7)), token=tok)[0] == 413
    assert call(central, "POST", "/v1/punches", batch(range(1, 6)), token=tok)[0] == 200
    central.set_faults(max_batch=1000, max_body=500)
    assert call(central, "POST", "/v1/punches", batch(range(10, 20)), token=tok)[0] == 413
    assert central.store.count() == 5


def test_roster_and_config_with_etags(central: Handle, tmp_path: Path) -> None:
    tok = token(central)
    central.store.import_roster_csv("badge,employee_id,name\nA1,E1,Ann\nB2,E2,Bob\n")
    central.store.import_roster_csv("badge,employee_id,name\nb2,E9,Bob\n", scope="term-1")
    st, hdrs, body = call(central, "GET", "/v1/devices/term-1/roster", token=tok)
    assert st == 200 and [(e["badge"], e["employee_id"]) for e in body["entries"]] == [
        ("A1", "E1"),
        ("B2", "E9"),
    ]
    etag = hdrs["etag"]
    assert etag == f'"{body["version"]}"'
    assert (
        call(central, "GET", "/v1/devices/term-1/roster", token=tok, headers={"If-None-Match": etag})[0]
        == 304
    )
    central.store.import_roster_csv("badge,employee_id,name\nC3,E3,Cy\n")
    st, hdrs2, body = call(
        central, "GET", "/v1/devices/term-1/roster", token=tok, headers={"If-None-Match": etag}
    )
    assert st == 200 and hdrs2["etag"] != etag
    assert call(central, "GET", "/v1/devices/term-2/roster", token=tok)[0] == 403
    with pytest.raises(ValueError):
        central.store.import_roster_csv("badge,name\nX,Y\n")

    st, hdrs, cfg = call(central, "GET", "/v1/devices/term-1/config", token=tok)
    assert st == 200 and cfg == {}
    central.admin("/config/term-1", {"central": {"batch_max": 50}})
    st, hdrs3, cfg = call(
        central, "GET", "/v1/devices/term-1/config", token=tok, headers={"If-None-Match": hdrs["etag"]}
    )
    assert st == 200 and cfg == {"central": {"batch_max": 50}}
    assert (
        call(
            central, "GET", "/v1/devices/term-1/config", token=tok, headers={"If-None-Match": hdrs3["etag"]}
        )[0]
        == 304
    )


def test_injected_faults(central: Handle) -> None:
    tok = token(central)
    central.admin(
        "/faults", {"queue": [{"do": "status", "code": 429, "retry_after": 7}, {"do": "status", "code": 503}]}
    )
    st, hdrs, _ = call(central, "POST", "/v1/punches", batch(range(1, 3)), token=tok)
    assert st == 429 and hdrs["retry-after"] == "7"
    assert call(central, "POST", "/v1/punches", batch(range(1, 3)), token=tok)[0] == 503
    assert central.store.count() == 0
    # A reset after storing: the client sees a broken answer, the punches are stored.
    central.set_faults(queue=[{"do": "reset"}])
    with pytest.raises(Exception):  # noqa: B017 - http.client raises IncompleteRead or similar
        call(central, "POST", "/v1/punches", batch(range(1, 3)), token=tok)
    assert central.store.count() == 2
    st, _, body = call(central, "POST", "/v1/punches", batch(range(1, 3)), token=tok)
    assert body["duplicates"] == 2
    central.set_faults(queue=[{"do": "bogus_ack"}])
    assert call(central, "POST", "/v1/punches", batch(range(3, 4)), token=tok)[2]["stored_through"] == 1003
    with pytest.raises(ValueError):
        central.set_faults(queue=[{"do": "explode"}])
    # Expired certificate: a verifying client refuses it.
    central.set_faults(tls="expired")
    with pytest.raises(urllib.error.URLError, match="expired"):
        token(central)
    stats = central.admin("/stats")
    assert stats["fault_reset"] == 1 and stats["punches_stored"] == 3


def test_export_csv_and_cli(central: Handle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = token(central)
    b = batch(range(1, 3))
    b["punches"][0].update(utc_ms=1_780_000_000_123, utc_offset_min=-300, employee_id="E7")
    call(central, "POST", "/v1/punches", b, token=tok)
    req = urllib.request.Request(central.admin_url + "/export.csv?columns=seq,badge",
                                 headers={"Authorization": f"Bearer {central.admin_token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert list(csv.reader(io.StringIO(r.read().decode()))) == [
            ["seq", "badge"],
            ["1", "B0001"],
            ["2", "B0002"],
        ]
    out = tmp_path / "p.csv"
    assert (
        central_main(
            [
                "central",
                "export",
                "--state",
                str(central.state),
                "--columns",
                "employee_id,seq,utc_iso,local_iso",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert rows[0] == {
        "employee_id": "E7",
        "seq": "1",
        "utc_iso": "2026-05-28T20:26:40.123Z",
        "local_iso": "2026-05-28T15:26:40.123-05:00",
    }
    assert rows[1]["employee_id"] == ""
    with pytest.raises(SystemExit, match="unknown export columns"):
        central_main(["central", "export", "--state", str(central.state), "--columns", "salary"])
    roster = tmp_path / "r.csv"
    roster.write_text("badge,employee_id,name\nF9,E99,Zed\n")
    assert central_main(["central", "roster", "import", "--state", str(central.state), str(roster)]) == 0
    assert central.store.roster("term-1")[1] == [{"badge": "F9", "employee_id": "E99", "name": "Zed"}]


FIELDS = ["seq", "badge", "kind", "utc_ms", "utc_offset_min", "quality", "uncertainty_ms", "employee_id"]


def rows_batch(seqs: range, fields: list[str] = FIELDS) -> dict[str, Any]:
    return {"device_id": "term-1", "journal_id": "j1", "fields": fields,
            "rows": [[punch(s, employee_id=f"E{s}")[f] for f in fields] for s in seqs]}


def test_compact_rows_are_the_same_punches(central: Handle) -> None:
    tok = token(central)
    st, _, body = call(central, "POST", "/v1/punches", rows_batch(range(1, 6)), token=tok)
    assert (st, body["stored_through"], body["inserted"]) == (200, 5, 5)
    # Columns in any order, employee_id optional; the same punches as objects are duplicates.
    other = [f for f in reversed(FIELDS) if f != "employee_id"]
    st, _, body = call(central, "POST", "/v1/punches", rows_batch(range(4, 8), other), token=tok)
    assert (st, body["inserted"], body["duplicates"]) == (200, 2, 2)
    rows = central.store.punches("term-1")
    assert [r["employee_id"] for r in rows] == ["E1", "E2", "E3", "E4", "E5", None, None]
    assert rows[0] == {**punch(1, employee_id="E1"), "device_id": "term-1", "journal_id": "j1",
                       "received_ms": rows[0]["received_ms"]}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(fields=FIELDS[:-2]),  # a required column missing
        lambda b: b.update(fields=[*FIELDS, "seq"]),  # named twice
        lambda b: b.update(fields=[*FIELDS[:-1], "colour"]),  # unknown column
        lambda b: b["rows"][1].pop(),  # a short row
        lambda b: b.update(rows=[]),
        lambda b: b.update(punches=[punch(9)]),  # both forms at once
    ],
)
def test_bad_rows_are_400(central: Handle, mutate: Any) -> None:
    b = rows_batch(range(1, 4))
    mutate(b)
    st, _, body = call(central, "POST", "/v1/punches", b, token=token(central))
    assert st == 400 and body["error"] == "bad_batch", body
    assert central.store.count() == 0
