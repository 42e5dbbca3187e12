# The device endpoint: the terminal's own HTTP API under /api/v1/ (docs/integrator.md, docs/device-api.yaml),
# served by clockterm.server (bounded slots, deadlines, eviction: the limits there).
#
# Endpoint (HTTP/1.1, keep-alive): HTTPS when the config names a certificate and key, plain HTTP only
# when it says so (endpoint.allow_plain_http). Bearer tokens with scopes read and admin, kept in the config
# only as their SHA-256: a token is hashed and the digests compared over every byte, so an empty, prefix
# or longer token fails like any other; only the Authorization header carries one. Failed attempts are
# counted per client address: past _FAIL_LIMIT in a row that address gets 429 with Retry-After until
# _FAIL_HOLD_MS after its last failure. No answer carries a secret: GET config redacts them, and a PUT
# that sends the placeholder back keeps the value in force.
# Answers are streamed through the app's shared answer buffer (server.send, put, dump) as HTTP chunks.
#
# Heap (docs/heap.md): the interned names are the nearest limit, so this module adds few: method and
# argument names are ones the firmware or the interpreter intern anyway, document keys, header names
# and routes live in format strings and bytes, and the texts are few long constants.

import binascii
import gc
import hashlib
import json
import os
import time

import asyncio
from micropython import const

from clockterm import forget, log
from clockterm.app import VERSION, _max_block
from clockterm.clock import iso_ms
from clockterm.punch import QUALITY
from clockterm.server import dump, put, send

_SL_TASK = const(0)  # a slot's fields that the endpoint reads (server.py defines them: copies)
_SL_PEER = const(8)
_SL_USED = const(9)
_SL_DROP = const(10)
_LINE = const(160)  # the endpoint's line buffers: the request line and each header read must fit
_HEAD_MAX = const(4096)  # bytes of a request head
_HEADERS_MAX = const(32)  # header lines of a head
_HEAD_MS = const(5000)  # a whole head must arrive within this (slowloris)
_IDLE_MS = const(15000)  # a kept-alive connection waits this long for its next request
_WRITE_MS = const(10000)  # each piece of an answer must be taken by the client within this
_FAIL_LIMIT = const(5)  # failed auth attempts in a row from one address before it gets 429
_FAIL_HOLD_MS = const(30000)  # ... until this long after its last failure
_FAIL_PEERS = const(4)  # addresses remembered (the one seen longest ago makes room)
_BODY_MS = const(60000)  # a body must arrive within this (a roster of 10,000 badges is ~400 KB)
_CONFIG_MAX = const(8192)  # bytes of a config PUT (config.py's file limit)
_ROSTER_MAX = const(1048576)  # bytes of a roster PUT
_ROSTER_LINE = const(160)  # bytes of one roster row
_LIMIT_MAX = const(1000)  # punches per page at most
_LIMIT_DEFAULT = const(100)
_SSE_POLL_MS = const(250)  # how often a subscriber's task looks for new punches and alerts
_SSE_PING_MS = const(15000)  # a comment line this often keeps proxies from closing an idle stream
_REBOOT_MS = const(500)  # a reboot action waits this long (its answer leaves first)
_UNKNOWN_MS = const(0x3FFFFFFF)  # the clock's "unknown" uncertainty (clock.py): null on this API
_LOW_HEAP = const(8192)  # health: less free heap than this is "degraded"
_JOURNAL_FULLISH = const(90)  # health: journal fill percent that is "degraded"
_CRASH_LOOP = const(20)  # health: restarts of a critical task that are "failing" (app stops the watchdog)
_N_SUBSCRIBERS = const(8)  # event streams open now (not a metric)
_PUNCH_JSON = const('{"journal_id":"%s","seq":%d,"utc":"%s","utc_ms":%d,"utc_offset_min":%d,"kind":%s,'
                    '"badge":%s,"employee":%s,"quality":"%s","uncertainty_ms":%s}')
_PUNCH_CSV = const("%s,%d,%s,%d,%d,%s,%s,%s,%s,%s\r\n")  # the order of _PUNCH_CSV_HEAD
_HEALTH_WORDS = const("ok degraded failing")
_SECONDS = const("%s%d.%03d")  # sign, whole seconds, ms
_BAD_QUERY = const("expected after=<journal_id>:<seq>, limit=1..1000, format=csv or json")
_READ = const(1)  # scope bits
_ADMIN = const(2)
# A request's head as run reads it (a list per connection, reused by each request), indexed by:
_H_METHOD = const(0)  # bytes; None when the request line was refused
_H_PATH = const(1)  # with its query string
_H_AUTH = const(2)  # the Authorization value (b"": none)
_H_ACCEPT = const(3)
_H_MATCH = const(4)  # If-Match
_H_LENGTH = const(5)  # Content-Length; None when there is none (every use tests it for truth first)
_H_KEEP = const(6)  # False when the client said Connection: close
_H_SIZE = const(7)
# Counters (Server.counts, a list), in the order of _METRICS's last eight families
_N_REQUESTS = const(0)
_N_AUTH_FAILURES = const(1)
_N_RATE_LIMITED = const(2)
_N_CONNECTIONS = const(3)
_N_EVICTIONS = const(4)
_N_REFUSALS = const(5)
_N_TIMEOUTS = const(6)
_N_ERRORS = const(7)
# The routes under /api/v1/, numbered by their place in this string (from 1)
_ROUTES = const(b" health status time punches metrics events roster config actions/resync actions/flush"
                b" actions/clear-alerts actions/reboot actions/drop-refused ")
