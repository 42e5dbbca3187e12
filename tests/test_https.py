"""The firmware's HTTP/1.1 client (lib/clockterm/https.py) under micropython against the real central."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mp
import pytest
import trustme
from clockterm_host.central import Handle, start_background

# Runs a list of requests through one Client and prints what happened, as JSON.
DRIVER = r"""
import sys, json, gc, asyncio
from clockterm import https
with open(sys.argv[1]) as f:  # a file: this micropython build dies on an argv over 256 bytes
    cfg = json.load(f)

async def main():
    c = https.Client(cfg["url"], cafile=cfg.get("ca"))
    for k, v in cfg.get("tune", {}).items():
        setattr(c, k, v)
    out = []
    token = None
    gc.collect()
    base = gc.mem_alloc()
    peak = 0
    for step in cfg["steps"]:
        hdrs = ""
        if token or step.get("bearer"):
            hdrs = "Authorization: Bearer %s\r\n" % (step.get("bearer") or token)
        body = step.get("body")
        if step.get("form"):
            body = step["form"].encode()
            hdrs += "Content-Type: application/x-www-form-urlencoded\r\n"
        elif body is not None:
            body = json.dumps(body).encode()
            hdrs += "Content-Type: application/json\r\n"
        try:
            status, _, answer = await c.request(step["method"], step["path"], body, hdrs)
            res = {"status": status, "body": answer.decode(), "connected": c.stream is not None}
            if step.get("token") and status == 200:
                token = json.loads(answer)["access_token"]
        except https.HTTPError as e:
            res = {"error": str(e), "connected": c.stream is not None}
        peak = max(peak, gc.mem_alloc() - base)
        out.append(res)
    c.close()
    print(json.dumps({"results": out, "connections": c.connections, "requests": c.requests,
                      "heap_delta_peak": peak}))

asyncio.run(main())
"""

TOKEN = {
    "method": "POST",
    "path": "/v1/oauth/token",
    "token": True,
    "form": "grant_type=client_credentials&client_id=term-1&client_secret=pw1",
}


def upload(seqs: range, journal: str = "j1") -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/v1/punches",
        "body": {
            "device_id": "term-1",
            "journal_id": journal,
            "punches": [
                {
                    "seq": s,
                    "badge": f"B{s}",
                    "kind": "in",
                    "utc_ms": 1_780_000_000_000 + s,
                    "utc_offset_min": 0,
                    "quality": "synced",
                    "uncertainty_ms": 3,
                    "employee_id": None,
                }
                for s in seqs
            ],
        },
    }


@contextlib.contextmanager
def local_server(handle: Callable[[socket.socket], None], conns: int = 1) -> Iterator[int]:
    """A plain TCP server on loopback, on a thread: handle(conn) for each of `conns` connections in turn.
    Yields its port; joins the thread and closes the server after."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(conns)

    def serve() -> None:
        for _ in range(conns):
            conn, _ = srv.accept()
            with conn:
                handle(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        t.join(6)
        srv.close()


def read_request(conn: socket.socket, body_len: int, data: bytes = b"") -> tuple[bytes, bytes]:
    """The next request's head and its first body_len body bytes (data: bytes already read); the head
    without its blank line."""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < body_len:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    return head, body


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Handle]:
    h = start_background(tmp_path_factory.mktemp("central"), devices="term-1:pw1")
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(autouse=True)
def clean_faults(central: Handle) -> Iterator[None]:
    yield
    central.set_faults(queue=[], tls="good", error_rate=0.0, reset_rate=0.0)


def run(url: str, steps: list[dict[str, Any]], ca: Path | None = None, **tune: Any) -> dict[str, Any]:
    cfg = {"url": url, "ca": str(ca) if ca else None, "steps": steps, "tune": tune}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(cfg, f)
        f.flush()
        out = mp.mp_json(DRIVER, args=[f.name])
    assert isinstance(out, dict)
    return out


def test_verified_tls_with_keepalive(central: Handle) -> None:
    n0 = central.store.count()
    out = run(central.url, [TOKEN, upload(range(1, 4)), upload(range(1, 6))], central.ca_path)
    r = out["results"]
    assert [x["status"] for x in r] == [200, 200, 200], r
    assert json.loads(r[2]["body"])["duplicates"] == 3
    assert out["connections"] == 1 and out["requests"] == 3  # one TLS handshake for all three
    assert central.store.count() == n0 + 5
    assert out["heap_delta_peak"] < 40_000


