"""The central API as Starlette apps: the public v1 API (with fault injection) and the loopback admin API."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import roster
from ..cli import check_overlay
from .export import MAX_SHIFT_H, ExportError, bound_ms, zone
from .export import export as export_report
from .store import PUNCH_FIELDS, Store, version_of

QUALITIES = ("unsynced", "synced", "stale", "corrected")
DEVICE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# One-shot fault actions (consumed in order by requests whose path matches, default /v1/punches):
#   {"do": "status", "code": 500|429|413|..., "retry_after": s, "pad": n}  answer this status (its body
#                             padded by n bytes, like a proxy's error page), store nothing
#   {"do": "close"}           close the connection without an answer, store nothing
#   {"do": "reset"}           store, then send half the answer and drop the connection
#   {"do": "stall", "s": 5}   store, then wait s seconds before answering
#   {"do": "trickle", "bps": 50}  store, then send the answer at bps bytes per second
#   {"do": "chunked"}         store, then send the answer with chunked transfer encoding
#   {"do": "bad_json"} | {"do": "wrong_shape"} | {"do": "bogus_ack"}  store, then answer nonsense
ACTIONS = ("status", "close", "reset", "stall", "trickle", "chunked", "bad_json", "wrong_shape", "bogus_ack")


@dataclass
class Faults:
    queue: list[dict[str, Any]] = field(default_factory=list)
    error_rate: float = 0.0  # fraction of punch uploads answered 500 before storing
    reset_rate: float = 0.0  # fraction of punch uploads stored then dropped mid-answer
    tls: str = "good"  # certificate variant presented: good, expired, wronghost
    max_batch: int = 1000  # punches per batch; more -> 413
    max_body: int = 256 * 1024  # bytes per request body; more -> 413
    token_ttl_s: int = 3600
    latency_s: float = 0.0  # every punch upload waits this long before it is handled (a slow server)
    refuse_badges: list[str] = field(default_factory=list)  # a batch holding one of these badges: 400
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def update(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            if k == "rng" or not hasattr(self, k):
                raise ValueError(f"unknown fault setting {k!r}")
            if k == "queue":
                for a in v:
                    if a.get("do") not in ACTIONS:
                        raise ValueError(f"unknown fault action {a!r}")
            setattr(self, k, v)
        if "seed" in d:
            self.rng.seed(d["seed"])

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("queue", "error_rate", "reset_rate", "tls", "max_batch",
                                               "max_body", "token_ttl_s", "latency_s", "refuse_badges", "seed")}

    def take(self, path: str) -> dict[str, Any] | None:
        for i, a in enumerate(self.queue):
            if a.get("path", "/v1/punches") == path:
                return self.queue.pop(i)
        if path == "/v1/punches":
            if self.error_rate and self.rng.random() < self.error_rate:
                return {"do": "status", "code": 500}
            if self.reset_rate and self.rng.random() < self.reset_rate:
                return {"do": "reset"}
        return None


@dataclass
class Central:
    """Shared state of one running server."""

    store: Store
    admin_token: str = ""  # the admin API's bearer token (admin.token in the state folder)
    faults: Faults = field(default_factory=Faults)
    tokens: dict[str, tuple[str, set[str], float]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n


def _err(status: int, code: str, detail: str = "", headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class BadBatch(ValueError):
    pass


def _int(v: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise BadBatch(f"{name} must be an integer")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BadBatch(f"{name} out of range")
    return v


def _str(v: Any, name: str, lo: int = 1, hi: int = 64) -> str:
    if not isinstance(v, str) or not lo <= len(v) <= hi:
        raise BadBatch(f"{name} must be a string of {lo}..{hi} characters")
    return v


def _tsv(v: str) -> str:
    return v.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _rows(fields: Any, rows: Any) -> list[Any]:
    if (not isinstance(fields, list) or len(set(map(str, fields))) != len(fields)
            or set(fields) - set(PUNCH_FIELDS) or set(PUNCH_FIELDS) - {"employee_id"} - set(fields)):
        raise BadBatch(f"fields must name each of {', '.join(PUNCH_FIELDS)} once (employee_id optional)")
    if not isinstance(rows, list) or not rows:
        raise BadBatch("rows must be a non-empty list")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, list) or len(r) != len(fields):
            raise BadBatch(f"rows[{i}] must be an array of {len(fields)} values")
        out.append(dict(zip(fields, r, strict=True)))
    return out


def validate_batch(body: Any) -> tuple[str, str, list[dict[str, Any]]]:
    if not isinstance(body, dict):
        raise BadBatch("body must be a JSON object")
    device_id = _str(body.get("device_id"), "device_id")
    journal_id = _str(body.get("journal_id"), "journal_id")
    punches = body.get("punches")
    if "rows" in body:  # the compact form: one array per punch, columns named once in "fields"
        if punches is not None:
            raise BadBatch("a batch has punches or rows, not both")
        punches = _rows(body.get("fields"), body.get("rows"))
    if not isinstance(punches, list) or not punches:
        raise BadBatch("punches must be a non-empty list")
    out, last = [], 0
    for i, p in enumerate(punches):
        if not isinstance(p, dict):
            raise BadBatch(f"punches[{i}] must be an object")
        where = f"punches[{i}]."
        seq = _int(p.get("seq"), where + "seq", 1)
        if seq <= last:
            raise BadBatch(f"{where}seq must increase within a batch")
        last = seq
        q = p.get("quality")
        if q not in QUALITIES:
            raise BadBatch(f"{where}quality must be one of {', '.join(QUALITIES)}")
        emp = p.get("employee_id")
        if emp is not None:
            _str(emp, where + "employee_id")
        out.append({
            "seq": seq, "badge": _str(p.get("badge"), where + "badge"),
            "kind": _str(p.get("kind"), where + "kind", 1, 16),
            "utc_ms": _int(p.get("utc_ms"), where + "utc_ms", 0),
            "utc_offset_min": _int(p.get("utc_offset_min"), where + "utc_offset_min", -1080, 1080),
            "quality": q, "uncertainty_ms": _int(p.get("uncertainty_ms"), where + "uncertainty_ms", 0),
            "employee_id": emp,
        })
    return device_id, journal_id, out


def build_api(c: Central) -> Starlette:
    def auth(request: Request, scope: str, device_id: str | None) -> tuple[str | None, Response | None]:
        h = request.headers.get("authorization", "")
        tok = h[7:].strip() if h[:7].lower() == "bearer " else ""
        ent = c.tokens.get(tok)
        if ent is None or ent[2] < time.time():
            if ent is not None:
                c.tokens.pop(tok, None)
            return None, _err(401, "invalid_token", "bearer token missing, unknown or expired",
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        dev, scopes, _exp = ent
        if scope not in scopes:
            return None, _err(403, "insufficient_scope", f"token lacks scope {scope}")
        if device_id is not None and device_id != dev:
            return None, _err(403, "wrong_device", "token was issued to another device")
        return dev, None

    async def token(request: Request) -> Response:
        c.count("token_requests")
        raw = await request.body()
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                form = {k: str(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError):
                return JSONResponse({"error": "invalid_request"}, 400)
        basic = request.headers.get("authorization", "")
        if basic[:6].lower() == "basic ":
            try:
                cid, _, sec = base64.b64decode(basic[6:]).decode().partition(":")
                form.setdefault("client_id", cid)
                form.setdefault("client_secret", sec)
            except ValueError:
                return JSONResponse({"error": "invalid_request"}, 400)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        dev = c.store.device(form.get("client_id", ""))
        if dev is None or not secrets.compare_digest(dev["secret"], form.get("client_secret", "")):
            return JSONResponse({"error": "invalid_client"}, 401, headers={"WWW-Authenticate": "Basic"})
        allowed = set(dev["scopes"].split())
        want = set(form["scope"].split()) if form.get("scope") else allowed
        if not want <= allowed:
            return JSONResponse({"error": "invalid_scope"}, 400)
        tok = secrets.token_urlsafe(24)
        ttl = int(c.faults.token_ttl_s)
        c.tokens[tok] = (dev["device_id"], want, time.time() + ttl)
        c.count("tokens_issued")
        return JSONResponse({"access_token": tok, "token_type": "Bearer", "expires_in": ttl,
                             "scope": " ".join(sorted(want))}, headers={"Cache-Control": "no-store"})

    async def punches(request: Request) -> Response:
        c.count("punch_requests")
        dev, denied = auth(request, "punches:write", None)
        if denied:
            return denied
        clen = request.headers.get("content-length")
        if clen is not None and clen.isdigit() and int(clen) > c.faults.max_body:
            return _err(413, "too_large", f"body over {c.faults.max_body} bytes")
        raw = await request.body()
        if len(raw) > c.faults.max_body:
            return _err(413, "too_large", f"body over {c.faults.max_body} bytes")
        try:
            device_id, journal_id, batch = validate_batch(json.loads(raw))
        except ValueError as e:  # BadBatch and JSON errors
            c.count("bad_batches")
            return _err(400, "bad_batch", str(e))
        if device_id != dev:
            return _err(403, "wrong_device", "device_id is not the token's device")
        for i, p in enumerate(batch):  # a fault: a central that refuses some punches for good
            if p["badge"] in c.faults.refuse_badges:
                c.count("bad_batches")
                return _err(400, "bad_batch", f"punches[{i}].badge {p['badge']!r} is refused")
        if len(batch) > c.faults.max_batch:
            return _err(413, "too_large", f"more than {c.faults.max_batch} punches")
        inserted, dups = c.store.store_batch(device_id, journal_id, batch)
        c.count("punches_inserted", inserted)
        c.count("punches_duplicate", dups)
        return JSONResponse({"device_id": device_id, "journal_id": journal_id,
                             "stored_through": batch[-1]["seq"], "inserted": inserted, "duplicates": dups})

    def conditional(request: Request, version: str, body: Any) -> Response:
        etag = f'"{version}"'
        inm = request.headers.get("if-none-match", "")
        if etag in [t.strip() for t in inm.split(",")] or inm.strip() == "*":
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(body, headers={"ETag": etag})

    async def roster(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        _dev, denied = auth(request, "roster:read", device_id)
        if denied:
            return denied
        version, entries = c.store.roster(device_id)
        if "text/tab-separated-values" in request.headers.get("accept", ""):
            # What terminals take: one line per badge, sorted by badge as the device compares them
            # (upper-cased UTF-8 bytes), so it streams them straight into its sorted roster file.
            etag = f'"{version}-tsv"'
            if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
                return Response(status_code=304, headers={"ETag": etag})
            rows = sorted(entries, key=lambda e: e["badge"].strip().upper().encode())
            text = "".join(f"{_tsv(e['badge'])}\t{_tsv(e['employee_id'])}\t{_tsv(e['name'])}\n" for e in rows)
            return Response(text, media_type="text/tab-separated-values; charset=utf-8", headers={"ETag": etag})
        return conditional(request, version, {"version": version, "entries": entries})

    async def config(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        _dev, denied = auth(request, "config:read", device_id)
        if denied:
            return denied
        c.count("config_requests")
        dev = c.store.device(device_id)
        cfg = dev["config"] if dev else {}
        r = conditional(request, version_of(cfg), cfg)
        if r.status_code == 304:
            c.count("config_not_modified")
        return r

    app = Starlette(routes=[
        Route("/v1/oauth/token", token, methods=["POST"]),
        Route("/v1/punches", punches, methods=["POST"]),
        Route("/v1/devices/{device_id}/roster", roster, methods=["GET"]),
        Route("/v1/devices/{device_id}/config", config, methods=["GET"]),
    ])
    return FaultMiddleware(app, c)  # type: ignore[return-value]


class FaultMiddleware:
    """Applies the fault queue and rates around the API (pure ASGI, so it can break a response midway)."""

    def __init__(self, app: ASGIApp, c: Central) -> None:
        self.app, self.c = app, c

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.c.faults.latency_s and scope["path"] == "/v1/punches":
            await asyncio.sleep(float(self.c.faults.latency_s))
        act = self.c.faults.take(scope["path"])
        if act is None:
            await self.app(scope, receive, send)
            return
        do = act["do"]
        self.c.count(f"fault_{do}")
        if do == "status":
            code = int(act.get("code", 500))
            hdrs = {"Retry-After": str(act["retry_after"])} if "retry_after" in act else None
            msg = f"fault injection {code}" + "x" * int(act.get("pad", 0))  # pad: a proxy's big error page
            await _err(code, "injected", msg, hdrs)(scope, receive, send)
            return
        if do == "close":
            raise ConnectionAbortedError("fault injection: close without answer")
        # The remaining actions let the request be stored, then spoil the answer.
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(msg: Message) -> None:
            nonlocal start
            if msg["type"] == "http.response.start":
                start = msg
            else:
                chunks.append(msg.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        status = start.get("status", 500)
        if status == 200 and do in ("bad_json", "wrong_shape", "bogus_ack"):
            if do == "bad_json":
                body = b"<html>proxy error</html>"
            elif do == "wrong_shape":
                body = b'{"ok": true, "stored": "yes"}'
            else:
                d = json.loads(body)
                d["stored_through"] = d["stored_through"] + 1000
                body = json.dumps(d).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if do != "chunked":  # without a length uvicorn sends chunks
            headers.append((b"content-length", str(len(body)).encode()))
        if do == "stall":
            await asyncio.sleep(float(act.get("s", 5)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if do == "reset":
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise ConnectionResetError("fault injection: reset mid-response")
        if do == "chunked":
            for i in range(0, len(body), 7):
                await send({"type": "http.response.body", "body": body[i:i + 7], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if do == "trickle":
            step = max(1, int(act.get("bps", 50)) // 10)
            for i in range(0, len(body), step):
                await send({"type": "http.response.body", "body": body[i:i + step], "more_body": True})
                await asyncio.sleep(0.1)
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.body", "body": body})


class AdminAuth:
    """Every admin route goes through this: `Authorization: Bearer <admin token>` (the hex in the state
    folder's admin.token), compared in constant time; anything else is a 401 and reaches no route."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not admin_authorized(dict(scope["headers"]).get(b"authorization", b""),
                                                             self.token):
            await _err(401, "unauthorized", "admin token missing or wrong (Authorization: Bearer <admin.token>)",
                       {"WWW-Authenticate": 'Bearer realm="clockterm-admin"'})(scope, receive, send)
            return
        await self.app(scope, receive, send)