_RT_HEALTH = const(1)
_RT_STATUS = const(2)
_RT_TIME = const(3)
_RT_PUNCHES = const(4)
_RT_METRICS = const(5)
_RT_EVENTS = const(6)
_RT_ROSTER = const(7)  # the first that takes a PUT
_RT_CONFIG = const(8)  # the first that needs the admin scope
_RT_ACTION = const(9)  # the first action
_RT_REBOOT = const(12)
_RT_DROP = const(13)

# Status lines, found by their code (one string: a tuple would be built in the heap at import)
_REASONS = const("200 OK\n202 Accepted\n400 Bad Request\n401 Unauthorized\n403 Forbidden\n404 Not Found\n"
                 "405 Method Not Allowed\n411 Length Required\n412 Precondition Failed\n413 Content Too Large\n"
                 "414 URI Too Long\n429 Too Many Requests\n431 Request Header Fields Too Large\n"
                 "501 Not Implemented\n503 Service Unavailable\n505 HTTP Version Not Supported\n")
_HEAD = const("HTTP/1.1 %s\r\nContent-Type: %s\r\nCache-Control: no-store\r\n%s%s%s\r\n")
_JSON = const("application/json")
_PUNCH_CSV_HEAD = const("journal_id,seq,utc,utc_ms,utc_offset_min,kind,badge,employee,quality,uncertainty_ms\r\n")
_HEALTH = const('{"status":"%s","reasons":%s,"device_id":%s}\n')
# The metrics: one family per line, "name type help"; values in the same order (Endpoint.metrics)
_METRICS = const(
    "up_seconds gauge Seconds since the terminal started\n"
    "clock_synced gauge 1 when the clock is synced to a time source\n"
    "clock_sync_age_seconds gauge Seconds since the last accepted sync (-1: none since boot)\n"
    "clock_offset_seconds gauge Offset found by the last accepted sync\n"
    "clock_uncertainty_seconds gauge Bound on the clock's error now (-1: unknown)\n"
    "clock_drift_ppm gauge Measured drift of the board's oscillator\n"
    "clock_steps_total counter Clock steps taken since boot\n"
    "clock_alerts gauge Clock alerts raised now\n"
    "journal_backlog_punches gauge Punches not yet stored by the central\n"
    "journal_fill_ratio gauge Share of the journal held by unsent punches\n"
    "journal_last_seq gauge Sequence number of the newest punch\n"
    "journal_corrupt_skipped_total counter Corrupt records skipped since boot\n"
    "uplink_failures gauge Uplink attempts failed in a row\n"
    "uplink_punches_sent_total counter Punches the central acknowledged since boot\n"
    "uplink_batches_total counter Batches the central stored since boot\n"
    "uplink_refused_punches gauge Punches the central refused, kept aside on the terminal\n"
    "heap_free_bytes gauge Free heap\n"
    "heap_max_block_bytes gauge Largest block the heap can give\n"
    "loop_stall_max_seconds gauge Longest event-loop stall seen since boot\n"
    "endpoint_requests_total counter Requests read by the endpoint\n"
    "endpoint_auth_failures_total counter Requests with a missing or wrong token\n"
    "endpoint_rate_limited_total counter Requests refused with 429 after failed attempts\n"
    "endpoint_connections_total counter Connections accepted\n"
    "endpoint_evictions_total counter Connections closed to make room for a newcomer\n"
    "endpoint_refusals_total counter Connections refused: every slot was answering\n"
    "endpoint_timeouts_total counter Connections closed at a deadline\n"
    "endpoint_errors_total counter Connections that failed in the server\n")