def test_der_ca_file_also_accepted(central: Handle, tmp_path: Path) -> None:
    der = tmp_path / "ca.der"
    der.write_bytes(central.ca_der)
    assert run(central.url, [TOKEN], der)["results"][0]["status"] == 200


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_host", "expired"])
def test_bad_certificates_are_rejected(central: Handle, tmp_path: Path, case: str) -> None:
    ca = central.ca_path
    if case == "wrong_ca":
        other = tmp_path / "other-ca.pem"
        other.write_bytes(trustme.CA().cert_pem.bytes())
        ca = other
    else:
        central.set_faults(tls="wronghost" if case == "wrong_host" else "expired")
    stats0 = central.admin("/stats")
    out = run(central.url, [TOKEN, upload(range(100, 101))], ca)
    for res in out["results"]:
        assert "error" in res and not res["connected"], res
    stats1 = central.admin("/stats")
    # Nothing reached the application: no token request, no upload.
    assert stats1.get("token_requests", 0) == stats0.get("token_requests", 0)
    assert stats1.get("punch_requests", 0) == stats0.get("punch_requests", 0)


def test_plain_http_only_when_the_url_says_so(central: Handle) -> None:
    out = run(central.admin_url, [{"method": "GET", "path": "/stats", "bearer": central.admin_token}])
    assert out["results"][0]["status"] == 200 and "punches_stored" in out["results"][0]["body"]
    # An https URL to the plain port fails (no fallback to plain text).
    https_to_plain = central.admin_url.replace("http://127.0.0.1", "https://localhost")
    out = run(https_to_plain, [{"method": "GET", "path": "/stats"}], central.ca_path, connect_timeout_ms=3000)
    assert "error" in out["results"][0]


def test_chunked_answer_and_body_limit(central: Handle) -> None:
    central.set_faults(queue=[{"do": "chunked"}, {"do": "chunked"}])
    out = run(central.url, [TOKEN, upload(range(200, 202)), upload(range(202, 204))], central.ca_path)
    r = out["results"]
    assert r[1]["status"] == 200 and json.loads(r[1]["body"])["stored_through"] == 201
    assert r[2]["status"] == 200 and out["connections"] == 1
    # A 200 over max_body is an error, and the connection is dropped.
    out = run(central.url, [TOKEN, upload(range(204, 206))], central.ca_path, max_body=40)
    r = out["results"]
    assert "too large" in r[0]["error"] and not r[0]["connected"], r
    # Any other answer is not bound by max_body: its start is kept, the rest read and dropped (here the
    # 401 of the upload sent without a token), and the connection stays.
    assert r[1]["status"] == 401 and r[1]["connected"], r
    assert out["connections"] == 2  # dropped after the first, a fresh one for the second


def test_big_error_page_is_cut_to_its_start(central: Handle) -> None:
    # A proxy's 20 KB error page: answered as its status with the first 256 bytes of the body, on a
    # connection that stays usable; never "too large", and the body never needs a 20 KB block of heap.
    central.set_faults(queue=[{"do": "status", "code": 502, "pad": 20000}])
    out = run(central.url, [TOKEN, upload(range(300, 302)), upload(range(300, 302))], central.ca_path)
    r = out["results"]
    assert r[1]["status"] == 502 and len(r[1]["body"]) == 256 and r[1]["connected"], r
    assert r[2]["status"] == 200 and out["connections"] == 1, out


def test_stall_reset_trickle_and_dns(central: Handle) -> None:
    central.set_faults(queue=[{"do": "stall", "s": 3}, {"do": "reset"}, {"do": "trickle", "bps": 20}])
    out = run(
        central.url,
        [
            TOKEN,
            upload(range(300, 302)),
            upload(range(302, 304)),
            upload(range(304, 306)),
            upload(range(306, 308)),
        ],
        central.ca_path,
        timeout_ms=1500,
    )
    r = out["results"]
    assert r[0]["status"] == 200
    assert r[1]["error"] == "timeout" and not r[1]["connected"]
    assert "error" in r[2] and not r[2]["connected"]  # reset mid-answer
    assert r[3]["error"] == "timeout"  # ~90 bytes at 20 B/s is past the 1.5 s deadline
    assert r[4]["status"] == 200  # and the client recovers on a fresh connection
    assert out["connections"] == 4
    out = run("https://no-such-host.invalid:1", [TOKEN], central.ca_path)
    assert "error" in out["results"][0]