def admin_authorized(header: bytes, token: str) -> bool:
    """Whether an Authorization header carries the admin token."""
    if not token or header[:7].lower() != b"bearer ":
        return False
    return secrets.compare_digest(header[7:].strip(), token.encode())


# The largest overlay a terminal takes (clockterm.uplink._CONFIG_MAX_BYTES): refused here, not there.
OVERLAY_MAX_BYTES = 2048


def build_admin(c: Central) -> ASGIApp:
    """The admin API (docs/central-admin-api.yaml), for operators and integrators: plain HTTP on loopback,
    every route behind AdminAuth. Rosters and config overlays are checked by the terminal's own rules
    before they are stored; what is refused is answered 400 with the reasons."""

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                c.faults.update(await request.json())
            except ValueError as e:
                return _err(400, "bad_faults", str(e))
        return JSONResponse(c.faults.as_dict())

    async def stats(_request: Request) -> Response:
        return JSONResponse({**c.stats, "punches_stored": c.store.count()})

    def export_args(q: Any) -> dict[str, Any]:
        return {"start": q.get("from"), "end": q.get("to"), "tz_name": q.get("tz", "UTC"),
                "device_id": q.get("device_id")}

    async def punches(request: Request) -> Response:
        q = request.query_params
        try:
            a = export_args(q)
            tz = zone(a["tz_name"])
            start = bound_ms(a["start"], tz) if a["start"] else None
            end = bound_ms(a["end"], tz, end=True) if a["end"] else None
        except ExportError as e:
            return _err(400, "bad_query", str(e))
        return JSONResponse(c.store.punches(a["device_id"], start, end))

    async def export(request: Request) -> Response:
        q = request.query_params
        buf = io.StringIO()
        try:
            try:
                max_shift = float(q.get("max_shift_h", MAX_SHIFT_H))
            except ValueError:
                raise ExportError(f"max_shift_h: expected hours as a number, got {q['max_shift_h']!r}") from None
            n = export_report(c.store, buf, q.get("report", "punches"), cols=q.get("columns"),
                              bom=q.get("bom", "0") in ("1", "true", "yes"), delimiter=q.get("delimiter", ","),
                              max_shift_h=max_shift, **export_args(q))
        except ValueError as e:  # ExportError (a ValueError)
            return _err(400, "bad_export", str(e))
        return Response(buf.getvalue().encode(), media_type="text/csv; charset=utf-8",
                        headers={"X-Rows": str(n), "Content-Disposition": 'attachment; filename="export.csv"'})

    async def roster_post(request: Request) -> Response:
        scope = request.query_params.get("scope", "*")
        merge = request.query_params.get("merge", "0") in ("1", "true", "yes")
        if scope != "*" and c.store.device(scope) is None:
            return _err(404, "unknown_device", f"no device {scope!r} (scope is * or a device id)")
        body = await request.body()
        try:
            rows = await run_in_threadpool(roster.read_csv, body)
            stored = await run_in_threadpool(c.store.import_roster_checked, rows, scope, not merge)
        except roster.RosterError as e:
            return JSONResponse({"error": "bad_roster", "detail": str(e), "problems": e.problems}, 400)
        return JSONResponse({"scope": scope, "imported": len(rows), "stored": stored})

    async def roster_get(request: Request) -> Response:
        scope = request.query_params.get("scope", "*")
        rows = c.store.roster_scope(scope)
        if request.query_params.get("format") == "csv":
            return Response(roster.to_csv(rows).encode(), media_type="text/csv; charset=utf-8")
        return JSONResponse({"scope": scope, "version": version_of(rows), "rows": rows})

    async def config(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if c.store.device(device_id) is None:
            return _err(404, "unknown_device", f"no device {device_id!r}")
        raw = await request.body()
        try:
            overlay = json.loads(raw)
        except ValueError:
            return _err(400, "bad_config", "the body is not JSON")
        if len(json.dumps(overlay, separators=(",", ":"))) > OVERLAY_MAX_BYTES:
            return _err(400, "bad_config", f"overlay over {OVERLAY_MAX_BYTES} bytes (a terminal refuses it)")
        ok, msg = await run_in_threadpool(check_overlay, overlay)
        if not ok:
            return _err(400, "bad_config", msg)
        c.store.set_config(device_id, overlay)
        return JSONResponse({"ok": True})

    async def register(request: Request) -> Response:
        # A new device (`clockterm provision --register`): its client secret is made here and shown once,
        # in this answer; the central keeps it in its database to check the device's token requests.
        try:
            body = await request.json()
        except ValueError:
            body = None
        dev = body.get("device_id") if isinstance(body, dict) else None
        if not isinstance(dev, str) or not DEVICE_ID.match(dev):
            return _err(400, "bad_device_id", "device_id: 1..64 characters of letters, digits, '.', '_', '-'")
        if c.store.device(dev) is not None and body.get("replace") is not True:
            return _err(409, "exists", f"device {dev} is registered already (replace: true gives it a new secret)")
        secret = c.store.add_device(dev)
        c.count("devices_registered")
        return JSONResponse({"device_id": dev, "client_secret": secret}, status_code=201,
                            headers={"Cache-Control": "no-store"})

    app = Starlette(routes=[
        Route("/devices", register, methods=["POST"]),
        Route("/faults", faults, methods=["GET", "POST"]),
        Route("/stats", stats),
        Route("/punches", punches),
        Route("/export.csv", export),
        Route("/roster", roster_get, methods=["GET"]),
        Route("/roster", roster_post, methods=["POST"]),
        Route("/config/{device_id}", config, methods=["POST"]),
    ])
    return AdminAuth(app, c.admin_token)
