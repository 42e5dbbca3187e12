"""The device endpoint against its contract, docs/device-api.yaml, on real sim terminals (a chronyd for
time, the reference central for the uplink): every route's answers (status, media type, headers, JSON
body) checked against the document, and every field a body carries documented there; a schemathesis
run over the read routes; the metrics through prometheus_client's parser; punches paged by the cursor
and as CSV; the event stream; config and roster writes, the actions, and the reboot."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import e2e
import endpoint_site
import jsonschema
import pytest
import yaml
from endpoint_site import ADMIN, READ, WIFI, Site, open_site, sha, tap_ok
from ntp_fixtures import chrony
from prometheus_client.parser import text_string_to_metric_families
from rawhttp import Answer, EventStream, parse_head

REPO = Path(__file__).resolve().parents[1]
SPEC_PATH = REPO / "docs" / "device-api.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
PLACEHOLDER = "<redacted>"
TRIES: list[tuple[str, str, int, int]] = []  # (method, path, try, status) of the requests tried again on 503


# --- the contract -----------------------------------------------------------------------------------

def deref(node: Any) -> Any:
    """A node with its $ref (a local JSON pointer) followed, repeatedly."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def validator(schema: dict) -> jsonschema.Draft202012Validator:
    # The schema inside the whole document, so that its #/components/... references resolve.
    return jsonschema.Draft202012Validator({**schema, "components": SPEC["components"]})


def undocumented(doc: Any, schema: Any, where: str = "$") -> list[str]:
    """The members of doc that its schema does not name: the document leaves room for new fields (a
    client ignores what it does not know), these tests do not (each field the device sends is in it)."""
    schema = deref(schema)
    for key in ("oneOf", "anyOf"):
        for alt in schema.get(key, ()):
            if validator(deref(alt)).is_valid(doc):
                return undocumented(doc, alt, where)
    parts = [schema]
    i = 0
    while i < len(parts):
        parts.extend(deref(p) for p in parts[i].get("allOf", ()))
        i += 1
    props: dict = {}
    extra: Any = None
    for p in parts:
        props.update(p.get("properties", {}))
        extra = p.get("additionalProperties", extra)
    out: list[str] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in props:
                out += undocumented(v, props[k], f"{where}.{k}")
            elif isinstance(extra, dict):
                out += undocumented(v, extra, f"{where}.{k}")
            else:
                out.append(f"{where}.{k}")
    elif isinstance(doc, list) and "items" in schema:
        for n, v in enumerate(doc):
            out += undocumented(v, schema["items"], f"{where}[{n}]")
    return out


def check_value(value: Any, schema: dict, what: str) -> None:
    errors = sorted(validator(schema).iter_errors(value), key=str)
    assert not errors, f"{what}: {errors[0].message} (at {list(errors[0].absolute_path)})"
    extra = undocumented(value, schema)
    assert not extra, f"{what}: not in docs/device-api.yaml: {extra}"


def conforms(method: str, route: str, a: Answer) -> Any:
    """Check an answer against the document's operation (route: its path there, /health...); returns
    the body (parsed JSON, or text)."""
    if a.status == 405:  # a method the route does not take: the document's answer for any such
        assert method.lower() not in SPEC["paths"][route]
        resp = deref(SPEC["components"]["responses"]["MethodNotAllowed"])
    else:
        responses = SPEC["paths"][route][method.lower()]["responses"]
        assert str(a.status) in responses, f"{method} {route}: {a.status} is not documented ({a.body[:200]!r})"
        resp = deref(responses[str(a.status)])
    lower = [n.lower() for n in a.names]
    assert len(lower) == len(set(lower)), f"{method} {route}: a header twice: {a.names}"
    assert a.headers.get("cache-control") == "no-store"
    kind = a.headers.get("content-type", "")
    base = kind.split(";")[0].strip()
    assert base in resp["content"], f"{method} {route} {a.status}: {kind} not documented"
    for name, h in resp.get("headers", {}).items():
        h = deref(h)
        v = a.headers.get(name.lower())
        if v is None:
            assert not h.get("required"), f"{method} {route} {a.status}: no {name} header"
            continue
        t = h["schema"].get("type")
        value: Any = int(v) if t == "integer" else {"true": True, "false": False}.get(v, v) if t == "boolean" else v
        check_value(value, h["schema"], f"{method} {route} {a.status} header {name}")
    if base == "application/json":
        doc = a.json()
        check_value(doc, resp["content"][base]["schema"], f"{method} {route} {a.status}")
        return doc
    return a.body.decode()


# --- talking to a terminal ------------------------------------------------------------------------