ONE_WRITE = r"""
import sys, json, asyncio
from clockterm import https
port, room = int(sys.argv[1]), int(sys.argv[2])

writes = []

class Client(https.Client):
    async def _exchange(self, *args):  # count the writes the request makes on the stream
        s = self.stream
        if not hasattr(s, "counted"):
            write = s.write
            def counted(b):
                writes.append(len(b))
                write(b)
            s.write = s.counted = counted
        return await super()._exchange(*args)

async def main():
    c = Client("http://127.0.0.1:%d/api" % port)
    buf = bytearray(room + 3000)
    for i in range(room, len(buf)):
        buf[i] = 0x61 + i % 26
    status, _, body = await c.request("POST", "/x", memoryview(buf), "Authorization: Bearer t0k\r\n", room=room)
    print(json.dumps({"status": status, "body": body.decode(), "writes": writes}))

asyncio.run(main())
"""


@pytest.mark.parametrize("room", [0, 320])
def test_head_room_sends_head_and_body_in_one_write(room: int) -> None:
    # With room, the head is written into the free bytes in front of the body and the request leaves
    # in one write; without, a body over the copy limit is a second write (which Nagle can hold back
    # until the server's delayed ACK). The server sees the same request either way.
    got: dict[str, bytes] = {}

    def handle(conn: socket.socket) -> None:
        head, body = read_request(conn, 3000)
        got["all"] = head + b"\r\n\r\n" + body
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    with local_server(handle) as port:
        out = mp.mp_json(ONE_WRITE, args=[str(port), str(room)])
    assert (out["status"], out["body"]) == (200, "ok")
    head, body = got["all"].split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /api/x HTTP/1.1\r\n") and b"Content-Length: 3000" in head
    assert body == bytes(0x61 + i % 26 for i in range(room, room + 3000))
    assert out["writes"] == ([len(got["all"])] if room else [len(head) + 4, 3000])


STALE = r"""
import sys, json, asyncio
from clockterm import https
port = int(sys.argv[1])
calls = []

def body():  # a body built at write time, as the uplink's batch is: called again for a resend
    calls.append(1)
    return b"x" * 10 + b"body %d" % len(calls)

async def main():
    c = https.Client("http://127.0.0.1:%d" % port)
    out = []
    for _ in range(2):
        status, _, answer = await c.request("POST", "/p", body, "", 10)
        out.append([status, answer.decode()])
        await asyncio.sleep_ms(300)
    print(json.dumps({"answers": out, "calls": len(calls), "connections": c.connections}))

asyncio.run(main())
"""


def test_body_function_called_again_when_a_kept_alive_connection_was_closed() -> None:
    # The server answers with keep-alive, then takes the next request and closes without an answer
    # (the close crossed the request): no answer byte, so the request goes once more on a fresh
    # connection, its body built anew.
    got: list[bytes] = []

    def handle(conn: socket.socket) -> None:
        got.append(read_request(conn, 6)[1])  # b"body N"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(got) + b"k" * len(got))
        if len(got) == 1:
            got.append(read_request(conn, 6)[1])  # taken, never answered: closed

    with local_server(handle, 2) as port:
        out = mp.mp_json(STALE, args=[str(port)])
    assert out["answers"] == [[200, "k"], [200, "kkk"]]
    assert out["connections"] == 2 and out["calls"] == 3  # the second request built twice
    assert got == [b"body 1", b"body 2", b"body 3"]


IDLE = r"""
import sys, json, asyncio
from clockterm import https
port = int(sys.argv[1])

async def main():
    c = https.Client("http://127.0.0.1:%d" % port)
    out = []
    for _ in range(3):
        try:
            status, _, answer = await c.request("POST", "/p", b"body")
            out.append([status, answer.decode()])
        except https.HTTPError as e:
            out.append(str(e))
        await asyncio.sleep_ms(300)  # meanwhile the server closes the connection, or sends more
    print(json.dumps({"answers": out, "connections": c.connections}))

asyncio.run(main())
"""


