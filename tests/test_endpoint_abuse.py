"""The device endpoint against hostile and careless clients, on a real sim terminal (the firmware on the
unix port, in its ESP32-sized heap): huge lines, header floods, slow heads, more connections than
slots, lying Content-Lengths, chunked bodies, other HTTP versions and methods, path tricks, every way
of getting a token wrong, pipelining, clients that vanish mid-answer or never read, large answers at
once, a second event stream subscriber; and on an HTTPS-only terminal plain HTTP, noise, stalled
handshakes and a connection flood. Each case asserts a clear HTTP error (or a clean close) on time,
and that the terminal goes on: a tap during or after the abuse is journaled, and GET /status answers.

The endpoint holds failed logins back per address (5 in a row, then 429 for 30 s): the cases that
send wrong tokens do it from addresses of their own (127.0.0.x, any of which reaches the sim's
127.0.0.1), and the others send a valid token, so that no case locks the next out."""

from __future__ import annotations

import base64
import http.client
import os
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import rawhttp
from endpoint_site import ADMIN, READ, Site, https_only, open_site, sha, tap_ok
from rawhttp import Conn, EventStream, parse_head

AUTH = f"Authorization: Bearer {READ}\r\n"
ADMIN_AUTH = f"Authorization: Bearer {ADMIN}\r\n"
HEAD_S = 5.0  # the endpoint's deadline for a request head (docs/device-api.yaml, "Limits")
IDLE_S = 15.0  # ... for the next request on a kept-alive connection
WRITE_S = 10.0  # ... for the client to take a piece of an answer
SLOTS = 3  # endpoint.connections by default


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One terminal for the whole file, with its central and no time server: the abuse must not
    disturb what each case checks after it (the taps, GET /status)."""
    with open_site(tmp_path_factory.mktemp("endpoint-abuse"), None) as s:
        yield s


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, ssl.SSLContext]]:
    """A terminal whose endpoint speaks only HTTPS (a certificate from a CA of the test's own), and a
    client context that trusts that CA."""
    tmp = tmp_path_factory.mktemp("endpoint-abuse-tls")
    tls, ctx = https_only(tmp)
    with open_site(tmp, None, endpoint=tls) as s:
        yield s, ctx


_badges = iter(range(0x0C0000, 0x0CFFFF))


def tls_get(site: Site, ctx: ssl.SSLContext, path: str) -> rawhttp.Answer:
    """GET path (from /api/v1 on) over verified TLS, with the read token."""
    conn = http.client.HTTPSConnection("localhost", site.api.port, timeout=20, context=ctx)
    try:
        conn.request("GET", "/api/v1" + path, headers={"Authorization": f"Bearer {READ}"})
        r = conn.getresponse()
        return rawhttp.Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def serves(site: Site, ctx: ssl.SSLContext | None = None) -> int:
    """The terminal goes on: a tap is journaled (OK after the durable write), GET /status answers
    with it (over TLS with ctx), the process runs, and its log has no MemoryError and no traceback.
    Returns the tap's seq."""
    seq, _ = tap_ok(site.term, f"{next(_badges):06X}")
    a = tls_get(site, ctx, "/status") if ctx else site.api.call("GET", "/status")
    assert a.status == 200, (a.status, a.body[:300])
    assert a.json()["journal"]["last_seq"] >= seq
    assert site.term.proc is not None and site.term.proc.poll() is None
    log = site.term.console()
    assert "MemoryError" not in log and "Traceback" not in log, log[-2000:]
    return seq


def metrics(site: Site, ctx: ssl.SSLContext | None = None) -> dict[str, float]:
    """The endpoint's counters from GET /metrics (clockterm_endpoint_*_total, by their middle name; over
    TLS with ctx); the text checked whole (every family once, nothing of another answer in it)."""
    a = tls_get(site, ctx, "/metrics") if ctx else site.api.call("GET", "/metrics")
    assert a.status == 200
    text = a.body.decode()
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    assert text.startswith("# HELP") and text.endswith("} 1\n") and len(helps) == len(set(helps)) >= 29, text
    assert '{"' not in text and "journal_id" not in text, text
    return {m[0]: float(m[1]) for m in re.findall(r"^clockterm_endpoint_(\w+)_total (\S+)$", text, re.M)}


def refused(data: bytes | None, *codes: int) -> int:
    """An answer that is one of codes and closes the connection (its JSON error said); 0 when the server
    closed without an answer, which the callers allow only where they say so; -1 when it closed while
    the request was still being sent (exchange: None)."""
    if data is None:
        return -1
    if not data:
        return 0
    status, headers, body = parse_head(data)
    assert status in codes, data[:300]
    assert headers.get("connection") == "close", data[:300]
    assert "error" in rawhttp.Answer(status, headers, body).json()
    return status


def request(path: str, auth: str = AUTH, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}{extra}\r\n".encode()


def ask(site: Site, data: bytes, source: str | None = None) -> rawhttp.Answer:
    """One answer to data, sent on a connection of its own."""
    with Conn(site.api.port, source) as c:
        c.send(data)
        return c.answer()


def exchange(site: Site, data: bytes, wait: float = 5.0, source: str | None = None) -> bytes | None:
    """rawhttp.exchange; None when the server closed while the data was still being sent (a server that
    refuses a huge head need not read it all, and its answer may then be lost in the reset)."""
    try:
        return rawhttp.exchange(site.api.port, data, wait, source)
    except (BrokenPipeError, ConnectionResetError):
        return None


# --- oversized heads --------------------------------------------------------------------------------

def test_a_request_line_of_a_megabyte_is_refused_in_bounded_memory(site: Site) -> None:
    """A 1 MB request line is read only through the head's limit (4 KB) and refused with 414 (the
    connection may also be reset under the client's feet while it still sends), and costs no
    MemoryError; shorter long lines likewise."""
    before = metrics(site)
    with Conn(site.api.port) as c:
        sent = True
        try:
            c.send(b"GET /api/v1/status?" + b"a" * 1_000_000 + b" HTTP/1.1\r\n" + AUTH.encode() + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            sent = False
        assert c.ends(HEAD_S) is not None, "still open"
        assert refused(c.buf, 414) == 414 or not sent, c.buf[:200]
    for line in (b"GET /" + b"x" * 200 + b" HTTP/1.1\r\n", b"G" * 5000 + b"\r\n", b"\x00" * 3000 + b"\r\n",
                 b"GET /api/v1/status?" + b"a" * 100_000 + b" HTTP/1.1\r\n"):
        assert refused(exchange(site, line + AUTH.encode() + b"\r\n"), 414) in (-1, 414), line[:20]
    assert metrics(site)["errors"] == before["errors"]
    serves(site)


def test_header_floods_are_refused(site: Site) -> None:
    """Too many header lines, a head over 4096 bytes, one header over that, a megabyte of headers:
    431 (or a reset while the client still sends); malformed lines: 400."""
    line = b"GET /api/v1/status HTTP/1.1\r\n"
    auth = AUTH.encode()
    cases = {
        "33 header lines": b"".join(b"X-H%d: 1\r\n" % i for i in range(33)),
        "31 lines of 150 bytes": b"".join(b"X-H%02d: " % i + b"v" * 142 + b"\r\n" for i in range(31)),
        "one header of 5000 bytes": b"X-Big: " + b"v" * 5000 + b"\r\n",
        "a megabyte of headers": b"X-Flood: 1\r\n" * 90_000,
    }
    for name, headers in cases.items():
        assert refused(exchange(site, line + auth + headers + b"\r\n"), 431) in (-1, 431), name
    for name, bad in (("no colon", b"NoColon\r\n"), ("space before the colon", b"X-A : 1\r\n"),
                      ("a folded line", b"X-A: 1\r\n  continued\r\n"), ("empty name", b": v\r\n")):
        assert refused(exchange(site, line + auth + bad + b"\r\n"), 400) == 400, name
    # 32 lines and under 4096 bytes: served
    ok = exchange(site, line + b"Host: t\r\n" + auth + b"".join(b"X-H%d: 1\r\n" % i for i in range(29))
                  + b"Connection: close\r\n\r\n")
    assert ok and ok.startswith(b"HTTP/1.1 200 "), ok
    serves(site)


def test_a_long_framing_header_is_refused_not_passed_over(site: Site) -> None:
    """A header line over the line buffer is dropped unread (a long Cookie is harmless), but a dropped
    Content-Length or Transfer-Encoding would frame the body as the next request: a request smuggled
    past a proxy that read the header. Such a line is refused (431) and the connection closed."""
    body = b"GET /api/v1/config HTTP/1.1\r\nHost: t\r\n" + ADMIN_AUTH.encode() + b"\r\n"
    for header in (b"Content-Length: " + b"0" * 200 + b"%d" % len(body),
                   b"content-length:" + b" " * 200 + b"%d" % len(body),
                   b"Transfer-Encoding: " + b" " * 200 + b"chunked"):
        data = exchange(site, b"POST /api/v1/actions/flush HTTP/1.1\r\nHost: t\r\n" + ADMIN_AUTH.encode()
                        + header + b"\r\n\r\n" + body)
        assert refused(data, 431, 411) in (431, 411), (header[:20], data[:300])
        assert b'"network"' not in data, "the body was served as a request"
    serves(site)


def test_a_body_on_a_request_not_served_is_not_read_as_the_next(site: Site) -> None:
    """Whatever the method or the answer (HEAD's 501, a 404, a 405), a request with a body the endpoint
    does not read closes the connection after its answer: the body is never taken for a request."""
    body = b"GET /api/v1/config HTTP/1.1\r\nHost: t\r\n" + ADMIN_AUTH.encode() + b"\r\n"
    for method, path in (("HEAD", "/api/v1/health"), ("HEAD", "/api/v1/status"), ("GET", "/api/v1/nowhere"),
                         ("DELETE", "/api/v1/status"), ("OPTIONS", "/api/v1/health")):
        data = exchange(site, request(path, ADMIN_AUTH, method, f"Content-Length: {len(body)}\r\n") + body)
        assert data and data.startswith(b"HTTP/1.1 "), (method, path, data)
        status, headers, rest = parse_head(data)
        assert status in (404, 405, 413, 501) and headers.get("connection") == "close", (method, path, data[:300])
        assert b"HTTP/1.1" not in rest and b'"network"' not in rest, (method, path, data[:600])
    serves(site)


# --- slow clients -----------------------------------------------------------------------------------

def trickle(c: Conn, data: bytes, every_s: float, stop: threading.Event) -> None:
    for i in range(len(data)):
        if stop.wait(every_s):
            return
        try:
            c.send(data[i:i + 1])
        except OSError:
            return


def test_slowloris_heads_are_closed_at_the_head_deadline(site: Site) -> None:
    """A head sent a byte every 0.15 s, and a request line sent after 3 s of silence followed by headers
    a byte at a time: each connection is closed about 5 s after it opened (the whole head's deadline),
    and taps and other clients are served meanwhile."""
    head = request("/api/v1/status", extra="X-Pad: " + "p" * 60 + "\r\n")
    stop = threading.Event()
    a, b = Conn(site.api.port), Conn(site.api.port)
    t0 = time.monotonic()
    ta = threading.Thread(target=trickle, args=(a, head, 0.15, stop), daemon=True)
    ta.start()

    def late() -> None:
        if not stop.wait(3.0):
            b.send(b"GET /api/v1/status HTTP/1.1\r\n")
            trickle(b, b"Host: t\r\n" + AUTH.encode() + b"X-Pad: " + b"p" * 60 + b"\r\n\r\n", 0.2, stop)

    tb = threading.Thread(target=late, daemon=True)
    tb.start()
    try:
        serves(site)  # while both trickle
        for name, c in (("trickled", a), ("late line", b)):
            ended = c.ends(HEAD_S + 3.0 - (time.monotonic() - t0))
            took = time.monotonic() - t0
            assert ended is not None, f"{name}: still open after {took:.1f} s"
            assert HEAD_S - 0.5 <= took <= HEAD_S + 1.5, f"{name}: closed after {took:.1f} s"
            assert not c.buf.startswith(b"HTTP/1.1 200"), name
    finally:
        stop.set()
        a.close()
        b.close()
    serves(site)


def test_more_idle_connections_than_slots(site: Site) -> None:
    """40 connections opened and left idle (half of them with half a head): the server keeps 3 and
    closes the rest as newcomers evict the longest waiting; it stays up, a tap goes through, and a
    fresh client is served while the 40 are still open."""
    before = metrics(site)
    conns: list[Conn] = []
    failed = 0
    try:
        for i in range(40):
            try:
                c = Conn(site.api.port, timeout=5.0)
            except OSError:
                failed += 1
                continue
            if i % 2:
                c.send(b"GET /api/v1/status HTTP/1.1\r\nHost: t\r\n")
            conns.append(c)
        assert failed <= 5, f"{failed} of 40 connections not accepted by the kernel"
        serves(site)
        with Conn(site.api.port) as fresh:
            assert fresh.request("GET", "/health", READ).status == 200
        open_ = sum(1 for c in conns if c.ends(0.05) is None)
        assert open_ <= SLOTS, f"{open_} of the 40 still open"
    finally:
        for c in conns:
            c.close()
    after = metrics(site)
    assert after["evictions"] - before["evictions"] >= len(conns) - SLOTS
    assert after["errors"] == before["errors"]
    serves(site)


def test_a_client_that_never_reads_is_dropped_at_the_write_deadline(site: Site) -> None:
    """Requests pipelined by a client that never reads the answers: once the socket buffers are full
    the answer cannot go on; the connection is closed at the write deadline (10 s), the answers it did
    not take dropped, and meanwhile the other slots serve and the taps go on."""
    before = metrics(site)
    c = Conn(site.api.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sent = 0
        c.sock.settimeout(2.0)
        try:
            for _ in range(1000):  # answers of a few KB each: far more than the buffers hold
                c.send(request("/api/v1/metrics"))
                sent += 1
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        serves(site)
        time.sleep(WRITE_S + 2.0)  # nothing read meanwhile
        assert c.ends(5.0) is not None, "still open after the write deadline"
        answered = c.buf.count(b"HTTP/1.1 200 ")
        assert answered < sent, (answered, sent)
    finally:
        c.close()
    assert metrics(site)["timeouts"] > before["timeouts"]
    serves(site)


# --- bodies -----------------------------------------------------------------------------------------

def test_a_body_shorter_than_its_content_length(site: Site) -> None:
    """Without a valid admin token the body is never waited for (401, 403: closed at once). An admin
    PUT whose body stalls holds its slot (busy, not evicted) but no other: with every slot so held a
    newcomer is closed (after 0.1 s); once the stalled clients go, the endpoint serves again, and the config
    is as it was."""
    config = site.config_path.read_bytes()
    stalled = b"PUT /api/v1/config HTTP/1.1\r\nHost: t\r\n%sContent-Length: 1000\r\n\r\n{\"a\":"
    for auth, code in ((b"", 401), (AUTH.encode(), 403)):
        with Conn(site.api.port, source="127.0.0.9") as c:
            c.send(stalled % auth)
            a = c.answer(2.0)
            assert a.status == code and a.headers.get("connection") == "close", a
            assert c.ends(2.0) is not None
    with Conn(site.api.port) as c:  # a GET with a body it never sends: 413, closed at once
        c.send(request("/api/v1/status", extra="Content-Length: 50\r\n"))
        a = c.answer(2.0)
        assert a.status == 413 and a.headers.get("connection") == "close", a
        assert c.ends(2.0) is not None
    before = metrics(site)
    for _ in range(3):  # (a head not read yet leaves its slot evictable: then the newcomer takes it)
        held = [Conn(site.api.port) for _ in range(SLOTS)]
        try:
            for c in held:
                c.send(stalled % ADMIN_AUTH.encode())
            time.sleep(1.0)
            tap_ok(site.term, f"{next(_badges):06X}")  # the tap path does not wait on the endpoint
            with Conn(site.api.port) as newcomer:
                newcomer.send(request("/api/v1/health"))
                closed = newcomer.ends(2.0) is not None and not newcomer.buf
            gone = [c for c in held if c.ends(0.05) is not None]
        finally:
            for c in held:
                c.close()
        if closed:
            assert not gone, "a stalled body closed before its deadline"
            break
        assert len(gone) == 1, "a newcomer served while every slot was taking a body"
    else:
        raise AssertionError("the stalled bodies' slots never all busy at once")
    time.sleep(0.5)
    after = metrics(site)
    assert after["refusals"] > before["refusals"]
    assert site.config_path.read_bytes() == config
    serves(site)


def test_content_length_values_that_are_not_a_length(site: Site) -> None:
    """Negative, signed, hexadecimal, non-numeric, over nine digits, two that disagree (0 among them): 400, closed. A
    plain huge one: 413 (a GET takes no body; a config is at most 8 KB), closed, nothing read."""
    path = "/api/v1/status"
    for value in ("-1", "+5", "0x10", "1e3", "abc", "", "5, 5", "99999999999", "12345678901234567890"):
        data = exchange(site, request(path, extra=f"Content-Length: {value}\r\n") + b"hello")
        assert refused(data, 400) == 400, (value, data[:200])
    for two in ("5\r\nContent-Length: 6", "0\r\nContent-Length: 5", "5\r\nContent-Length: 0"):
        data = exchange(site, request(path, extra=f"Content-Length: {two}\r\n") + b"hello!")
        assert refused(data, 400) == 400, (two, data[:200])
    data = exchange(site, request(path, extra="Content-Length: 999999999\r\n"))
    assert refused(data, 413) == 413
    config = site.config_path.read_bytes()
    data = exchange(site, request("/api/v1/config", ADMIN_AUTH, "PUT", "Content-Length: 999999999\r\n") + b"{}")
    assert refused(data, 413) == 413
    assert site.config_path.read_bytes() == config
    # Content-Length: 0 on a GET is no body at all: served, kept alive
    with Conn(site.api.port) as c:
        for _ in range(2):
            assert c.request("GET", "/health", READ, "Content-Length: 0\r\n").status == 200
    serves(site)


def test_chunked_request_bodies_are_refused(site: Site) -> None:
    """The endpoint takes only bodies with a Content-Length: any Transfer-Encoding is a 411, closed,
    before the body is read; the roster and config in force stay."""
    config = site.config_path.read_bytes()
    badges = site.api.call("GET", "/roster").json()["badges"]
    chunked = b"5\r\nhello\r\n0\r\n\r\n"
    for route, method, te in (("/api/v1/roster", "PUT", "chunked"), ("/api/v1/config", "PUT", "chunked"),
                              ("/api/v1/config", "PUT", "gzip, chunked"), ("/api/v1/status", "GET", "chunked"),
                              ("/api/v1/actions/flush", "POST", "identity")):
        data = exchange(site, request(route, ADMIN_AUTH, method, f"Transfer-Encoding: {te}\r\n") + chunked)
        assert refused(data, 411) == 411, (route, te, data[:200])
        data = exchange(site, request(route, ADMIN_AUTH, method,
                                      f"Content-Length: 15\r\nTransfer-Encoding: {te}\r\n") + chunked)
        assert refused(data, 400, 411) in (400, 411), (route, te, data[:200])
    assert site.config_path.read_bytes() == config
    assert site.api.call("GET", "/roster").json()["badges"] == badges
    serves(site)


# --- the request line ---------------------------------------------------------------------------------

def test_other_http_versions_and_garbage_request_lines(site: Site) -> None:
    """HTTP/1.0 and HTTP/2: 505; HTTP/0.9, lower-case versions, absolute or asterisk forms, extra or
    missing words, an HTTP/2 preface, a TLS ClientHello, control bytes: 400; each closed."""
    path = "/api/v1/status"
    for version in ("HTTP/1.0", "HTTP/2.0", "HTTP/2", "HTTP/1.2", "HTTP/9.9"):
        assert refused(exchange(site, f"GET {path} {version}\r\n{AUTH}\r\n".encode()), 505) == 505, version
    for line in (f"GET {path}", f"GET {path} http/1.1", f"GET  {path} HTTP/1.1", f"GET {path}  HTTP/1.1",
                 f"GET\t{path}\tHTTP/1.1", f"GET http://t{path} HTTP/1.1", "OPTIONS * HTTP/1.1", "PRI * HTTP/2.0",
                 f"GET {path} HTTP/1.1 extra", "GET", "\x00\x01\x02", "GET api/v1/status HTTP/1.1"):
        assert refused(exchange(site, f"{line}\r\n{AUTH}\r\n".encode()), 400) == 400, line
    hello = bytes.fromhex("160301") + b"\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(200))
    data = exchange(site, hello, wait=HEAD_S + 2)
    assert refused(data, 400) in (0, 400), data[:200]
    serves(site)


def test_unknown_methods_are_405_and_head_is_501(site: Site) -> None:
    """A method a route does not take, however odd (lower case, made up, binary): 405 with Allow, and the
    connection kept; HEAD: 501 with no body. A read token never gets past an admin route's scope."""
    with Conn(site.api.port) as c:
        for method in ("DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get", "FOO", "G\x7fT", "POST"):
            a = c.request(method, "/status", READ)
            assert a.status == 405 and a.headers["allow"] == "GET", (method, a)
        c.send(request("/api/v1/health", method="HEAD"))
        a = c.answer()
        assert a.status == 501, a
        assert c.request("GET", "/health", READ).status == 200  # the HEAD answer had no body
    serves(site)


def test_many_blank_lines_before_a_request(site: Site) -> None:
    """Empty lines before a request line are skipped (RFC 9112 2.2), many of them too."""
    data = exchange(site, b"\r\n" * 2000 + request("/api/v1/health", extra="Connection: close\r\n"))
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    serves(site)


# --- paths ------------------------------------------------------------------------------------------

TRICKS = ("/api/v1/../api/v1/config", "/api/v1/status/../config", "/api/v1/%2e%2e/config", "/api/v1/%63onfig",
          "/api/v1/config%00", "/api/v1/config/", "/api/v1//config", "/api/v1/./config", "/api/v1/CONFIG",
          "/api/v1/config;x", "/api/v1/actions/../config", "/api/v1/actions/reboot/../flush",
          "/api/v1/actions%2freboot", "/api/v1/status%20", "/api/v1/status\\..\\config", "/../../etc/passwd",
          "//api/v1/status", "/api/v1/status#x", "/api/v2/status", "/api/v1", "/api/v1/", "/API/V1/status",
          "/api/v1/\xc3\xa9", "/api/v1/status%", "/api/v1/%zz")


def test_paths_are_matched_as_sent(site: Site) -> None:
    """No path is normalised or percent-decoded: dot segments, encoded slashes and letters, NULs,
    doubled or trailing slashes, other cases: 404, for a read token and for an admin one alike (so
    neither reaches a route it did not name), each on a connection kept alive."""
    for token in (READ, ADMIN):
        with Conn(site.api.port) as c:
            for path in TRICKS:
                c.send(f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n".encode("latin-1"))
                a = c.answer()
                assert a.status == 404 and a.json() == {"error": "Not Found"}, (path, a)
    # The query string is not a path: a route with any query is that route
    with Conn(site.api.port) as c:
        for query in ("?x=../../config", "?%00", "?" + "/" * 100, "??", "?=&&="):
            a = c.request("GET", "/status" + query, READ)
            assert a.status == 200, (query, a.status)
        a = c.request("GET", "/punches?after=..%2F..%2Fconfig", READ)
        assert a.status == 400, a
    serves(site)


# --- auth -------------------------------------------------------------------------------------------

def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


WRONG = {  # name: the header lines (the token anywhere but a well-formed Authorization: Bearer)
    "missing": "",
    "empty Authorization": "Authorization:\r\n",
    "Bearer and nothing": "Authorization: Bearer\r\n",
    "Bearer and a space": "Authorization: Bearer \r\n",
    "Bearer and spaces": "Authorization: Bearer      \r\n",
    "a prefix of the token": f"Authorization: Bearer {READ[:-1]}\r\n",
    "a short prefix": f"Authorization: Bearer {READ[:3]}\r\n",
    "the token and more": f"Authorization: Bearer {READ}x\r\n",
    "the token twice": f"Authorization: Bearer {READ}{READ}\r\n",
    "the token and a word": f"Authorization: Bearer {READ} x\r\n",
    "the token in upper case": f"Authorization: Bearer {READ.upper()}\r\n",
    "its stored digest": f"Authorization: Bearer {sha(READ)}\r\n",
    "the admin digest": f"Authorization: Bearer {sha(ADMIN)}\r\n",
    "Basic with the token": f"Authorization: Basic {base64.b64encode(READ.encode()).decode()}\r\n",
    "Basic user:token": f"Authorization: Basic {_basic('monitoring', READ)}\r\n",
    "Basic token:": f"Authorization: Basic {_basic(READ, '')}\r\n",
    "another scheme": f"Authorization: Token {READ}\r\n",
    "no space after Bearer": f"Authorization: Bearer{READ}\r\n",
    "a tab after Bearer": f"Authorization: Bearer\t{READ}\r\n",
    "the scheme alone as token": f"Authorization: {READ}\r\n",
    "Proxy-Authorization": f"Proxy-Authorization: Bearer {READ}\r\n",
    "X-Api-Key": f"X-Api-Key: {READ}\r\n",
    "a cookie": f"Cookie: token={READ}\r\n",
    "a misspelt header": f"Authorisation: Bearer {READ}\r\n",
}
IN_QUERY = (f"?access_token={READ}", f"?token={READ}", f"?authorization=Bearer%20{READ}",
            f"?Authorization=Bearer+{READ}", f"?bearer={READ}")
RIGHT = {  # header names and schemes are case-insensitive (RFC 9110 5.1, 11.1); the value's spaces trimmed
    "lower-case header": f"authorization: Bearer {READ}\r\n",
    "upper-case header": f"AUTHORIZATION: Bearer {READ}\r\n",
    "mixed-case header": f"AuThOrIzAtIoN: Bearer {READ}\r\n",
    "lower-case scheme": f"Authorization: bearer {READ}\r\n",
    "upper-case scheme": f"Authorization: BEARER {READ}\r\n",
    "no space after the colon": f"Authorization:Bearer {READ}\r\n",
    "spaces around": f"Authorization:   Bearer {READ}   \r\n",
    "spaces after Bearer": f"Authorization: Bearer    {READ}\r\n",
    "a tab before the value": f"Authorization:\tBearer {READ}\r\n",
}


def test_every_wrong_way_of_sending_a_token_is_401(site: Site) -> None:
    """Each wrong Authorization (or none; or the token elsewhere: the query string, a cookie, another
    header) is a 401 with WWW-Authenticate, for a read route and an admin one; a success after each
    ends the failure count, so no 429 comes. Header names and the scheme in any case are accepted."""
    source = "127.0.0.2"
    before = metrics(site)
    failures = 0
    with Conn(site.api.port, source) as c:
        for route in ("/status", "/config"):
            cases = [(name, route, h) for name, h in WRONG.items()]
            cases += [(q, route + q, "") for q in IN_QUERY]
            cases += [(q + " and a wrong token", route + q, "Authorization: Bearer nope\r\n") for q in IN_QUERY]
            for name, path, headers in cases:
                c.send(f"GET /api/v1{path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
                a = c.answer()
                assert a.status == 401, (name, route, a)
                assert a.headers["www-authenticate"] == 'Bearer realm="clockterm"', name
                failures += 1
                ok = c.request("GET", "/health", READ)
                assert ok.status == 200, (name, ok)
        for name, headers in RIGHT.items():
            c.send(f"GET /api/v1/status HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
            a = c.answer()
            assert a.status == 200, (name, a.status, a.body[:200])
    after = metrics(site)
    assert after["auth_failures"] - before["auth_failures"] == failures
    assert after["rate_limited"] == before["rate_limited"]
    serves(site)


def test_a_read_token_is_403_on_every_admin_route(site: Site) -> None:
    """GET/PUT config, PUT roster, every action (reboot included: the terminal must stay up): 403, and
    nothing done."""
    config = site.config_path.read_bytes()
    for method, route in (("GET", "/config"), ("PUT", "/config"), ("PUT", "/roster"), ("POST", "/actions/reboot"),
                          ("POST", "/actions/flush"), ("POST", "/actions/resync"), ("POST", "/actions/clear-alerts")):
        for auth in (f"Authorization: Bearer {READ}\r\n", f"authorization: BEARER {READ}\r\n"):
            extra = "Content-Length: 2\r\n" if method == "PUT" else ""
            a = ask(site, request("/api/v1" + route, auth, method, extra) + (b"{}" if extra else b""))
            assert a.status == 403, (method, route, a)
    time.sleep(1.0)  # a reboot would have ended the process by now
    assert site.config_path.read_bytes() == config
    serves(site)


def test_a_token_guesser_is_held_back_alone(site: Site) -> None:
    """Five wrong tokens from one address: that address gets 429 for every request (the right token
    too), while a client at another address is served as before."""
    guesser = "127.0.0.3"
    for i in range(5):
        assert ask(site, request("/api/v1/status", f"Authorization: Bearer guess-{i}\r\n"), guesser).status == 401
    data = exchange(site, request("/api/v1/status"), source=guesser)
    assert refused(data, 429) == 429
    assert site.api.call("GET", "/status").status == 200  # 127.0.0.1
    serves(site)


# --- keep-alive -------------------------------------------------------------------------------------

def test_pipelined_requests_on_one_connection(site: Site) -> None:
    """Requests sent at once, before any answer is read: answered in order, each framed right (chunked
    or with a length), errors that keep the connection among them; an error that closes ends the
    pipeline there; Connection: close ends it after its answer."""
    routes = ["/status", "/health", "/metrics", "/nowhere", "/punches?limit=5", "/time", "/roster"]
    with Conn(site.api.port) as c:
        c.send(b"".join(request("/api/v1" + r) for r in routes)
               + request("/api/v1/status", "Authorization: Bearer wrong\r\n") + request("/api/v1/health"))
        got = [c.answer() for _ in range(len(routes) + 2)]
        assert [a.status for a in got] == [200, 200, 200, 404, 200, 200, 200, 401, 200], [a.status for a in got]
        assert got[0].json()["device_id"] and got[2].body.startswith(b"# HELP")
        # many small ones, more than the slot's line buffer holds at once
        c.send(request("/api/v1/health") * 50)
        assert [c.answer().status for _ in range(50)] == [200] * 50
        # an error that closes: the requests behind it are not answered
        c.send(request("/api/v1/health") + b"GET /api/v1/health HTTP/1.0\r\n\r\n" + request("/api/v1/health"))
        assert c.answer().status == 200 and c.answer().status == 505
        assert c.ends(2.0) is not None and not c.buf, c.buf[:200]
    with Conn(site.api.port) as c:
        c.send(request("/api/v1/health", extra="Connection: close\r\n") + request("/api/v1/health"))
        assert c.answer().status == 200
        assert c.ends(2.0) is not None and not c.buf, c.buf[:200]
    serves(site)


def test_a_kept_alive_connection_idles_out(site: Site) -> None:
    """After an answer, a connection that sends nothing is closed at the idle deadline (15 s)."""
    with Conn(site.api.port) as c:
        assert c.request("GET", "/health", READ).status == 200
        t0 = time.monotonic()
        assert c.ends(IDLE_S + 3.0) is not None, "still open"
        assert IDLE_S - 0.5 <= time.monotonic() - t0 <= IDLE_S + 1.5
    serves(site)


def test_clients_that_go_mid_answer(site: Site) -> None:
    """Clients that reset the connection while a large answer streams (a page of 1000 punches, the
    metrics, an event stream's replay), or right after sending: the terminal goes on, the answer
    buffer it shares with the uplink is not left dirty (the next answers are whole and valid)."""
    for i in range(300):
        tap_ok(site.term, f"0D{i:04X}")
    for _ in range(5):
        for path in ("/punches?limit=1000", "/punches?limit=1000&format=csv", "/metrics", "/status",
                     "/events?after=0"):
            c = Conn(site.api.port)
            c.send(request("/api/v1" + path))
            c.sock.recv(100)
            c.reset()
            c = Conn(site.api.port)
            c.send(request("/api/v1" + path))
            c.reset()
    page = site.api.call("GET", "/punches?limit=1000")
    assert page.status == 200 and len(page.json()["punches"]) >= 300
    text = site.api.call("GET", "/punches?limit=1000&format=csv").body.decode()
    assert text.count("\r\n") == len(page.json()["punches"]) + 1
    serves(site)


def test_large_answers_at_once_share_the_answer_buffer_cleanly(site: Site) -> None:
    """Two large answers streamed at the same time through the one answer buffer the terminal has, read
    slowly and unevenly by their clients, while the third slot answers status and metrics and taps go
    on: each comes whole, valid, and its own (no piece of one in another)."""
    for i in range(200):
        tap_ok(site.term, f"0B{i:04X}")
    paths = ("/punches?limit=1000", "/punches?limit=1000&format=csv")
    conns = [Conn(site.api.port) for _ in paths]
    got: dict[str, rawhttp.Answer] = {}

    def read(c: Conn, path: str, pause: float) -> None:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        c.chunk, c.pause = 700, pause
        got[path] = c.request("GET", path, READ, timeout=30.0)

    threads = [threading.Thread(target=read, args=(c, p, 0.002 * (n + 1)), daemon=True)
               for n, (c, p) in enumerate(zip(conns, paths, strict=True))]
    try:
        for t in threads:
            t.start()
        for _ in range(5):
            serves(site)
            metrics(site)
        for t in threads:
            t.join(40)
    finally:
        for c in conns:
            c.close()
    assert set(got) == set(paths), got.keys()
    page = got[paths[0]].json()
    rows = got[paths[1]].body.decode().split("\r\n")
    assert rows[0].startswith("journal_id,seq,") and rows[-1] == ""
    in_csv = [int(r.split(",")[1]) for r in rows[1:-1]]
    in_json = [p["seq"] for p in page["punches"]]
    # Each whole and in order; the page asked a moment later may also hold a tap made meanwhile
    # (serves taps): the shorter is the start of the longer
    for seqs in (in_csv, in_json):
        assert len(seqs) >= 200 and seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    n = min(len(in_csv), len(in_json))
    assert in_csv[:n] == in_json[:n] and abs(len(in_csv) - len(in_json)) <= 5, (in_csv[-3:], in_json[-3:])
    serves(site)


# --- the event stream ---------------------------------------------------------------------------------

def ended(stream: EventStream, timeout: float) -> bool:
    """Whether the server ends the stream within timeout (the blocks it sent before read through)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            stream.block(max(0.01, deadline - time.monotonic()))
    except (EOFError, ConnectionResetError):
        return True
    except AssertionError:  # nothing more within the time
        return False


def test_a_second_subscriber_takes_over_the_event_stream(site: Site) -> None:
    """One subscriber at a time: each newcomer takes over and the older stream is closed; after ten
    quick reconnections (some gone without a word) the last gets the punches, and the endpoint still
    has slots for others."""
    streams = [EventStream(site.api.port, READ)]
    try:
        assert streams[0].status == 200 and streams[0].block() == ": clockterm events"
        for i in range(10):
            s = EventStream(site.api.port, READ)
            streams.append(s)
            assert s.status == 200
            if i % 3 == 2:
                streams[-2].sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                streams[-2].close()  # gone without a word (a reset)
        last = streams[-1]
        for n, old in enumerate(streams[:-1]):
            if old.sock.fileno() >= 0:
                assert ended(old, 3.0), f"subscriber {n} still open"
        seq = serves(site)
        ev = last.event("punch", 5.0)
        assert ev["id"].endswith(f":{seq}"), ev
        with Conn(site.api.port) as c:
            assert c.request("GET", "/health", READ).status == 200
    finally:
        for s in streams:
            s.close()
    serves(site)


def test_the_subscriber_keeps_its_stream_through_a_connection_flood(site: Site) -> None:
    """A subscriber is busy, not idle: 20 newcomers evict idle connections, never the event stream."""
    stream = EventStream(site.api.port, READ)
    conns: list[Conn] = []
    try:
        assert stream.status == 200 and stream.block() == ": clockterm events"
        for _ in range(20):
            try:
                conns.append(Conn(site.api.port, timeout=5.0))
            except OSError:
                pass
        seq = serves(site)
        assert stream.event("punch", 5.0)["id"].endswith(f":{seq}")
    finally:
        for c in conns:
            c.close()
        stream.close()
    serves(site)


# --- HTTPS ------------------------------------------------------------------------------------------

def open_fds(site: Site) -> int:
    """File descriptors the terminal's process holds (its sockets among them)."""
    assert site.term.proc is not None
    return len(os.listdir(f"/proc/{site.term.proc.pid}/fd"))


def test_plain_http_and_noise_on_the_https_port_are_closed_without_a_leak(
        tls_site: tuple[Site, ssl.SSLContext]) -> None:
    """Plain HTTP (a client with http:// for https://), a megabyte of noise, a ClientHello cut short:
    each connection is closed without an answer, within the head deadline, and its socket is freed (a
    board has a dozen sockets for everything: a leak per mistaken poll would soon stop the uplink)."""
    site, ctx = tls_site
    port = site.api.port
    assert tls_get(site, ctx, "/health").status == 200
    fds = open_fds(site)
    for name, data, times in (("plain HTTP", request("/api/v1/status"), 5), ("noise", os.urandom(1 << 20), 3),
                              ("a ClientHello cut short", bytes.fromhex("16030100a5010000a10303"), 1)):
        for _ in range(times):
            with Conn(port) as c:
                t0 = time.monotonic()
                try:
                    c.send(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                assert c.ends(HEAD_S + 3.0) is not None, f"{name}: still open"
                assert time.monotonic() - t0 <= HEAD_S + 1.5, name
                assert not c.buf.startswith(b"HTTP/"), (name, c.buf[:100])
    time.sleep(0.5)
    assert open_fds(site) <= fds, f"{open_fds(site) - fds} sockets leaked"
    serves(site, ctx)


def test_the_https_port_under_a_connection_flood(tls_site: tuple[Site, ssl.SSLContext]) -> None:
    """On an HTTPS-only endpoint, 40 connections that never shake hands and 20 handshakes dropped
    before a request leave it serving a verified client, without MemoryError or a socket leaked."""
    site, ctx = tls_site
    port = site.api.port
    assert tls_get(site, ctx, "/health").status == 200
    fds = open_fds(site)
    before = metrics(site, ctx)
    conns: list[Conn] = []
    try:
        for _ in range(40):
            try:
                conns.append(Conn(port, timeout=5.0))
            except OSError:
                pass
        assert len(conns) >= 35
        serves(site, ctx)
    finally:
        for c in conns:
            c.close()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.do_handshake()
    serves(site, ctx)
    after = metrics(site, ctx)
    assert after["evictions"] - before["evictions"] >= 35
    assert after["errors"] == before["errors"]
    time.sleep(0.5)
    assert open_fds(site) <= fds + 1, f"{open_fds(site) - fds} sockets more"  # (+1: serves' connection kept alive)
    serves(site, ctx)