class Api(endpoint_site.Api):
    def get(self, route: str, token: str | None = READ, query: str = "", **kw: Any) -> Any:
        """A GET that must answer 200, checked against the document; its body."""
        a = self.call("GET", route + query, token, **kw)
        assert a.status == 200, (route, a.status, a.body[:300])
        return conforms("GET", route, a)

    def busy(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             tries: list | None = None) -> Answer:
        """endpoint_site.Api.busy, each try counted in TRIES."""
        return super().busy(method, path, body, headers, TRIES if tries is None else tries)

    def config(self, method: str = "GET", doc: Any = None, match: str | None = None) -> Answer:
        """GET or PUT /config (busy: tried again while the terminal has not the memory for it)."""
        body = None if doc is None else doc if isinstance(doc, (str, bytes)) else json.dumps(doc)
        return self.busy(method, "/config", body, {"If-Match": match} if match else None)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One synced terminal with its central, shared by the tests that leave it running."""
    tmp = tmp_path_factory.mktemp("endpoint-site")
    with chrony() as ntp_port, open_site(tmp, ntp_port, client=Api) as site:
        api = site.api
        e2e.wait_for(lambda: api.get("/time")["synced"], 30, "the first sync")
        e2e.wait_for(lambda: api.get("/status")["uplink"]["state"] == "idle", 30, "the uplink idle")
        yield site


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[Site]:
    """A terminal of the test's own, for what disturbs a terminal (reboot, rate limit): its central, and
    no time server (its clock stays unsynced, with a `servers` alert)."""
    with open_site(tmp_path, None, False, Api) as site:
        yield site


# --- the document itself ----------------------------------------------------------------------------

def test_the_document_names_every_route_as_built() -> None:
    """Paths and methods of docs/device-api.yaml are the endpoint's (its route table and Allow rule)."""
    src = (REPO / "lib" / "clockterm" / "endpoint.py").read_text()
    table = re.search(r'_ROUTES = const\((b".*?")\)\n', src, re.S)
    assert table is not None
    names = "".join(re.findall(r'b"([^"]*)"', table.group(1))).split()
    first_put = names.index("roster")
    first_action = names.index("actions/resync")
    built = {}
    for i, name in enumerate(names):
        built["/" + name] = {"post"} if i >= first_action else {"get", "put"} if i >= first_put else {"get"}
    documented = {p: {m for m in ops if m in ("get", "put", "post", "delete", "patch")}
                  for p, ops in SPEC["paths"].items()}
    assert documented == built
    assert SPEC["servers"][0]["url"].endswith("/api/v1")
    for path, ops in SPEC["paths"].items():
        for method, op in ops.items():
            scopes = (op.get("security") or SPEC["security"])[0]["bearer"]
            admin = path in ("/config",) or path.startswith("/actions/") or (path, method) == ("/roster", "put")
            assert scopes == (["admin"] if admin else ["read"]), (path, method)
            for code in ("401", "429"):
                assert code in op["responses"], (path, method, code)


# --- read routes --------------------------------------------------------------------------------------

def test_read_routes_answer_as_documented(site: Site) -> None:
    api = site.api
    health = api.get("/health")
    assert health == {"status": "ok", "reasons": [], "device_id": e2e.DEVICE}
    st = api.get("/status")
    assert st["device_id"] == e2e.DEVICE and st["board"] == "sim" and st["clock"]["synced"]
    assert set(st["tasks"]) >= {"sntp", "uplink", "endpoint"}
    t = api.get("/time")
    assert t["sntp"] == "synced" and t["tz"] == st_tz(site)
    assert abs(e2e.iso_to_ms(t["utc_iso8601"]) - e2e.host_ms()) < 5000
    off = t["utc_offset_min"]
    assert t["local_iso8601"].endswith(f"{'-' if off < 0 else '+'}{abs(off) // 60:02d}:{abs(off) % 60:02d}")
    local = datetime.fromisoformat(t["local_iso8601"])
    assert local.timestamp() * 1000 == t["utc_ms"] and local.utcoffset().total_seconds() == off * 60
    page = api.get("/punches")
    assert page["device_id"] == e2e.DEVICE and page["journal_id"] == st["journal"]["journal_id"]
    text = api.get("/metrics")
    assert "clockterm_clock_synced 1\n" in text
    roster = api.get("/roster")
    assert roster["badges"] == st["roster"]["badges"]
    assert re.fullmatch(r'"[0-9a-f]{20}-tsv"', roster["version"]), roster  # the central's ETag (pulled at boot)
    assert api.get("/status", ADMIN)["device_id"] == e2e.DEVICE  # admin includes read