@pytest.mark.parametrize("after", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"])
def test_a_kept_alive_connection_is_used_again_only_when_nothing_came_on_it(after: bytes) -> None:
    # Between two requests the client looks at the kept-alive connection without waiting: closed by
    # the server while idle, or with bytes on it that no request asked for (a server that sent more
    # than its answer announced: they would pass for the next answer), it is not used again; the
    # next request goes on a fresh connection, and never onto the old one.
    seen: list[bytes] = []

    def handle(conn: socket.socket) -> None:
        seen.append(read_request(conn, 4)[1])
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(seen) + b"k" * len(seen))
        if after:
            time.sleep(0.1)  # a segment of its own, after the answer was taken (in the same read: an error)
            conn.sendall(after)
        else:  # closed while idle (its reading side stays open, to see whether a request still comes)
            conn.shutdown(socket.SHUT_WR)
        conn.settimeout(0.6)
        try:
            seen.append(conn.recv(100) or b"closed by the client")
        except TimeoutError:
            seen.append(b"nothing sent")
        except ConnectionResetError:  # closed with the unread bytes still on it
            seen.append(b"closed by the client")

    with local_server(handle, 3) as port:
        out = mp.mp_json(IDLE, args=[str(port)])
    assert out["answers"] == [[200, "k"], [200, "kkk"], [200, "kkkkk"]], out
    assert out["connections"] == 3
    assert seen[1::2] == [b"closed by the client"] * 3, seen  # nothing ever written to a used-up connection


# A client built at boot, then a heap cut into pieces of about 2 KB (plenty free, nothing as large
# as a TLS context, ~3 KB in one block): the client must still connect and get its answer. A client
# that makes its context at each connect fails here with MemoryError, as a terminal did under the
# 100 KB budget after some running.
FRAGMENTED = r"""
import sys, json, gc, asyncio
from clockterm import https
with open(sys.argv[1]) as f:
    cfg = json.load(f)
c = https.Client(cfg["url"], cafile=cfg["ca"])
""" + mp.fragment_heap(2000, 3100) + r"""

async def main():
    st, hdrs, body = await c.request("POST", "/v1/oauth/token",
                                     b"grant_type=client_credentials&client_id=term-1&client_secret=pw1",
                                     "Content-Type: application/x-www-form-urlencoded\r\n")
    print(json.dumps({"status": st, "fragmented": fragmented, "pins": sum(1 for p in pins if p)}))

asyncio.run(main())
"""


def test_connects_on_a_fragmented_heap(central: Handle, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"url": central.url, "ca": str(central.ca_path)}))
    out = mp.mp_json(FRAGMENTED, args=[str(cfg)])
    assert out["fragmented"] and out["pins"] > 10, out  # the heap really had no 3 KB piece left
    assert out["status"] == 200, out


TIMERS = r"""
import sys, json, time, asyncio
from clockterm import https
url, ca, silent = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def attempt(c, path="/v1/health"):
    t0 = time.ticks_ms()
    try:
        st = (await c.request("GET", path))[0]
    except https.HTTPError as e:
        st = str(e)
    return st, time.ticks_diff(time.ticks_ms(), t0)

async def main():
    out = {}
    # A server that takes the TCP connection and never answers the TLS handshake (which runs at the
    # first write, under the request's timeout): a timeout, and no connection kept.
    c = https.Client("https://127.0.0.1:%d" % silent, cafile=ca)
    c.timeout_ms = 400
    out["silent"] = await attempt(c)
    out["silent_connected"] = c.stream is not None
    # A request that ends in time leaves no timer behind: the task is not cancelled later.
    c = https.Client(url, cafile=ca)
    c.connect_timeout_ms = c.timeout_ms = 300
    out["fast"] = (await attempt(c))[0]
    try:
        await asyncio.sleep_ms(700)
        out["after"] = "not cancelled"
    except asyncio.CancelledError:
        out["after"] = "cancelled by a stale timer"
    # A request cancelled from outside: CancelledError (not an HTTP timeout), the connection closed.
    c.timeout_ms = 5000
    t = asyncio.create_task(c.request("GET", "/v1/slow"))
    await asyncio.sleep_ms(300)  # the central stalls: the request is waiting for its answer
    t.cancel()
    try:
        await t
        out["outside"] = "finished"
    except asyncio.CancelledError:
        out["outside"] = "cancelled"
    except https.HTTPError as e:
        out["outside"] = "HTTPError " + str(e)
    out["outside_connected"] = c.stream is not None
    print(json.dumps(out))

asyncio.run(main())
"""