# The module's longer texts, in one constant: a constant costs ~40 bytes of heap at each place the code
# uses it (the bytes stay in flash), one string costs it once. _line(_X_...) gives one, at run time
# (each ends with an @: a separator that is an interned name already).
_TEXT = const(
    'Content-Length: %d\r\n@'
    'Transfer-Encoding: chunked\r\n@'
    'Connection: close\r\n@'
    'not enough memory now: try again@'
    'Retry-After: %d\r\n@'
    'WWW-Authenticate: Bearer realm="clockterm"\r\n@'
    "this token's scope does not allow it@"
    'Allow: %s\r\n@'
    'this route takes no body@'
    'ETag: "%08x"\r\n@'
    '/roster.etag@'
    'clock not synced (%s)@'
    'journal full: new punches refused@'
    'journal %d%% full@'
    'uplink %s: %s@'
    'uplink failing (%d in a row): %s@'
    'task %s in a crash loop@'
    'task %s restarted %d times@'
    'low heap: %d bytes free@'
    'config refused, last good in force@'
    '%s%02d:%02d@'
    'text/plain; version=0.0.4; charset=utf-8@'
    '# HELP clockterm_%s %s\n# TYPE clockterm_%s %s\nclockterm_%s %s\n@'
    '# HELP clockterm_taps_total Badge reads since boot, by result\n# TYPE clockterm_taps_total counter\n@'
    'clockterm_taps_total{result="%s"} %d\n@'
    '# HELP clockterm_task_restarts_total Restarts of a supervised task since boot\n'
    '# TYPE clockterm_task_restarts_total counter\n'
    '@'
    'clockterm_task_restarts_total{task="%s"} %d\n@'
    "# HELP clockterm_info The terminal's identity\n"
    '# TYPE clockterm_info gauge\n'
    'clockterm_info{device_id=%s,board="%s",firmware="%s"} 1\n'
    '@'
    'text/csv; charset=utf-8@'
    'Link: </api/v1/punches?after=%s:%d&limit=%d>; rel="next"\r\nX-Next-Cursor: %s:%d\r\nX-More: %s\r\n@'
    '{"device_id":%s,"journal_id":"%s","punches":[@'
    '],"next":"%s:%d","more":%s}\n@'
    'a Content-Length is needed@'
    'the config changed since it was read (its ETag is "%08x")@'
    'config written; it applies at the next boot@'
    '{"written":true,"applies":"at the next boot"}@'
    'body longer than its Content-Length@'
    'line %d: over %d bytes@'
    'body cut short@'
    'flash error: %s@'
    'roster refused, the one in force kept: %s@'
    'roster replaced: %d badges@'
    '{"badges":%d}@'
    '{"accepted":true}@'
    'reboot asked for@'
    'text/event-stream@'
    ': clockterm events\n\n@'
    'id: %s:%d\nevent: punch\ndata: %s\n\n@'
    'event: alert\ndata: {"alert":"%s","state":"raised","since_ms":%d}\n\n@'
    'event: alert\ndata: {"alert":"%s","state":"cleared"}\n\n@'
    'punches refused by the central, kept aside on the terminal: %d (journal.seq: %s)@'
    '/refused/@'
    'no punch kept aside by that name (punch=<journal_id>.<seq>)@'
    '{"dropped":"%s","refused":%d}@'
    'punch %s kept aside dropped for good@'
)
_X_LENGTH = const(0)
_X_CHUNKED = const(1)
_X_CLOSE = const(2)
_X_NO_MEMORY = const(3)
_X_RETRY = const(4)
_X_BEARER = const(5)
_X_SCOPE = const(6)
_X_ALLOW = const(7)
_X_NO_BODY = const(8)
_X_ETAG = const(9)
_X_ROSTER_ETAG = const(10)
_X_UNSYNCED = const(11)
_X_JOURNAL_FULL = const(12)
_X_JOURNAL_FILL = const(13)
_X_UPLINK_DOWN = const(14)
_X_UPLINK_FAILING = const(15)
_X_CRASH_LOOP = const(16)
_X_RESTARTS = const(17)
_X_LOW_HEAP = const(18)
_X_CONFIG_REFUSED = const(19)
_X_UTC_OFFSET = const(20)
_X_METRICS_TYPE = const(21)
_X_FAMILY = const(22)
_X_TAPS = const(23)
_X_TAP = const(24)
_X_RESTARTS_HEAD = const(25)
_X_RESTART = const(26)
_X_INFO = const(27)
_X_CSV_TYPE = const(28)
_X_LINK = const(29)
_X_PAGE_HEAD = const(30)
_X_PAGE_TAIL = const(31)
_X_NO_LENGTH = const(32)
_X_CHANGED = const(33)
_X_WRITTEN = const(34)
_X_WRITTEN_JSON = const(35)
_X_LONGER = const(36)
_X_LINE_LONG = const(37)
_X_CUT_SHORT = const(38)
_X_FLASH = const(39)
_X_ROSTER_REFUSED = const(40)
_X_ROSTER_DONE = const(41)
_X_BADGES = const(42)
_X_ACCEPTED = const(43)
_X_REBOOT = const(44)
_X_SSE_TYPE = const(45)
_X_SSE_HELLO = const(46)
_X_SSE_PUNCH = const(47)
_X_SSE_RAISED = const(48)
_X_SSE_CLEARED = const(49)
_X_REFUSED = const(50)
_X_ASIDE = const(51)  # the folder of the punches kept aside, in the uplink's fs_root (uplink._ASIDE)
_X_NO_SUCH_PUNCH = const(52)
_X_DROPPED = const(53)
_X_DROPPED_LOG = const(54)



# --- a connection -----------------------------------------------------------------------------

async def run(self, stream, index):
    """Requests on one connection, one after the other (keep-alive), until it closes."""
    req = [None] * _H_SIZE  # each request's head (_H_*)
    ms = _HEAD_MS  # a new connection's first head: whole within _HEAD_MS of the connection's start
    while True:
        err = await _read_head(self, index, ms, req)
        ms = _IDLE_MS
        self.counts[_N_REQUESTS] += 1
        if err is not None:
            # A head refused is answered and the connection closed (its framing is not to be trusted)
            await _error(self, stream, err, None, False)
            return
        keep = req[_H_KEEP]
        if req[_H_METHOD] == b"HEAD":  # not served (an answer to HEAD has no body): its head alone
            keep = keep and not req[_H_LENGTH]  # a body not read leaves the connection unusable (as in request)
            head(self, stream, 501, _JSON, 0, keep)
            await stream.drain()
            if keep:
                continue
            return
        self.wait(index, _WRITE_MS, True)
        try:
            keep = await request(self, stream, index, req) and keep
        except MemoryError:
            # Not enough heap for this answer now (say a config document while a flush runs): said,
            # the connection closed; nothing changed.
            gc.collect()
            await _error(self, stream, 503, _line(_X_NO_MEMORY), False)
            return
        if not keep:
            return