def test_a_first_sync_of_years_is_reported_to_the_ms(tmp_path: Path) -> None:
    """A terminal whose RTC lost its power comes up in 2000: its first sync steps the clock by decades.
    The offset is reported in whole ms, exactly (an ESP32's 32-bit float, offset_ms / 1000, would be a
    minute off), in /time, STATUS and the metrics; the uptime in the metrics has its ms."""
    years = -(26 * 365 * 86_400_000 + 123)  # the RTC this far behind
    with chrony() as ntp_port, open_site(tmp_path, ntp_port, client=Api,
                                         sim={"rtc_battery": False, "rtc_offset_ms": years}) as site:
        api = site.api
        e2e.wait_for(lambda: api.get("/time")["synced"], 30, "the first sync")
        t = api.get("/time")
        text = api.get("/metrics")
    off = t["offset_ms"]
    assert isinstance(off, int) and abs(off - t["last_step"]["offset_ms"]) <= 1, t
    assert 25 * 365 * 86_400_000 < off, t  # (the sim's RTC is the host's time less `years`, near 2000)
    got = re.search(r"^clockterm_clock_offset_seconds (\S+)$", text, re.M).group(1)
    assert got == f"{off // 1000}.{off % 1000:03d}", (got, off)
    assert re.search(r"^clockterm_up_seconds \d+\.\d{3}$", text, re.M), text[:300]


def test_a_punch_the_central_refuses_is_kept_aside_and_health_says_so(tmp_path: Path) -> None:
    """The central refuses two badges' punches for good (400): each is kept aside on the terminal, the
    others are stored; health is failing and names them, the metrics and STATUS count them; an admin
    drops one for good (actions/drop-refused). Once the central takes the other (the
    terminal offers it again with its pulls: after a reboot here, the first pulls come at once), health
    is ok again, and the one dropped never reaches the central."""
    with chrony() as ntp_port, open_site(tmp_path, ntp_port, client=Api) as site:
        api = site.api
        e2e.wait_for(lambda: api.get("/time")["synced"], 30, "the first sync")
        site.central.set_faults(refuse_badges=["04DEAD0001", "04DEAD0002"])
        seqs = [tap_ok(site.term, b)[0] for b in ("04AA0001", "04DEAD0001", "04AA0002", "04DEAD0002")]
        e2e.wait_for(lambda: api.get("/status")["uplink"]["backlog"] == 0, 30, "the backlog sent")
        e2e.wait_for(lambda: api.get("/status")["uplink"]["refused"] == 2, 30, "both kept aside")
        a = api.call("GET", "/health")
        health = conforms("GET", "/health", a)
        assert a.status == 503 and health["status"] == "failing", health
        jid = api.get("/status")["journal"]["journal_id"]
        names = sorted(f"{jid}.{s}" for s in (seqs[1], seqs[3]))
        assert f"punches refused by the central, kept aside on the terminal: 2 (journal.seq: {', '.join(names)})" \
            in health["reasons"], health
        assert re.search(r"^clockterm_uplink_refused_punches 2$", api.get("/metrics"), re.M)
        stored = {r["seq"] for r in site.central.store.punches(e2e.DEVICE)}
        assert stored >= {seqs[0], seqs[2]} and not stored & {seqs[1], seqs[3]}, stored
        # Dropping one: admin only, by a name health gave, nothing else
        drop = f"{jid}.{seqs[3]}"
        route = "/actions/drop-refused"
        assert api.call("POST", f"{route}?punch={drop}").status == 403  # a read token
        for bad in ("../config.json", "", f"{jid}.{seqs[0]}", "x" * 100):
            a = api.call("POST", f"{route}?punch={bad}", ADMIN)
            assert a.status == 404 and conforms("POST", route, a)["error"], (bad, a)
        assert api.call("POST", route, ADMIN).status == 404
        a = api.call("POST", f"{route}?punch={drop}", ADMIN)
        assert a.status == 200 and conforms("POST", route, a) == {"dropped": drop, "refused": 1}
        assert api.get("/status")["uplink"]["refused"] == 1
        site.central.set_faults(refuse_badges=[])
        site.term.stop()
        site.term.start()
        e2e.wait_for(lambda: api.get("/status")["uplink"]["refused"] == 0, 30, "the kept punch offered again")
        stored = {r["seq"] for r in site.central.store.punches(e2e.DEVICE)}
        assert stored >= {seqs[0], seqs[1], seqs[2]} and seqs[3] not in stored, stored
        e2e.wait_for(lambda: api.call("GET", "/health").status == 200, 30, "health ok again")


def st_tz(site: Site) -> str:
    return json.loads(site.config_path.read_text())["tz"]


