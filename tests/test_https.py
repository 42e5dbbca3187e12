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


def run_case(module: str, case: str, **settings: Any) -> Any:
    """Case `case` of tests/<module>_mp.py under micropython with `settings` (https_heap after
    tests/fragment_mp.py, whose fragment_heap it uses): the JSON it prints."""
    text = mp.script(f"{module}_mp.py", {"CASE": case, **settings}, "main()")
    return mp.mp_json(mp.script("fragment_mp.py") + text if module == "https_heap" else text)


def run(url: str, steps: list[dict[str, Any]], ca: Path | None = None, **tune: Any) -> dict[str, Any]:
    cfg = {"url": url, "ca": str(ca) if ca else None, "steps": steps, "tune": tune}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(cfg, f)
        f.flush()
        out = run_case("https", "driver", CFG_FILE=f.name)  # the steps through one Client: what happened
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
        out = run_case("https_conn", "one_write", PORT=port, ROOM=room)
    assert (out["status"], out["body"]) == (200, "ok")
    head, body = got["all"].split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /api/x HTTP/1.1\r\n") and b"Content-Length: 3000" in head
    assert body == bytes(0x61 + i % 26 for i in range(room, room + 3000))
    assert out["writes"] == ([len(got["all"])] if room else [len(head) + 4, 3000])




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
        out = run_case("https_conn", "stale", PORT=port)
    assert out["answers"] == [[200, "k"], [200, "kkk"]]
    assert out["connections"] == 2 and out["calls"] == 3  # the second request built twice
    assert got == [b"body 1", b"body 2", b"body 3"]




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
        out = run_case("https_conn", "idle", PORT=port)
    assert out["answers"] == [[200, "k"], [200, "kkk"], [200, "kkkkk"]], out
    assert out["connections"] == 3
    assert seen[1::2] == [b"closed by the client"] * 3, seen  # nothing ever written to a used-up connection




def test_connects_on_a_fragmented_heap(central: Handle) -> None:
    # A client built at boot, then a heap cut into pieces of about 2 KB (plenty free, nothing as large
    # as a TLS context, ~3 KB in one block): the client must still connect and get its answer. A client
    # that makes its context at each connect fails here with MemoryError, as a terminal did under the
    # 100 KB budget after some running.
    out = run_case("https_heap", "fragmented", URL=central.url, CA=str(central.ca_path))
    assert out["fragmented"] and out["pins"] > 10, out  # the heap really had no 3 KB piece left
    assert out["status"] == 200, out




def test_timeouts_are_own_timers_and_outside_cancel_stays_a_cancel(central: Handle) -> None:
    """Connect and request timeouts come from a small timer task (no asyncio.wait_for_ms): a silent
    TLS server times out at timeout_ms; a request done in time leaves no timer that cancels its
    task later; a cancel from outside stays a CancelledError and closes the connection."""

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel completes the TCP handshake; nobody ever answers the ClientHello
        central.set_faults(queue=[{"do": "stall", "s": 3, "path": "/v1/slow"}])
        out = run_case("https", "timers", URL=central.url, CA=str(central.ca_path), SILENT_PORT=silent.getsockname()[1])
    assert out["silent"][0] == "timeout" and 350 <= out["silent"][1] < 2000, out
    assert not out["silent_connected"]
    assert out["fast"] == 404 or out["fast"] == 200, out  # an answer, whatever the path gives
    assert out["after"] == "not cancelled", out
    assert out["outside"] == "cancelled" and not out["outside_connected"], out




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
        out = run_case("https_conn", "close", PORT=port)
    assert out == {"status": 200, "kept": True}
    assert seen["eof_after_s"] < 1.0, seen  # at close(), not at the process's end 1.5 s later




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
    out = run_case("https", "streamed", CFG_FILE=str(cfg))
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
        out = run_case("https_conn", "stale_streamed", PORT=port)
    assert out["answers"] == [[200, "k"], [200, "kk"]]
    assert out["connections"] == 2 and out["calls"] == 3  # the second request built twice, sent once whole
    assert got == [b"0" * 1000 + b"1" * 1000 + b"2" * 1000] * 2




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
        out = run_case("https_conn", "nagle", PORT=port)
    assert out["connections"] == 1 and out["ms"] < 150, out


def test_streamed_body_on_a_fresh_tls_connection_in_a_fragmented_heap(central: Handle) -> None:
    # The TLS handshake of a fresh connection runs at its first write: what the socket does not take
    # then, asyncio's Stream.write copies into a bytes object of its own. Were that the first piece
    # (~1.4 KB), a heap with no such block left would fail the batch with MemoryError at every retry.
    # The client writes the head alone first (a few hundred bytes), so the handshake is over by the
    # first piece.
    out = run_case("https_heap", "frag_stream", URL=central.url, CA=str(central.ca_path))
    assert out["fragmented"], out
    assert out["result"] == [200, 100], out




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
        out = run_case("https_conn", "leak", URL=f"http://127.0.0.1:{srv.getsockname()[1]}", CONNECT_MS=300)
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
        out = run_case("https_conn", "leak", URL=f"https://127.0.0.1:{port}", CA=str(ca))
    assert len(out["errors"]) == 4 and "answered" not in out["errors"], out
    assert out["fds_added"] == 0, out




def test_an_early_answer_to_a_streamed_body_is_read() -> None:
    # A server may answer (401, 413 for the Content-Length) before it has read the whole body and
    # close; a later piece's write then fails. The answer must still be read, so that the uplink
    # refreshes its token or halves its batch, instead of taking it for a dropped connection.
    out = run_case("https_conn", "early")
    assert out == [413, "no", True], out  # and the connection is not kept




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
        out = run_case("https_heap", "endless", PORT=port)
    assert out["fragmented"], out
    assert out["results"] == ["answer line too long"] * 2 and not out["connected"], out