def test_timeouts_are_own_timers_and_outside_cancel_stays_a_cancel(central: Handle) -> None:
    """Connect and request timeouts come from a small timer task (no asyncio.wait_for_ms): a silent
    TLS server times out at timeout_ms; a request done in time leaves no timer that cancels its
    task later; a cancel from outside stays a CancelledError and closes the connection."""

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel completes the TCP handshake; nobody ever answers the ClientHello
        central.set_faults(queue=[{"do": "stall", "s": 3, "path": "/v1/slow"}])
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
            f.write(central.ca_path.read_text())
        out = mp.mp_json(TIMERS, args=[central.url, f.name, str(silent.getsockname()[1])])
    assert out["silent"][0] == "timeout" and 350 <= out["silent"][1] < 2000, out
    assert not out["silent_connected"]
    assert out["fast"] == 404 or out["fast"] == 200, out  # an answer, whatever the path gives
    assert out["after"] == "not cancelled", out
    assert out["outside"] == "cancelled" and not out["outside_connected"], out


CLOSE = r"""
import sys, json, asyncio
from clockterm import https
port = int(sys.argv[1])

async def main():
    c = https.Client("http://127.0.0.1:%d" % port)
    status = (await c.request("GET", "/a"))[0]
    kept = c.stream is not None
    c.close()
    print(json.dumps({"status": status, "kept": kept}))
    await asyncio.sleep_ms(1500)  # alive, its objects not yet collected: the server must see the close now

asyncio.run(main())
"""


def test_close_closes_the_connection_at_once() -> None:
    # Client.close() must close the socket itself (asyncio's Stream.close() does not on MicroPython: only
    # wait_closed() does); left to the GC, a dropped connection stays open on both ends (and on a board
    # its TLS session's memory stays taken) until some later collection.

    seen: dict[str, float] = {}

    def handle(conn: socket.socket) -> None:
        read_request(conn, 0)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # keep-alive
        t0 = time.monotonic()
        conn.settimeout(5)
        try:
            eof = conn.recv(1) == b""
        except OSError:
            eof = False
        seen["eof_after_s"] = time.monotonic() - t0 if eof else 99.0

    with local_server(handle) as port:
        out = mp.mp_json(CLOSE, args=[str(port)])
    assert out == {"status": 200, "kept": True}
    assert seen["eof_after_s"] < 1.0, seen  # at close(), not at the process's end 1.5 s later


# A streamed body (a function that returns a generator: the length, then pieces filled into one small
# shared buffer, the first with head room), as the uplink streams a batch larger than its buffer.
STREAMED = r"""
import sys, json, asyncio
from clockterm import https
with open(sys.argv[1]) as f:
    cfg = json.load(f)
ROOM = 320
buf = bytearray(ROOM + 500)
writes = []

def streamed(body, extra):
    # body in pieces of up to 500 bytes through buf; the length announced is len(body) + extra
    def gen():
        yield len(body) + extra
        i, start = 0, ROOM
        while i < len(body):
            k = min(len(buf) - start, len(body) - i)
            buf[start:start + k] = body[i:i + k]
            yield memoryview(buf)[:start + k]
            i += k
            start = 0
    return gen

async def main():
    c = https.Client(cfg["url"], cafile=cfg["ca"])
    status, _, answer = await c.request("POST", "/v1/oauth/token", cfg["form"].encode(),
                                        "Content-Type: application/x-www-form-urlencoded\r\n")
    hdrs = "Authorization: Bearer %s\r\nContent-Type: application/json\r\n" % json.loads(answer)["access_token"]
    out = []
    for extra in cfg["extras"]:
        s0 = c.stream
        if s0 is not None and not hasattr(s0, "counted"):  # count the writes on the stream
            write = s0.write
            def counted(b, write=write):
                writes.append(len(b))
                write(b)
            s0.write = s0.counted = counted
        del writes[:]
        try:
            status, _, answer = await c.request("POST", "/v1/punches", streamed(cfg["body"].encode(), extra),
                                                hdrs, ROOM)
            res = {"status": status, "body": answer.decode()}
        except https.HTTPError as e:
            res = {"error": str(e)}
        res["connected"] = c.stream is not None
        res["writes"] = list(writes) if s0 is not None else None
        out.append(res)
    print(json.dumps({"results": out, "connections": c.connections}))

asyncio.run(main())
"""