def test_errors_answer_as_documented(site: Site) -> None:
    api = site.api
    a = api.call("GET", "/status", None)
    assert a.status == 401 and conforms("GET", "/status", a)["error"]
    a = api.call("GET", "/status", "not-a-token")
    assert a.status == 401 and a.headers["www-authenticate"] == 'Bearer realm="clockterm"'
    conforms("GET", "/status", a)
    assert api.call("GET", "/status").status == 200  # a success ends the failure count
    for method, route in (("GET", "/config"), ("PUT", "/roster"), ("POST", "/actions/flush")):
        a = api.call(method, route, READ, b"x" if method == "PUT" else None)
        assert a.status == 403, (method, route, a.status)
        conforms(method, route, a)
    a = api.call("GET", "/nowhere")
    assert a.status == 404 and a.json() == {"error": "Not Found"}
    for method, route, allow in (("POST", "/status", "GET"), ("DELETE", "/config", "GET, PUT"),
                                 ("GET", "/actions/flush", "POST"), ("PUT", "/metrics", "GET")):
        a = api.call(method, route, ADMIN, b"" if method == "PUT" else None)
        assert a.status == 405 and a.headers["allow"] == allow, (method, route, a.status, a.headers)
        conforms(method, route, a)
    for query in ("limit=0", "limit=1001", "limit=ten", "after=7086ba4f:", "after=x:12345678901", "format=xml"):
        a = api.call("GET", "/punches?" + query)
        assert a.status == 400, (query, a.status)
        assert "after=<journal_id>:<seq>" in conforms("GET", "/punches", a)["error"]
    a = api.call("GET", "/status", READ, b"{}")  # a body on a GET
    assert a.status == 413 and a.headers.get("connection") == "close"
    conforms("GET", "/status", a)
    assert api.get("/health")["status"] == "ok"