async def _read_head(self, index, ms, req):
    # The next request's head into req (_H_*): its request line within ms (a kept-alive connection waits
    # _IDLE_MS for it, a new one _HEAD_MS), the rest within _HEAD_MS of it, within the head's limits.
    # Returns None, or the status code that refuses the head (read through to its blank line when the
    # limits allow).
    sl = self.tasks[index]
    self.wait(index, ms)
    line = b""
    while line is not None and not line:  # empty lines before a request (RFC 9112 2.2): skipped
        sl[_SL_USED] = 0
        try:
            line = await self.readline(index)
        except ValueError:  # a request line past the head's limit (server.limit): a 414, below
            line = None
    if ms == _IDLE_MS:
        self.wait(index, _HEAD_MS)
    req[_H_METHOD] = req[_H_PATH] = None
    req[_H_AUTH] = req[_H_ACCEPT] = req[_H_MATCH] = b""
    req[_H_LENGTH] = None
    req[_H_KEEP] = True
    err = None
    if line is None:
        err = 414
    else:
        w = line.split(b" ")
        if len(w) != 3 or not w[1].startswith(b"/"):
            err = 400
        elif w[2] != b"HTTP/1.1":  # (HTTP/1.0 too: the answers are streamed in chunks)
            err = 505 if w[2].startswith(b"HTTP/") else 400
        else:
            req[_H_METHOD], req[_H_PATH] = w[0], w[1]
    n = 0
    while True:
        try:
            line = await self.readline(index)
        except ValueError:  # a line past the head's limit (server.limit): a 431, next
            line = None
        if sl[_SL_USED] > _HEAD_MAX:
            return err or 431
        if line is not None and not line:
            return err
        n += 1
        if n > _HEADERS_MAX:
            return err or 431
        if line is None:
            # A long header: read through and dropped (not one this server reads), unless it frames
            # the body: then its body would be read as the next request (one smuggled past a proxy
            # that read the header)
            line = sl[_SL_DROP].lower()
            if line.startswith(b"content-length:") or line.startswith(b"transfer-encoding:"):
                err = err or 431
        else:
            err = err or _header(line, req)


def _header(line, req):
    # One header line into req (_H_*), when it is one this server reads; returns the status code that
    # refuses it, else None.
    i = line.find(b":")
    if i <= 0 or line[i - 1] == 32 or line[i - 1] == 9:
        return 400
    k = line[:i].lower()
    v = line[i + 1:].strip()
    if k == b"authorization":
        req[_H_AUTH] = v
    elif k == b"content-length":
        length = req[_H_LENGTH]
        if not v.isdigit() or len(v) > 9 or (length is not None and int(v) != length):
            return 400  # (two that disagree, 0 among them: which frames the body is not to be guessed)
        req[_H_LENGTH] = int(v)
    elif k == b"transfer-encoding":
        return 411  # only bodies with a Content-Length are taken
    elif k == b"connection":
        if v.lower().find(b"close") >= 0:
            req[_H_KEEP] = False
    elif k == b"accept":
        req[_H_ACCEPT] = v
    elif k == b"if-match":
        req[_H_MATCH] = v
    return None


async def _error(self, stream, code, msg=None, alive=True, headers=""):
    # A small JSON error answer: msg, or the status line's reason. Returns alive (whether the
    # connection stays open after it).
    return await answer(self, stream, code, alive, json.dumps({"error": msg or _status(code)[4:]}), headers)


def _status(code):
    # The status line's text for code ("404 Not Found")
    i = _REASONS.find(str(code))
    return _REASONS[i:_REASONS.index("\n", i)]


async def answer(self, stream, code, alive, body, headers=""):
    # A JSON answer (a str) with its Content-Length. Returns alive.
    body = (body + "\n").encode()
    head(self, stream, code, _JSON, len(body), alive, headers)
    stream.write(body)
    await stream.drain()
    return alive

def head(self, stream, code, kind, length=None, alive=True, headers="", chunked=False):
    # The status line and headers (kind: the Content-Type; headers: more lines, each with its CRLF).
    # length None: a streamed answer (chunked, or up to the close).
    stream.write((_HEAD % (_status(code), kind, headers,
                           _line(_X_LENGTH) % length if length is not None else
                           _line(_X_CHUNKED) if chunked else "",
                           "" if alive else _line(_X_CLOSE))).encode())

async def flush(self, stream, out, chunked):
    # The rest of a streamed answer, and its end.
    await send(stream, out, chunked)
    if chunked:
        stream.write(b"0\r\n\r\n")
        await stream.drain()

# --- auth -------------------------------------------------------------------------------------

def auth(self, index, value):
    # The scope bits the request's Authorization value grants (0: none, or a wrong token), or None
    # when its address is held back after too many failures.
    now = time.ticks_ms()
    peer = self.tasks[index][_SL_PEER]
    f = None
    for x in self.failures:
        if x[0] == peer:
            f = x
    # (the age checked both ways: ticks wrap, and an address back after days must not read as held)
    if f is not None and f[1] >= _FAIL_LIMIT and 0 <= time.ticks_diff(now, f[2]) < _FAIL_HOLD_MS:
        self.counts[_N_RATE_LIMITED] += 1
        return None
    scope = 0
    if value[:7].lower() == b"bearer " and len(value) > 7:
        d = hashlib.sha256(value[7:].strip()).digest()
        for key, bits in self.keys:
            x = 0
            for i in range(32):  # every byte, whatever matches: constant time
                x |= d[i] ^ key[i]
            if not x:
                scope = bits
    if scope:
        if f is not None:
            f[1] = 0
        return scope
    self.counts[_N_AUTH_FAILURES] += 1
    if f is None:
        if len(self.failures) >= _FAIL_PEERS:
            self.failures.sort(key=lambda e: time.ticks_diff(now, e[2]))
            self.failures.pop()
        f = [peer, 0, now]
        self.failures.append(f)
    f[1] += 1
    f[2] = now
    return 0