def test_streamed_body_must_add_up_to_its_length(central: Handle, tmp_path: Path) -> None:
    # 20 punches (about 3 KB of JSON) streamed through an 820-byte buffer. Announced 10 bytes more than
    # the pieces give (the whole valid batch has gone out): HTTPError, the connection closed, and the
    # server, short of the announced length, stores nothing. Announced 10 bytes less: the piece that
    # would pass it is never written, the same. Announced right: stored, one write per piece, the
    # first with the head in front.
    body = json.dumps(upload(range(1, 21), "streamed")["body"])
    n0, r0 = central.store.count(), central.admin("/stats").get("punch_requests", 0)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"url": central.url, "ca": str(central.ca_path), "body": body,
                               "form": TOKEN["form"], "extras": [10, -10, 0, 0]}))
    out = mp.mp_json(STREAMED, args=[str(cfg)])
    short, over, ok, again = out["results"]
    assert "Content-Length" in short["error"] and not short["connected"], short
    assert sum(short["writes"]) > len(body) + 100  # every piece went out, the head too
    assert "Content-Length" in over["error"] and not over["connected"], over
    # Neither was stored: the same batch sent right after is new to the central
    assert ok["status"] == 200 and json.loads(ok["body"])["inserted"] == 20 and ok["connected"], ok
    assert central.store.count() == n0 + 20 and central.admin("/stats")["punch_requests"] == r0 + 4
    # On the kept-alive connection, counted: the head and the first 500 bytes in one write, then a
    # write per piece of the buffer (820 bytes)
    assert again["status"] == 200 and json.loads(again["body"])["duplicates"] == 20, again
    pieces = [len(body[i:i + 820]) for i in range(500, len(body), 820)]
    assert again["writes"][1:] == pieces and 600 < again["writes"][0] <= 820, again
    assert out["connections"] == 3


STALE_STREAMED = r"""
import sys, json, time, asyncio
from clockterm import https
port = int(sys.argv[1])
buf = bytearray(1000)
calls = []

def body():  # three pieces of 1000 bytes through one buffer, built anew for a resend
    calls.append(1)
    yield 3000
    for i in range(3):
        if i:
            time.sleep_ms(150)  # the server's reset arrives before the next piece goes
        buf[:] = b"%d" % i * 1000
        yield memoryview(buf)

async def main():
    c = https.Client("http://127.0.0.1:%d" % port)
    out = []
    for _ in range(2):
        status, _, answer = await c.request("POST", "/p", body)
        out.append([status, answer.decode()])
    print(json.dumps({"answers": out, "calls": len(calls), "connections": c.connections}))

asyncio.run(main())
"""


def test_streamed_body_sent_again_when_a_kept_alive_connection_was_closed() -> None:
    # As for a body in one write: the server closes the kept-alive connection as the next request
    # goes out. The first piece goes into the socket, a later write fails (the server's reset): no
    # answer came, so the request is sent again, whole, on a fresh connection.
    got: list[bytes] = []

    def handle(conn: socket.socket) -> None:
        head, data = read_request(conn, 3000)
        got.append(data)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(got) + b"k" * len(got))
        if len(got) == 1:
            read_request(conn, 1000)  # the next request's head and first piece, then a reset
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with local_server(handle, 2) as port:
        out = mp.mp_json(STALE_STREAMED, args=[str(port)])
    assert out["answers"] == [[200, "k"], [200, "kk"]]
    assert out["connections"] == 2 and out["calls"] == 3  # the second request built twice, sent once whole
    assert got == [b"0" * 1000 + b"1" * 1000 + b"2" * 1000] * 2


NAGLE = r"""
import sys, json, time, asyncio
from clockterm import https
port = int(sys.argv[1])
buf = bytearray(1000)

def body():  # four pieces of 1000 bytes: four writes
    yield 4000
    for _ in range(4):
        buf[:] = b"x" * 1000
        yield memoryview(buf)

async def main():
    c = https.Client("http://127.0.0.1:%d" % port)
    await c.request("POST", "/p", body)
    t0 = time.ticks_ms()
    for _ in range(10):
        await c.request("POST", "/p", body)
    print(json.dumps({"ms": time.ticks_diff(time.ticks_ms(), t0), "connections": c.connections}))

asyncio.run(main())
"""