def test_a_long_request_line_is_answered_414(site: Site) -> None:
    """A request line over the 256-byte line buffer: 414, said before the connection closes."""
    line = b"GET /api/v1/punches?after=" + b"7" * 300 + b" HTTP/1.1\r\n"
    data = site.api.raw(line + b"Host: t\r\nAuthorization: Bearer " + READ.encode() + b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 414 "), data[:200]
    status, headers, body = parse_head(data)
    assert json.loads(body) == {"error": "URI Too Long"} and headers["connection"] == "close"


def test_a_long_header_line_is_passed_over(site: Site) -> None:
    """A header the endpoint does not read, longer than its line buffer, is dropped and the request
    answered (browsers and proxies send long Cookie and User-Agent lines)."""
    data = site.api.raw(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\nX-Trace: " + b"z" * 400 + b"\r\n"
                        b"Authorization: Bearer " + READ.encode() + b"\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]


def test_an_answer_to_head_has_no_body(site: Site) -> None:
    """HEAD (RFC 9110 9.3.2): no content after the head, so the next answer on a kept-alive connection
    is read right (uptime checkers use HEAD)."""
    auth = b"Authorization: Bearer " + READ.encode() + b"\r\n"
    data = site.api.raw(b"HEAD /api/v1/health HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n"
                        b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n" + auth + b"Connection: close\r\n\r\n")
    status, headers, rest = parse_head(data)
    assert status in (200, 405, 501), data[:200]
    assert rest.startswith(b"HTTP/1.1 200 "), f"after the HEAD answer's head: {rest[:120]!r}"


def test_schemathesis_finds_nothing_on_the_read_routes(site: Site, tmp_path: Path) -> None:
    """Generated requests (valid and not) over the read routes with a read token: no 5xx, no answer
    outside the document, no valid request refused, no invalid one taken, 405 with Allow for other
    methods. A fixed seed: a failure reproduces (the run is printed)."""
    st = Path(sys.executable).with_name("schemathesis")
    cmd = [str(st), "run", str(SPEC_PATH), "--url", f"http://127.0.0.1:{site.api.port}/api/v1",
           "-H", f"Authorization: Bearer {READ}", "--include-method", "GET",
           "--exclude-path", "/events", "--exclude-path", "/config",  # a stream; admin only
           "--checks", "all",
           # ignored_auth sends wrong tokens: after five the address is held back (429) for 30 s
           "--exclude-checks", "ignored_auth",
           "--max-examples", "25", "--seed", "1", "--request-timeout", "10"]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "No issues found" in out, out[-6000:]
    m = re.search(r"(\d+) generated, \1 passed", out)
    assert m and int(m.group(1)) >= 50, out[-2000:]
    assert time.monotonic() - t0 < 60


def test_metrics_parse_as_prometheus_text(site: Site) -> None:
    a = site.api.call("GET", "/metrics")
    assert a.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = conforms("GET", "/metrics", a)
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    names = [n for n, _ in types]
    assert len(names) == len(set(names)) and sorted(helps) == sorted(names)
    for name, kind in types:
        assert name.startswith("clockterm_") and kind in ("counter", "gauge"), (name, kind)
        assert name.endswith("_total") == (kind == "counter"), (name, kind)
    families = list(text_string_to_metric_families(text))
    assert len(families) == len(types) >= 29
    st = site.api.get("/status")
    values = {}
    for fam in families:
        assert fam.type in ("counter", "gauge"), fam
        assert fam.samples, fam.name
        for s in fam.samples:
            assert s.value == s.value and abs(s.value) != float("inf"), s  # no NaN, no infinity
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert values[("clockterm_clock_synced", ())] == 1
    assert values[("clockterm_journal_last_seq", ())] == st["journal"]["last_seq"]
    info = {k: dict(k2) for k, k2 in values if k == "clockterm_info"}
    assert info == {"clockterm_info": {"device_id": e2e.DEVICE, "board": "sim", "firmware": st["firmware"]}}
    results = {dict(k2)["result"] for k, k2 in values if k == "clockterm_taps_total"}
    assert results == set(st["terminal"]["counts"])
    tasks = {dict(k2)["task"] for k, k2 in values if k == "clockterm_task_restarts_total"}
    assert tasks == set(st["tasks"])
    assert values[("clockterm_endpoint_requests_total", ())] >= 2


# --- punches --------------------------------------------------------------------------------------

def test_punches_as_csv_are_the_json_rows(site: Site) -> None:
    api = site.api
    st = api.get("/status")["journal"]
    before = st["last_seq"]
    for badge in ("0A0001", "0A0002", "123:04567", "0A0003"):
        tap_ok(site.term, badge)
    query = f"?after={st['journal_id']}:{before}&limit=3"
    page = api.get("/punches", query=query)
    a = api.call("GET", "/punches" + query + "&format=csv")
    assert a.headers["content-type"] == "text/csv; charset=utf-8"
    text = conforms("GET", "/punches", a)
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [p["seq"] for p in page["punches"]] == [before + 1, before + 2, before + 3]
    assert len(rows) == 3
    for row, p in zip(rows, page["punches"], strict=True):
        assert list(row) == list(p)  # the same columns, in the same order
        for k, v in p.items():
            assert row[k] == ("" if v is None else str(v)), (k, row[k], v)
    assert [p["badge"] for p in page["punches"]] == ["0A0001", "0A0002", "123:04567"]
    for p in page["punches"]:
        assert e2e.iso_to_ms(p["utc"]) == p["utc_ms"] and p["quality"] == "synced"
    # Accept: text/csv gives the same; format wins over it; the paging headers are the same
    b = api.call("GET", "/punches" + query, headers={"Accept": "text/csv"})
    assert b.body == a.body and b.headers["x-next-cursor"] == a.headers["x-next-cursor"] == page["next"]
    c = api.call("GET", "/punches" + query + "&format=json", headers={"Accept": "text/csv"})
    assert c.json() == page


def test_paging_with_the_cursor_gives_every_punch_once_in_order(site: Site) -> None:
    api = site.api
    start = api.get("/status")["journal"]
    badges = [f"5{i:05X}" for i in range(250)]
    seqs = [tap_ok(site.term, b)[0] for b in badges]
    assert seqs == list(range(start["last_seq"] + 1, start["last_seq"] + 251))
    got: list[dict] = []
    cursor = f"{start['journal_id']}:{start['last_seq']}"
    pages = 0
    while True:
        a = api.call("GET", f"/punches?after={cursor}&limit=100")
        assert a.status == 200
        page = conforms("GET", "/punches", a)
        pages += 1
        got += page["punches"]
        assert a.headers["x-next-cursor"] == page["next"]
        assert a.headers["x-more"] == json.dumps(page["more"])
        assert a.headers["link"] == f'</api/v1/punches?after={page["next"]}&limit=100>; rel="next"'
        assert len(page["punches"]) == (100 if page["more"] else 50)
        if not page["more"]:
            break
        cursor = page["next"]
        assert pages < 5
    assert pages == 3
    assert [p["seq"] for p in got] == seqs and [p["badge"] for p in got] == badges
    # The last cursor, followed again: an empty page that says so, and the same cursor
    a = api.call("GET", "/punches" + a.headers["link"].split(">")[0].removeprefix("</api/v1/punches"))
    last = conforms("GET", "/punches", a)
    assert last["punches"] == [] and last["more"] is False and last["next"] == page["next"]
    # A cursor before the oldest punch held starts at the oldest; a bare seq is a cursor too
    first = api.get("/punches", query="?after=0&limit=1")["punches"][0]
    assert first["seq"] == api.get("/status")["journal"]["oldest_seq"]
    assert api.get("/punches", query=f"?after={seqs[9]}&limit=1")["punches"][0]["seq"] == seqs[10]
    # A cursor of another journal (the flash erased, seqs begun again at 1 under a new id): from the
    # oldest punch held, not past seqs this journal has not reached, and the next cursor names this one
    jid = api.get("/status")["journal"]["journal_id"]
    other = ("1" if jid[0] == "0" else "0") + jid[1:]
    page = api.get("/punches", query=f"?after={other}:{seqs[-1] + 500}&limit=1")
    assert page["punches"] == [first] and page["next"] == f"{jid}:{first['seq']}" and page["more"] is True


# --- config ---------------------------------------------------------------------------------------

def test_config_get_shows_no_secret(site: Site) -> None:
    a = site.api.config()
    assert a.status == 200, a.body
    doc = conforms("GET", "/config", a)
    text = a.body.decode()
    on_disk = site.config_path.read_bytes()
    secret = json.loads(on_disk)["central"]["client_secret"]
    for s in (WIFI, secret, READ, ADMIN, sha(READ), sha(ADMIN)):
        assert s not in text, s
    assert doc["network"]["wifi_password"] == doc["central"]["client_secret"] == PLACEHOLDER
    assert [t.get("token", t.get("sha256")) for t in doc["endpoint"]["tokens"]] == [PLACEHOLDER] * 2
    assert a.headers["etag"] == f'"{zlib.crc32(on_disk):08x}"'
    assert site.api.call("GET", "/config", READ).status == 403


def test_config_put_of_the_get_document_keeps_the_secrets(site: Site) -> None:
    """The GET document sent back as it is: the placeholders keep every secret in force, in the file
    the terminal boots from (a plaintext token kept as its hash)."""
    before = json.loads(site.config_path.read_text())
    a = site.api.config()
    doc = a.json()
    b = site.api.config("PUT", doc, a.headers["etag"])
    assert b.status == 200, b.body
    assert conforms("PUT", "/config", b) == {"written": True, "applies": "at the next boot"}
    data = site.config_path.read_bytes()
    assert b.headers["etag"] == f'"{zlib.crc32(data):08x}"'
    after = json.loads(data)
    assert PLACEHOLDER not in data.decode()
    assert after["network"]["wifi_password"] == WIFI
    assert after["central"]["client_secret"] == before["central"]["client_secret"]
    assert after["endpoint"]["tokens"] == [
        {"name": "monitoring", "sha256": sha(READ), "scopes": ["read"]},
        {"name": "ops", "sha256": sha(ADMIN), "scopes": ["read", "admin"]}]
    assert {k: v for k, v in after.items() if k not in ("network", "central", "endpoint")} == \
        {k: v for k, v in before.items() if k not in ("network", "central", "endpoint")}


def test_a_config_the_flash_cannot_take_is_a_503_and_changes_nothing(site: Site) -> None:
    """The flash refuses the new file (here: its temporary name is taken by a folder): the PUT is
    answered 503 with the flash's error, the config in force is untouched, and the next PUT works."""
    api = site.api
    a = api.config()
    assert a.status == 200
    data = site.config_path.read_bytes()
    blocker = site.config_path.with_name(site.config_path.name + ".tmp")
    blocker.mkdir()
    try:
        for _ in range(5):  # (a 503 for memory, as the API allows, is tried again)
            r = api.call("PUT", "/config", ADMIN, a.body)
            if not (r.status == 503 and "memory" in r.json()["error"]):
                break
            time.sleep(0.3)
    finally:
        blocker.rmdir()
    assert r.status == 503 and r.json()["error"].startswith("flash error:"), r.body
    assert r.headers.get("connection") == "close"
    conforms("PUT", "/config", r)
    assert site.config_path.read_bytes() == data
    assert api.config("PUT", a.body).status == 200


def test_config_put_refused_leaves_the_file_as_it_was(site: Site) -> None:
    api = site.api
    a = api.config()
    assert a.status == 200
    good = a.json()
    data = site.config_path.read_bytes()
    bad = json.loads(json.dumps(good))
    bad["terminal"]["duplicate_window_s"] = "ten"
    r = api.config("PUT", bad, a.headers["etag"])
    assert r.status == 400 and "terminal.duplicate_window_s" in conforms("PUT", "/config", r)["error"], r.body
    bad = json.loads(json.dumps(good))
    bad["sntp"]["port"] = 70000
    r = api.config("PUT", bad)
    assert r.status == 400 and "sntp.port" in r.json()["error"], r.body
    r = api.config("PUT", good, '"00000000"' if a.headers["etag"] != '"00000000"' else '"00000001"')
    assert r.status == 412 and a.headers["etag"] in conforms("PUT", "/config", r)["error"], r.body
    r = api.config("PUT", "[1, 2]")
    assert r.status == 400 and r.json()["error"].startswith("config:"), r.body
    r = api.config("PUT", json.dumps(good) + " " * 8192)
    assert r.status == 413 and r.headers.get("connection") == "close"
    conforms("PUT", "/config", r)
    raw = api.raw(b"PUT /api/v1/config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + ADMIN.encode() +
                  b"\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    status, headers, body = parse_head(raw)
    assert status == 411 and headers["connection"] == "close", raw[:200]
    assert site.config_path.read_bytes() == data


# --- roster ---------------------------------------------------------------------------------------

ROSTER = 'badge,employee_id,name\r\n0B0001,E1001,Ada Lovelace\r\n0B0002,E1002,"Hopper, Grace"\r\n0B0003,E1003,Émile\r\n'


def test_roster_put_then_a_tap_shows_the_name(site: Site) -> None:
    api = site.api
    a = api.busy("PUT", "/roster", ROSTER, {"Content-Type": "text/csv"})
    assert a.status == 200, a.body
    assert conforms("PUT", "/roster", a) == {"badges": 3}
    assert api.get("/roster") == {"badges": 3, "error": None, "version": None}
    assert api.get("/status")["roster"] == {"badges": 3, "error": None}
    seq, _ = tap_ok(site.term, "0B0002")
    assert "Hopper, Grace" in api.get("/status")["terminal"]["last_result"]
    p = api.get("/punches", query=f"?after={seq - 1}&limit=1")["punches"][0]
    assert (p["seq"], p["employee"], p["kind"]) == (seq, "E1002", "in")
    # refused: unsorted, a bad badge, a short row; the roster in force stays
    for body, said in (("badge,employee_id,name\n0B0009,E9,Zed\n0B0008,E8,Yan\n", "row 2: badge 0B0008: not after"),
                       ("0B0001,E1,Ann\nXYZ!,E2,Bob\n", 'row 2: badge "XYZ!"'),
                       ("0B0001\n", "line 1: expected badge,employee_id,name")):
        r = api.busy("PUT", "/roster", body)
        assert r.status == 400 and r.headers.get("connection") == "close", (body, r.status, r.body)
        assert said in conforms("PUT", "/roster", r)["error"], r.body
        assert api.get("/roster")["badges"] == 3
    tap_ok(site.term, "0B0001")
    assert "Ada Lovelace" in api.get("/status")["terminal"]["last_result"]
    raw = api.raw(b"PUT /api/v1/roster HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + ADMIN.encode() + b"\r\n\r\n")
    assert parse_head(raw)[0] == 411, raw[:200]


# --- actions --------------------------------------------------------------------------------------

def test_actions_are_accepted_and_done(site: Site) -> None:
    api = site.api
    for name in ("flush", "clear-alerts"):
        a = api.call("POST", f"/actions/{name}", ADMIN)
        assert a.status == 202 and conforms("POST", f"/actions/{name}", a) == {"accepted": True}, a.body
    seq, _ = tap_ok(site.term, "0F0001")
    e2e.wait_for(lambda: api.get("/status")["journal"]["acked_seq"] >= seq, 10, "the punch at the central")
    syncs = api.get("/time")["syncs"]
    time.sleep(1.1)  # past the server's poll limit (sntp.min_poll_s)
    a = api.call("POST", "/actions/resync", ADMIN)
    assert a.status == 202 and conforms("POST", "/actions/resync", a) == {"accepted": True}
    e2e.wait_for(lambda: api.get("/time")["syncs"] > syncs, 10, "a sync after the resync action")


# --- the event stream (after the writes: a subscriber that left holds its slot until its next ping) ---

def test_the_event_stream_sends_punches_as_they_happen(site: Site) -> None:
    api = site.api
    seq0, _ = tap_ok(site.term, "0E0001")
    jid = api.get("/status")["journal"]["journal_id"]
    first = stream = EventStream(api.port, READ, f"?after={jid}:{seq0 - 1}")
    try:
        assert stream.status == 200, stream.head
        conforms("GET", "/events", Answer(200, stream.headers, b"", list(stream.headers)))
        assert stream.headers["content-type"] == "text/event-stream" and stream.headers["connection"] == "close"
        assert stream.block() == ": clockterm events"
        replayed = stream.event("punch")  # the cursor's replay
        assert replayed["id"] == f"{jid}:{seq0}"
        # one subscriber at a time: a new one takes over, the older stream is closed
        stream = EventStream(api.port, READ)
        assert stream.status == 200 and stream.block() == ": clockterm events"
        with pytest.raises(EOFError):
            first.block(5.0)
        t0 = time.monotonic()
        seq, ms = tap_ok(site.term, "0E0002")
        ev = stream.event("punch", 5.0)
        took = time.monotonic() - t0
        assert ev["id"] == f"{jid}:{seq}"
        punch = json.loads(ev["data"])
        check_value(punch, SPEC["components"]["schemas"]["Punch"], "a punch event")
        assert punch["seq"] == seq and punch["utc_ms"] == ms and punch["badge"] == "0E0002"
        assert punch == api.get("/punches", query=f"?after={jid}:{seq - 1}&limit=1")["punches"][0]
        assert took < 3.0, took
        # a cursor of another journal (the flash erased, seqs begun again): replayed from the oldest held
        stream.close()
        other = ("1" if jid[0] == "0" else "0") + jid[1:]
        stream = EventStream(api.port, READ, f"?after={other}:{seq + 500}")
        assert stream.block() == ": clockterm events"
        assert stream.event("punch")["id"] == f"{jid}:{api.get('/status')['journal']['oldest_seq']}"
    finally:
        first.close()
        stream.close()


def test_clear_alerts_clears_them(lone: Site) -> None:
    api = lone.api
    raised = e2e.wait_for(lambda: api.get("/time")["alerts"].get("servers"), 20, "the servers alert")
    a = api.call("POST", "/actions/clear-alerts", ADMIN)
    assert a.status == 202
    # gone; or raised anew by a round that failed since (then since a later time)
    assert api.get("/time")["alerts"].get("servers", raised + 1) > raised


def test_reboot_applies_a_config_put(lone: Site) -> None:
    api = lone.api
    a = api.config()
    doc = a.json()
    doc["terminal"]["duplicate_window_s"] = 42
    r = api.config("PUT", doc, a.headers["etag"])
    assert r.status == 200, r.body
    assert json.loads(lone.config_path.read_text())["terminal"]["duplicate_window_s"] == 42
    assert api.get("/status")  # the terminal runs on with the config it booted with
    a = api.call("POST", "/actions/reboot", ADMIN)
    assert a.status == 202 and conforms("POST", "/actions/reboot", a) == {"accepted": True}
    assert lone.term.proc.wait(10) == 1  # the sim board's reset: the process ends, as a board restarts
    lone.term.start()
    assert api.config().json()["terminal"]["duplicate_window_s"] == 42
    assert api.call("GET", "/status", READ).status == 200  # the tokens still in force
    assert api.call("GET", "/status", PLACEHOLDER).status == 401


def test_five_failures_hold_the_address_back(lone: Site) -> None:
    api = lone.api
    for _ in range(5):
        assert api.call("GET", "/health", "wrong").status == 401
    a = api.call("GET", "/health", READ)
    assert a.status == 429 and a.headers["retry-after"] == "30" and a.headers.get("connection") == "close"
    conforms("GET", "/health", a)
    text = Api(api.port).call("GET", "/metrics", READ)
    assert text.status == 429  # every route, the right token too


def test_a_csv_cell_that_would_run_as_a_formula_is_text() -> None:
    # CSV injection: an employee id or badge a spreadsheet would run gets a ' before it in the CSV rows
    # (quoted as RFC 4180 asks when it holds a quote or a comma); the JSON carries the value as it is
    from mp import mp_json

    code = ("import json\nfrom clockterm import endpoint\nfrom clockterm.punch import Punch\n"
            "ps = [Punch(1780000000000, b, 'in', 1, 3, e, -300, 7, 'j1') for b, e in "
            "(('04A1', '=HYPERLINK(\"x\",\"y\")'), ('-1', '@E'), ('04A2', '+E,1'), ('04A3', 'E-1'))]\n"
            "print(json.dumps([[endpoint._row(p, True), json.loads(endpoint._row(p, False))['employee']]"
            " for p in ps]))\n")
    got = mp_json(code)
    rows = [next(csv.reader(io.StringIO(r, newline=""))) for r, _ in got]
    assert [(r[6], r[7]) for r in rows] == [("04A1", "'=HYPERLINK(\"x\",\"y\")"), ("'-1", "'@E"),
                                           ("04A2", "'+E,1"), ("04A3", "E-1")]
    assert [e for _, e in got] == ['=HYPERLINK("x","y")', "@E", "+E,1", "E-1"]
    assert all(r[4] == "-300" for r in rows)