# --- routes -----------------------------------------------------------------------------------

async def request(self, stream, index, req):
    # The answer to the request whose head is req (_H_*); returns whether the connection may stay open.
    method, path, accept, length = req[_H_METHOD], req[_H_PATH], req[_H_ACCEPT], req[_H_LENGTH]
    args = b""  # the query string
    i = path.find(b"?")
    if i >= 0:
        path, args = path[:i], path[i + 1:]
    keep = not length  # a body not read (a refused request) leaves the connection unusable
    r = 0
    if path.startswith(b"/api/v1/") and path.find(b" ") < 0:
        i = _ROUTES.find(b" " + path[8:] + b" ")
        r = _ROUTES.count(b" ", 0, i + 1) if i >= 0 else 0
    need = _READ
    if r >= _RT_CONFIG or (r == _RT_ROSTER and method == b"PUT"):
        need = _ADMIN
    elif r == _RT_HEALTH and self.free:
        need = 0
    scope = auth(self, index, req[_H_AUTH]) if need else need
    if scope is None:
        return await _error(self, stream, 429, None, False, _line(_X_RETRY) % (_FAIL_HOLD_MS // 1000))
    if scope & need != need:
        if not scope:
            return await _error(self, stream, 401, None, keep, _line(_X_BEARER))
        return await _error(self, stream, 403, _line(_X_SCOPE), keep)
    if not r:
        return await _error(self, stream, 404, None, keep)
    allow = b"POST" if r >= _RT_ACTION else b"GET PUT" if r >= _RT_ROSTER else b"GET"
    if method not in allow.split():
        return await _error(self, stream, 405, None, keep, _line(_X_ALLOW) % allow.decode().replace(" ", ", "))
    if method == b"PUT":
        if r == _RT_CONFIG:
            return await update(self, stream, index, length, req[_H_MATCH])
        return await roster(self, stream, index, length)
    if length:
        return await _error(self, stream, 413, _line(_X_NO_BODY), False)
    if r >= _RT_ACTION:
        return await post(self, stream, r, args)
    out = self.app.out.reset()
    if r == _RT_EVENTS:
        return await listen(self, stream, index, args, out)
    if r == _RT_PUNCHES:
        return await rows(self, stream, args, accept, out)
    if r == _RT_METRICS:
        return await format(self, stream, out)
    if r == _RT_HEALTH:
        doc = check(self)
        return await answer(self, stream, 503 if doc[2] else 200, True,
                                 _HEALTH[:-1] % (doc[0], json.dumps(doc[1]), json.dumps(self.app.device_id)))
    headers = ""
    if r == _RT_STATUS:
        doc = self.app.status()
    elif r == _RT_TIME:
        doc = clock(self)
    elif r == _RT_ROSTER:
        doc = self.app.roster.status()
        try:
            with open(self.app.roster.path.rpartition("/")[0] + _line(_X_ROSTER_ETAG)) as f:
                doc["version"] = f.read(200).strip() or None
        except OSError:
            doc["version"] = None
    else:
        doc, etag = config(self, None)
        headers = _line(_X_ETAG) % etag
    head(self, stream, 200, _JSON, None, True, headers, True)
    await dump(stream, out, True, doc)
    await flush(self, stream, out, True)
    return True


def _line(n):
    # Text n of _TEXT (_X_*)
    i = 0
    for _ in range(n):
        i = _TEXT.index("@", i) + 1
    return _TEXT[i:_TEXT.index("@", i)]


def _row(p, text):
    # A punch as a CSV row (text) or a JSON object: every field the central gets, and its UTC time in ISO
    # 8601. A CSV field is quoted (RFC 4180) when it holds a separator, a quote or a line end, and has a '
    # before it when it begins with = + - @ (a spreadsheet's formula: CSV injection).
    unc = None if p.uncertainty_ms >= _UNKNOWN_MS else p.uncertainty_ms
    if not text:
        return _PUNCH_JSON % (p.journal_id, p.seq, iso_ms(p.utc_ms), p.utc_ms, p.utc_offset_min, json.dumps(p.kind),
                              json.dumps(p.badge), json.dumps(p.employee), QUALITY[p.quality], json.dumps(unc))
    f = []
    for v in (p.kind, p.badge, p.employee, unc):
        v = b"" if v is None else str(v).encode()
        if v and v[:1] in b"=+-@\t\r":  # a spreadsheet would run it as a formula: a ' makes it text
            v = b"'" + v
        for c in b',"\r\n':
            if v.find(bytes((c,))) >= 0:
                v = b'"' + v.replace(b'"', b'""') + b'"'
                break
        f.append(v.decode())
    return _PUNCH_CSV % (p.journal_id, p.seq, iso_ms(p.utc_ms), p.utc_ms, p.utc_offset_min, f[0], f[1], f[2],
                         QUALITY[p.quality], f[3])


async def _restart(board):
    await asyncio.sleep_ms(_REBOOT_MS)
    board.reset()


def check(self):
    """Health: (ok | degraded | failing, [reasons], failing?); no secret, safe to serve without a token.
    Failing: punches cannot be taken or cannot leave (journal full, uplink disabled or its batch
    refused, punches refused by the central and kept aside, a critical task in a crash loop).
    Degraded: they are taken and will leave, but something needs a look (clock not synced or stale,
    journal filling, uplink retrying, task restarts, low heap, a refused config)."""
    app = self.app
    bad = []  # failing
    doubt = []  # degraded
    c = app.clock.status()
    if not c["synced"]:
        doubt.append(_line(_X_UNSYNCED) % c["quality"])
    j = app.journal.status()
    if j["warnings"] and j["warnings"][0] == "memory full":
        bad.append(_line(_X_JOURNAL_FULL))
    elif j["fill_pct"] >= _JOURNAL_FULLISH:
        doubt.append(_line(_X_JOURNAL_FILL) % j["fill_pct"])
    u = app.uplink
    if u.client is None or u.rejected_seq is not None:  # disabled (no usable CA or URL), or a batch refused
        bad.append(_line(_X_UPLINK_DOWN) % (u.state, u.last_error))
    elif u.failures:
        doubt.append(_line(_X_UPLINK_FAILING) % (u.failures, u.last_error))
    if u.refused:  # they reach the central only once it takes them (offered again with the pulls)
        try:
            kept = ", ".join(sorted(os.listdir(u.fs_root + _line(_X_ASIDE))))
        except (OSError, TypeError) as e:
            kept = str(e)
        bad.append(_line(_X_REFUSED) % (u.refused, kept))
    for k, t in app.tasks.items():
        if t["restarts"] >= _CRASH_LOOP and t["critical"]:
            bad.append(_line(_X_CRASH_LOOP) % k)
        elif t["restarts"] >= 3:
            doubt.append(_line(_X_RESTARTS) % (k, t["restarts"]))
    gc.collect()
    if gc.mem_free() < _LOW_HEAP:
        doubt.append(_line(_X_LOW_HEAP) % gc.mem_free())
    if app.cfg_error:
        doubt.append(_line(_X_CONFIG_REFUSED))
    w = _HEALTH_WORDS.split()
    return w[2] if bad else w[1] if doubt else w[0], bad + doubt, bool(bad)


def clock(self):
    # The time document: the clock's status, UTC and local time, the zone, the SNTP state
    app = self.app
    d = app.clock.status()
    ms = d["utc_ms"]
    off = app.tz.offset_s(ms // 1000)
    m = abs(off) // 60
    d["utc_iso8601"] = iso_ms(ms)
    m = _line(_X_UTC_OFFSET) % ("-" if off < 0 else "+", m // 60, m % 60)
    d["local_iso8601"] = iso_ms(ms + off * 1000)[:-1] + m
    d["utc_offset_min"] = off // 60
    d["tz"] = app.tz.name
    d["sntp"] = app.sntp.state
    return d


async def format(self, stream, out):
    # Prometheus text exposition (0.0.4): one HELP and TYPE per family, units in the names, _total on
    # counters. The values in _METRICS's order.
    app = self.app
    c = app.clock.status()
    j = app.journal.status()
    u = app.uplink
    k = self.counts
    now = c["utc_ms"]
    gc.collect()
    # Seconds from whole ms as exact decimals (_SECONDS): an ESP32's 32-bit float keeps 7 digits, so
    # /1000 would round an uptime past 11 days, or a first sync's offset of years, to seconds or worse
    m = app.clock.mono_ms()
    e = 0 if c["last_sync"] is None else max(0, now - c["last_sync"])
    o = c["offset_ms"] or 0  # (a float only when small: Clock.offset_ms)
    v = [_SECONDS % ("", m // 1000, m % 1000), int(c["synced"]),
         -1 if c["last_sync"] is None else _SECONDS % ("", e // 1000, e % 1000),
         o / 1000 if isinstance(o, float) else _SECONDS % ("-" if o < 0 else "", abs(o) // 1000, abs(o) % 1000),
         -1 if c["uncertainty_ms"] is None else c["uncertainty_ms"] / 1000, c["drift_ppm"], c["steps"],
         len(c["alerts"]), j["last_seq"] - j["acked_seq"], j["fill_pct"] / 100, j["last_seq"],
         j["corrupt_skipped"], u.failures, u.sent, u.batches, u.refused, gc.mem_free(), _max_block(),
         app.stall_ms_max / 1000]
    c = j = None
    v.extend(k[:_N_SUBSCRIBERS])
    head(self, stream, 200, _line(_X_METRICS_TYPE), None, True, "", True)
    # One family at a time from _METRICS: split whole, it was held through the answer's writes, once per
    # answer in flight (heap: see docs/heap.md)
    form = _line(_X_FAMILY)
    i = e = 0
    for x in v:
        e = _METRICS.index("\n", i)
        name, kind, text = _METRICS[i:e].split(" ", 2)
        await put(stream, out, True, form % (name, text, name, kind, name, x))
        i = e + 1
    await put(stream, out, True, _line(_X_TAPS))
    for name, n in app.terminal.counts.items():
        await put(stream, out, True, _line(_X_TAP) % (name, n))
    await put(stream, out, True, _line(_X_RESTARTS_HEAD))
    for name, t in app.tasks.items():
        await put(stream, out, True, _line(_X_RESTART) % (name, t["restarts"]))
    await put(stream, out, True, _line(_X_INFO)
              % (json.dumps(app.device_id), app.board.name, VERSION))
    await flush(self, stream, out, True)
    return True


async def rows(self, stream, args, accept, out):
    # A page of punches after a cursor: ?after=<journal_id>:<seq>&limit=N&format=csv|json. Seqs are
    # never reused by a journal that keeps its seq floor (a reformat does), so the seq places a cursor of
    # this journal; one of another (the flash erased) starts at the oldest punch held. The next page's
    # cursor is known before the rows are read (seqs follow one another in a journal): it goes in
    # the headers, and in the JSON.
    j = self.app.journal
    after = 0
    limit = _LIMIT_DEFAULT
    csv = accept.find(b"text/csv") >= 0
    jid = j.journal_id
    for part in args.split(b"&"):
        k, _, v = part.partition(b"=")
        if k == b"after":
            v, _, s = v.replace(b"%3A", b":").replace(b"%3a", b":").rpartition(b":")
            if not s.isdigit() or len(s) > 10:
                return await _error(self, stream, 400, _BAD_QUERY)
            # A cursor of another journal (the flash erased and the seqs begun again): from the oldest
            # punch held, never past seqs this journal has not given yet
            after = int(s) if not v or v.lower() == jid.encode() else 0
        elif k == b"limit":
            if not v.isdigit() or not 1 <= int(v) <= _LIMIT_MAX:
                return await _error(self, stream, 400, _BAD_QUERY)
            limit = int(v)
        elif k == b"format":
            if v != b"csv" and v != b"json":
                return await _error(self, stream, 400, _BAD_QUERY)
            csv = v == b"csv"
    first = j.last_seq + 1
    for p in j.pending(0, 1):
        first = p.seq
    start = max(after, first - 1)
    end = max(start, min(start + limit, j.last_seq))
    more = json.dumps(end < j.last_seq)
    head(self, stream, 200, _line(_X_CSV_TYPE) if csv else _JSON, None, True,
              _line(_X_LINK) % (jid, end, limit, jid, end, more), True)
    if csv:
        await put(stream, out, True, _PUNCH_CSV_HEAD)
    else:
        await put(stream, out, True, _line(_X_PAGE_HEAD)
                  % (json.dumps(self.app.device_id), jid))
    sep = ""
    for p in j.pending(start, end - start):
        if p.seq > end:
            break
        await put(stream, out, True, _row(p, True) if csv else sep + _row(p, False))
        sep = ","
    if not csv:
        await put(stream, out, True, _line(_X_PAGE_TAIL) % (jid, end, more))
    await flush(self, stream, out, True)
    return True


def config(self, body):
    # (the config in force as GET shows it, its CRC-32: the ETag) when body is None; else (the config a
    # PUT brings, checked, its secrets resolved: config.view; the ETag of the one in force). Raises
    # ValueError (config.ConfigError) naming what is refused.
    from clockterm import config

    try:
        data = config.read(self.app.board.config_path)
        return config.view(data, body), binascii.crc32(data)
    finally:
        config = None
        forget("clockterm.config")


async def read(self, stream, index, length, limit, body=True):
    # The request's body (up to limit bytes), or None when it did not come whole or is refused
    # (answered here). body False: only checked (the caller streams it), b"" when it may come.
    if not length or length > limit:
        await _error(self, stream, 413 if length else 411, None if length else _line(_X_NO_LENGTH),
                          False)
        return None
    if not body:
        return b""
    self.wait(index, _BODY_MS, True)
    buf = bytearray(length)
    if await self.readinto(index, memoryview(buf)) != length:
        return None
    self.wait(index, _WRITE_MS, True)
    return buf


async def update(self, stream, index, length, match):
    # PUT config: checked by the device's own validator, written atomically (the last good one is
    # kept beside it at each boot), applied at the next boot (the reboot action, or any).
    # If-Match, when given, must name the ETag of the config in force.
    import os

    body = await read(self, stream, index, length, _CONFIG_MAX)
    if body is None:
        return False
    try:
        doc, etag = config(self, body)
    except ValueError as e:
        return await _error(self, stream, 400, str(e))
    body = None
    if match and match != b"*" and match.strip(b'"').decode() != "%08x" % etag:
        return await _error(self, stream, 412, _line(_X_CHANGED) % etag)
    text = json.dumps(doc)
    doc = None
    path = self.app.board.config_path
    try:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.rename(path + ".tmp", path)
    except OSError as e:  # a full or failing flash: said, the config in force unchanged
        try:
            os.remove(path + ".tmp")
        except OSError:
            pass
        return await _error(self, stream, 503, _line(_X_FLASH) % e, False)
    log.info("endpoint", _line(_X_WRITTEN))
    return await answer(self, stream, 200, True, _line(_X_WRITTEN_JSON),
                            _line(_X_ETAG) % binascii.crc32(text))


async def roster(self, stream, index, length):
    # PUT roster: CSV (badge,employee_id,name; a header row allowed; RFC 4180 quotes) streamed to flash
    # row by row, checked and swapped in atomically (roster.RosterWriter): on any error the roster in
    # force stays. Rows must be sorted by badge (`clockterm roster push --url` sorts them).
    if await read(self, stream, index, length, _ROSTER_MAX, False) is None:
        return False
    from clockterm.roster import RosterWriter

    r = self.app.roster
    sl = self.tasks[index]
    sl[_SL_USED] = 0
    w = None
    n = 0
    err = None
    try:
        w = RosterWriter(r.path)
        while sl[_SL_USED] < length:
            self.wait(index, _BODY_MS, True)
            line = await self.readline(index)
            n += 1
            if sl[_SL_USED] > length:
                raise ValueError(_line(_X_LONGER))
            if line is None or len(line) > _ROSTER_LINE:
                raise ValueError(_line(_X_LINE_LONG) % (n, _ROSTER_LINE))
            w.feed(line, n)
        w.commit()
        n = w.count
        w = None
    except (ValueError, UnicodeError, EOFError) as e:
        err = str(e) or _line(_X_CUT_SHORT)
    except OSError as e:
        err = _line(_X_FLASH) % e
    finally:
        if w is not None:
            w.abort()
    self.wait(index, _WRITE_MS, True)
    if err is not None:  # the rest of the body is not read: the connection closes after the answer
        return await _error(self, stream, 400, _line(_X_ROSTER_REFUSED) % err, False)
    r.open()
    try:
        import os

        os.remove(r.path.rpartition("/")[0] + _line(_X_ROSTER_ETAG))  # the central's version no longer in force
    except OSError:
        pass
    log.info("endpoint", _line(_X_ROSTER_DONE) % n)
    return await answer(self, stream, 200, True, _line(_X_BADGES) % n)


async def post(self, stream, r, args):
    # Action r (its route number), answered 202: resync the clock now, flush the backlog now, clear the
    # latched clock alerts, reboot (once the answer is out). Answered 200 (done at once): drop for good
    # the punch kept aside (uplink, "Refused punches") that ?punch=<journal id>.<seq> names (one in
    # that folder: no other path).
    app = self.app
    if r == _RT_DROP:
        u = app.uplink
        folder = str(u.fs_root) + _line(_X_ASIDE)  # (no fs_root: "None/refused/", none kept)
        name = args[6:].decode() if args.startswith(b"punch=") else ""
        try:
            os.remove(folder + name if name and name in os.listdir(folder) else "")
        except OSError:
            return await _error(self, stream, 404, _line(_X_NO_SUCH_PUNCH))
        u.refused = len(os.listdir(folder))
        log.warn("endpoint", _line(_X_DROPPED_LOG) % name)
        return await answer(self, stream, 200, True, _line(_X_DROPPED) % (name, u.refused))
    if r == _RT_ACTION:
        app.sntp.kick()
    elif r == _RT_ACTION + 1:
        app.uplink.kick()
    elif r == _RT_ACTION + 2:
        app.clock.clear_alerts()
    else:
        log.warn("endpoint", _line(_X_REBOOT))
        asyncio.create_task(_restart(app.board))
    return await answer(self, stream, 202, True, _line(_X_ACCEPTED))


async def listen(self, stream, index, args, out):
    # Server-Sent Events: `punch` (the punch as in /punches; its id the cursor) and `alert` (a clock
    # alert raised or cleared). Polled from the journal and the clock, so the tap path never waits
    # for a subscriber; one that does not take its events within _WRITE_MS is dropped (the slot's
    # deadline). ?after=<journal_id>:<seq> (the colon may come as %3A) replays the punches after that
    # cursor first. One subscriber at a time (_N_SUBSCRIBERS holds its slot + 1): a new one takes over
    # (a client that reconnects finds its old stream still open until its next write fails).
    k = self.counts
    if k[_N_SUBSCRIBERS]:
        self.close(k[_N_SUBSCRIBERS] - 1)
    app = self.app
    j = app.journal
    last = j.last_seq
    for part in args.split(b"&"):
        c, _, s = part.partition(b"=")[2].replace(b"%3A", b":").replace(b"%3a", b":").rpartition(b":")
        if part.startswith(b"after=") and s.isdigit() and len(s) <= 10:
            last = int(s) if not c or c.lower() == j.journal_id.encode() else 0  # another journal's: from its start
    k[_N_SUBSCRIBERS] = index + 1
    try:
        head(self, stream, 200, _line(_X_SSE_TYPE), None, False)
        out.write(_line(_X_SSE_HELLO))
        seen = {}
        ping = time.ticks_ms()
        while True:
            for p in j.pending(last, 8):
                await put(stream, out, False, _line(_X_SSE_PUNCH)
                          % (p.journal_id, p.seq, _row(p, False)))
                last = p.seq
            now = app.clock.alerts()
            for a in now:
                if a not in seen:
                    await put(stream, out, False, _line(_X_SSE_RAISED) % (a, now[a]))
            for a in seen:
                if a not in now:
                    await put(stream, out, False, _line(_X_SSE_CLEARED) % a)
            seen = now
            if out.n or time.ticks_diff(time.ticks_ms(), ping) > _SSE_PING_MS:
                if not out.n:
                    out.write(": ping\n\n")
                ping = time.ticks_ms()
                await send(stream, out, False)
            self.wait(index, _WRITE_MS + _SSE_POLL_MS, True)
            await asyncio.sleep_ms(_SSE_POLL_MS)
            out = app.out.reset()
    finally:
        if k[_N_SUBSCRIBERS] == index + 1:  # (not when a newcomer took over)
            k[_N_SUBSCRIBERS] = 0