def test_streamed_pieces_are_not_held_back_by_nagle() -> None:
    # The client's socket has TCP_NODELAY: without it, each piece after the first waits for the
    # server's delayed ACK (about 40 ms: 10 requests of 4 pieces took 440 ms here, with it 2 ms).

    def handle(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the answer is not held either
        data = b""
        for _ in range(11):
            _, body = read_request(conn, 4000, data)
            data = body[4000:]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with local_server(handle) as port:
        out = mp.mp_json(NAGLE, args=[str(port)])
    assert out["connections"] == 1 and out["ms"] < 150, out
FRAG_STREAM = r"""
import sys, json, gc, asyncio
from clockterm import https
with open(sys.argv[1]) as f:
    cfg = json.load(f)
c = https.Client(cfg["url"], cafile=cfg["ca"])
buf = bytearray(1536)  # the terminal's request buffer, allocated at boot like the client
ROOM = 320
HEAD = (b'{"device_id":"term-1","journal_id":"jfrag","fields":["seq","badge","kind","utc_ms",'
        b'"utc_offset_min","quality","uncertainty_ms","employee_id"],"rows":[')

def row(i):
    return b'%s[%d,"F%05d","in",%d,0,"synced",3,null]' % (b"," if i else b"", i + 1, i, 1780000000000 + i)

def body():
    yield len(HEAD) + sum(len(row(i)) for i in range(100)) + 2
    pos = ROOM
    buf[pos:pos + len(HEAD)] = HEAD
    pos += len(HEAD)
    for i in range(100):
        r = row(i)
        if pos + len(r) > len(buf):
            yield memoryview(buf)[:pos]
            pos = 0
        buf[pos:pos + len(r)] = r
        pos += len(r)
    buf[pos:pos + 2] = b"]}"
    yield memoryview(buf)[:pos + 2]

async def main():
    st, _, ans = await c.request("POST", "/v1/oauth/token",
                                 b"grant_type=client_credentials&client_id=term-1&client_secret=pw1",
                                 "Content-Type: application/x-www-form-urlencoded\r\n")
    token = json.loads(ans)["access_token"]
    c.close()  # the batch goes on a fresh connection: its TLS handshake still to do
""" + "\n".join("    " + ln for ln in mp.fragment_heap(1000, 1400).strip().splitlines()) + r"""
    try:
        hdrs = "Authorization: Bearer %s\r\nContent-Type: application/json\r\n" % token
        st, _, ans = await c.request("POST", "/v1/punches", body, hdrs, ROOM)
        res = [st, json.loads(ans).get("stored_through")]
    except Exception as e:
        res = repr(e)
    print(json.dumps({"fragmented": fragmented, "result": res}))

asyncio.run(main())
"""


def test_streamed_body_on_a_fresh_tls_connection_in_a_fragmented_heap(central: Handle, tmp_path: Path) -> None:
    # The TLS handshake of a fresh connection runs at its first write: what the socket does not take
    # then, asyncio's Stream.write copies into a bytes object of its own. Were that the first piece
    # (~1.4 KB), a heap with no such block left would fail the batch with MemoryError at every retry.
    # The client writes the head alone first (a few hundred bytes), so the handshake is over by the
    # first piece.
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"url": central.url, "ca": str(central.ca_path)}))
    out = mp.mp_json(FRAG_STREAM, args=[str(cfg)])
    assert out["fragmented"], out
    assert out["result"] == [200, 100], out


LEAK = r"""
import sys, json, gc, os, asyncio
from clockterm import https
url, cafile, connect_ms = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])

async def main():
    c = https.Client(url, cafile=cafile)
    if connect_ms:
        c.connect_timeout_ms = connect_ms
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    errors = []
    for _ in range(4):
        try:
            await c.request("GET", "/")
            errors.append("answered")
        except https.HTTPError as e:
            errors.append(str(e))
    gc.collect()
    print(json.dumps({"errors": errors, "fds_added": len(os.listdir("/proc/self/fd")) - before}))

asyncio.run(main())
"""  # argv: url, CA file ("" for none), connect timeout in ms (0: the client's own)


def test_a_connect_that_times_out_leaves_no_socket_open() -> None:
    # A listener whose accept queue is full drops the client's SYN: the connect hangs until
    # connect_timeout_ms. Each such attempt must close its socket (asyncio.open_connection's stayed
    # open: one more per retry toward an unreachable central, and a board has only a few).

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue (never accepted)
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            try:
                f.connect(srv.getsockname())
            except BlockingIOError:
                pass
            fillers.append(f)
        out = mp.mp_json(LEAK, args=[f"http://127.0.0.1:{srv.getsockname()[1]}", "", "300"])
    finally:
        for f in fillers:
            f.close()
        srv.close()
    assert out["errors"] == ["timeout"] * 4, out
    assert out["fds_added"] == 0, out


def test_a_tls_handshake_that_fails_leaves_no_socket_open(tmp_path: Path) -> None:
    # Plain HTTP where TLS was expected (a captive portal, a proxy, a central on the wrong port): the
    # handshake fails at the first record (MBEDTLS_ERR_SSL_INVALID_RECORD). Each attempt must close its
    # TCP socket: after a TLS error, MicroPython's TLS socket does not close the one under it, and an
    # uplink retrying toward such a server lost a socket per try (a board has only a few).
    ca = tmp_path / "ca.pem"
    ca.write_bytes(trustme.CA().cert_pem.bytes())

    def handle(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://portal/\r\nContent-Length: 0\r\n\r\n")

    with local_server(handle, conns=4) as port:
        out = mp.mp_json(LEAK, args=[f"https://127.0.0.1:{port}", str(ca), "0"])
    assert len(out["errors"]) == 4 and "answered" not in out["errors"], out
    assert out["fds_added"] == 0, out


EARLY = r"""
import json, asyncio
from clockterm import https

class Sock:  # the connection's socket: quiet while the request goes out
    def readinto(self, b):
        return None
    def close(self):
        pass

class Stream:  # the server answered 413 early, then stopped reading: the second piece's write fails
    def __init__(self):
        self.writes = 0
        self.answer = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\n\r\nno"
        self.s = Sock()
    def write(self, b):
        self.writes += 1
        if self.writes > 1:
            raise OSError(104)  # ECONNRESET
    async def drain(self):
        pass
    async def readinto(self, b):
        n = min(len(b), len(self.answer))
        b[:n] = self.answer[:n]
        self.answer = self.answer[n:]
        return n

buf = bytearray(100)

def body():
    yield 150  # the length: three pieces of 50
    for i in range(3):
        buf[:] = b"x" * 100
        yield memoryview(buf)[:50 if i else 100]  # the first with 50 bytes of room

async def main():
    c = https.Client("http://127.0.0.1:9")  # nothing listens there: a resend could not connect
    c.stream = Stream()
    try:
        st, _, ans = await c.request("POST", "/v1/punches", body, "", 50)
        out = [st, bytes(ans).decode(), c.stream is None]
    except https.HTTPError as e:
        out = str(e)
    print(json.dumps(out))

asyncio.run(main())
"""


def test_an_early_answer_to_a_streamed_body_is_read() -> None:
    # A server may answer (401, 413 for the Content-Length) before it has read the whole body and
    # close; a later piece's write then fails. The answer must still be read, so that the uplink
    # refreshes its token or halves its batch, instead of taking it for a dropped connection.
    out = mp.mp_json(EARLY)
    assert out == [413, "no", True], out  # and the connection is not kept


ENDLESS = r"""
import sys, json, gc, asyncio
from clockterm import https
port = int(sys.argv[1])
c = https.Client("http://127.0.0.1:%d" % port)
""" + mp.fragment_heap(1000, 2000) + r"""

async def main():
    out = []
    for _ in range(2):
        try:
            await c.request("GET", "/")
            out.append("answered")
        except https.HTTPError as e:
            out.append(str(e))
        except MemoryError:
            out.append("MemoryError")
    print(json.dumps({"fragmented": fragmented, "results": out, "connected": c.stream is not None}))

asyncio.run(main())
"""


def test_an_endless_header_line_is_refused_without_holding_it() -> None:
    # A header line that never ends (64 KB without a newline), in a heap cut into pieces of about
    # 1 KB (nothing of 2 KB in one block): refused as too long, whether the header is one the client
    # keeps (its line must fit the read buffer) or not (read through up to 4 KB, then refused), and
    # never by a MemoryError (a reader that holds the whole line first needs a block of its size).
    lines = [b"x-policy: ", b"etag: "]

    def handle(conn: socket.socket) -> None:
        read_request(conn, 0)
        with contextlib.suppress(OSError):  # the client gives up and closes
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n" + lines.pop(0) + b"x" * 65536)

    with local_server(handle, 2) as port:
        out = mp.mp_json(ENDLESS, args=[str(port)])
    assert out["fragmented"], out
    assert out["results"] == ["answer line too long"] * 2 and not out["connected"], out
