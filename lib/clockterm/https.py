# Small HTTP/1.1 client for the uplink: verified TLS over asyncio streams, keep-alive, bounded answers.
#
# MicroPython's frozen `requests` never verifies certificates and blocks the loop, so the uplink
# speaks HTTP itself. TLS: the built-in `tls` module's SSLContext(PROTOCOL_TLS_CLIENT), with
# CERT_REQUIRED set explicitly (the `ssl` wrapper module starts with CERT_NONE; `tls` is used directly
# because `ssl` is a Python wrapper whose module and class cost heap for nothing here), the CA loaded
# from config (mbedTLS takes DER; PEM is converted here) and the host name checked through
# server_hostname. Plain HTTP is used only when the URL says http://.
#
# A request body larger than the caller's buffer can be streamed through it in pieces (request's
# `body`), each filled just before its write; the socket has TCP_NODELAY, so that Nagle does not hold
# a piece back until the server's delayed ACK.
#
# Heap: one class besides the exception; an answer is a plain tuple (status, headers, body). The TLS
# context (about 3 KB of mbedTLS state in one block) is made once, when the client is built at boot,
# and serves every connection: made at each connect, it must find 3 KB in one piece in a heap that
# has been fragmented by hours of running, and a terminal whose heap cannot give it never connects
# again (seen under the 100 KB budget: MemoryError at every retry, with tens of KB free in pieces).

import asyncio
import binascii
import errno
import socket
import tls
from micropython import const

from clockterm import cancel_after

_MAX_HEADERS = const(32)  # header lines per answer; more is a protocol error
_MAX_LINE = const(512)  # bytes of a status, header or chunk-size line
_JOIN_MAX = const(1024)  # bodies without head room up to this size are copied behind the head (one write)
_CHUNK = const(512)  # bytes per read of an answer body
# The answer headers kept: the ones this client and its users read, each between spaces (one string
# constant: a tuple of seven cost ~350 B of heap for good)
_KEEP_HEADERS = const(b" content-length transfer-encoding connection retry-after etag content-type location ")
_BAD_LENGTH = const("body not of its Content-Length")
_IPPROTO_TCP = const(6)  # socket.IPPROTO_TCP and TCP_NODELAY (see Client.request)
_TCP_NODELAY = const(1)
_ERR_BODY = const(256)  # bytes kept of an answer other than 200 (its start says enough; the rest is read and dropped)


class HTTPError(OSError):
    """The exchange failed (connection, TLS, timeout, malformed or oversized answer)."""


async def _line(s):
    # A header or chunk-size line of the answer: there, and not over _MAX_LINE.
    line = await s.readline()
    if not line:
        raise HTTPError("connection closed mid-answer")
    if len(line) > _MAX_LINE:
        raise HTTPError("answer line too long")
    return line


def _tls(ca):
    # A TLS client context that trusts the CA (PEM or DER bytes, or the name of a file with them).
    if isinstance(ca, str):
        with open(ca, "rb") as f:
            ca = f.read()
    if not ca:
        raise ValueError("https needs a CA (cadata or cafile)")
    start = ca.find(b"-----BEGIN")
    if start >= 0:  # PEM: the first certificate, to DER
        start = ca.find(b"\n", start) + 1
        end = ca.find(b"-----END", start)
        if start <= 0 or end < 0:
            raise ValueError("bad PEM certificate")
        ca = binascii.a2b_base64(ca[start:end].replace(b"\r", b"").replace(b"\n", b""))
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED  # explicit: never rely on a default here
    ctx.load_verify_locations(ca)
    return ctx


class Client:
    """One origin (scheme, host, port), at most one open connection, reused while the server allows.

    Tunables (instance attributes, set after construction):
      max_body            bytes of an answer body; larger -> HTTPError
      connect_timeout_ms  TCP connect (the TLS handshake runs at the first write, under timeout_ms)
      timeout_ms          whole request: send plus complete answer (also bounds a trickling server)
    State: stream (the open connection, or None); counters: connections (opened; = TLS handshakes over
    https), requests.
    """

    max_body = 16384
    connect_timeout_ms = 10000
    timeout_ms = 15000

    def __init__(self, url, cadata=None, cafile=None):
        # The URL: http[s]://host[:port][/prefix], host may be [v6]
        secure = url.startswith("https://")
        if secure:
            rest, port = url[8:], 443
        elif url.startswith("http://"):
            rest, port = url[7:], 80
        else:
            raise ValueError("URL must start with https:// (or http:// for a lab)")
        i = rest.find("/")
        hostport, self.prefix = (rest, "") if i < 0 else (rest[:i], rest[i:].rstrip("/"))
        if hostport.startswith("["):  # [v6]:port
            j = hostport.find("]")
            host, tail = hostport[1:j], hostport[j + 1:]
            if tail.startswith(":"):
                port = int(tail[1:])
        elif ":" in hostport:
            host, p = hostport.rsplit(":", 1)
            port = int(p)
        else:
            host = hostport
        if not host:
            raise ValueError("URL has no host")
        self.host = host
        self.port = port
        # A missing or bad CA fails here, not at the first request.
        self._ctx = _tls(cafile if cadata is None else cadata) if secure else None
        self.stream = None
        self.connections = 0
        self.requests = 0

    def close(self):
        """Close the connection (idempotent); the next request opens a new one."""
        s = self.stream
        self.stream = None
        if s is not None:
            try:
                # The socket itself: MicroPython's asyncio Stream.close() does nothing (only the async
                # wait_closed() closes), and a connection left to the GC stays open on both ends, its
                # TLS session's memory taken, until some later collection.
                s.s.close()
            except Exception:
                pass

    async def request(self, method, path, body=None, headers="", room=0, sink=None, timeout_ms=0, max_body=0):
        """Send one request and return (status, headers, body); raises HTTPError (the connection is
        then closed).

        body: bytes-like, or a function that returns it. A function is called right before the
          write, in the same event-loop turn (and again if the request has to be sent again): a
          buffer it fills may be shared with other users that also fill and write it without an await.
          A body larger than that buffer is streamed: the function returns a generator that gives
          the body's length in bytes (the Content-Length; None before it, for a turn of the event loop
          while the length is worked out), then, at each further next(), fills the buffer and gives
          the next piece (a memoryview of it, the first one with `room` in front).
          Each piece is written in the turn its next() runs, and the drain that follows empties the
          stream's own buffer before the next one. The pieces must add up to that length: a piece
          that would pass it is not written, and more or fewer raise HTTPError (the connection closed,
          so the server sees a short body and stores nothing). An exception from the generator
          aborts the request the same way.
        headers: extra header lines, one str, each line ending in CRLF (Content-Type, Authorization ...).
        room: the first `room` bytes of the body (of a streamed body's first piece) are scratch space,
          not body: the head is written into their end so that head and body leave in one write (one
          TLS record, one TCP segment).
        timeout_ms, max_body: this request's own limits (0: the client's timeout_ms and max_body), e.g.
          a long timeout for a roster download, a small body limit for a config overlay.
        sink: a function called with each piece (bytes, up to 512) of a 200 answer's body instead of
          collecting it: a large answer (a roster) never sits in RAM whole. It must not keep the
          piece; an exception from it aborts the exchange (connection closed).
        The answer's headers come as a dict with lower-case names, only those in _KEEP_HEADERS (the
        ones read here and by the uplink); its body as a bytearray (empty when there is none, or when
        it went to the sink).
        """
        self.requests += 1
        me = asyncio.current_task()
        timer = None
        try:
            while True:
                reused = self.stream is not None
                if not reused:
                    self.connections += 1
                    # Connected here rather than by asyncio.open_connection: its socket, made in its
                    # own frame, stayed open when the connect timed out or was cancelled (a socket per
                    # retry toward an unreachable central; lwIP has only a few). Here the Stream holds
                    # it from the start, and request()'s error paths close it.
                    ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
                    s = socket.socket(ai[0], ai[1], ai[2])
                    self.stream = asyncio.StreamWriter(s, {})
                    s.setblocking(False)
                    # TCP_NODELAY: a streamed body is several writes, and Nagle would hold each one
                    # after the first until the server's delayed ACK (about 40 ms; on loopback, whose
                    # MSS is 64 KB, every piece is a small segment). The unix port's socket module
                    # lacks the names; 6 and 1 are their values on Linux, lwIP and BSD alike. A port
                    # that refuses the option still connects.
                    try:
                        s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
                    except OSError:
                        pass
                    try:
                        s.connect(ai[-1])
                    except OSError as e:
                        if e.errno != errno.EINPROGRESS:
                            raise
                    timer = asyncio.create_task(cancel_after(me, self.connect_timeout_ms))
                    try:
                        yield asyncio.core._io_queue.queue_write(s)  # connected (or failed: the first write says)
                    finally:
                        timer.cancel()
                    if self._ctx is not None:  # the handshake runs at the first write; the host name is checked
                        s = self._ctx.wrap_socket(s, server_hostname=self.host, do_handshake_on_connect=False)
                        s.setblocking(False)
                        self.stream.s = s
                timer = asyncio.create_task(cancel_after(me, timeout_ms or self.timeout_ms))
                try:
                    ans = await self._exchange(method, path, body, headers, room, sink, max_body or self.max_body,
                                              not reused)
                finally:
                    timer.cancel()
                if ans is not None:
                    return ans
                if not reused:
                    raise HTTPError("connection closed before the answer")
                # The server had closed the idle kept-alive connection (no answer byte came back): once
                # more on a fresh one. Safe because the API's requests are idempotent.
                self.close()
        except HTTPError:
            self.close()
            raise
        except (OSError, EOFError, ValueError, IndexError) as e:
            self.close()
            raise HTTPError("%s: %s" % (type(e).__name__, e))
        except BaseException as e:  # cancellation, a sink's error: never leave a half-used connection behind
            self.close()
            if isinstance(e, asyncio.CancelledError) and timer is not None and timer.done():
                raise HTTPError("timeout")  # our own timer cancelled us (one cancelled from outside: re-raised)
            raise

    async def _exchange(self, method, path, body, headers, room, sink, max_body, fresh=False):
        # One request on the open connection: its answer, or None when the connection turns out closed
        # before the first answer byte (a kept-alive one the server closed meanwhile).
        s = self.stream
        pieces = None
        partial = False  # a streamed body broken off by the server
        size = None  # the Content-Length
        if callable(body):
            body = body()
            if not isinstance(body, (bytes, bytearray, memoryview)):  # streamed (see `body` in request)
                pieces = body
                size = next(pieces)
                while size is None:  # not yet: let the loop run
                    await asyncio.sleep_ms(0)
                    size = next(pieces)
                # A fresh TLS connection does its handshake at the first write, and what the socket
                # does not take meanwhile Stream.write copies into a bytes object of its own: there the
                # head goes first, alone (a few hundred bytes), and the drain that follows ends the
                # handshake. The first piece, the size of the buffer, then needs no block of heap (a
                # fragmented heap could not give one: a MemoryError at every retry).
                body = None if fresh and self._ctx is not None else next(pieces)
        if body is not None:
            sent = len(body) - room
            if size is None:
                size = sent
            elif sent > size:
                raise HTTPError(_BAD_LENGTH)
        host = self.host if self.port in (80, 443) else "%s:%d" % (self.host, self.port)
        head = "%s %s%s HTTP/1.1\r\nHost: %s\r\n%s" % (method, self.prefix, path, host, headers)
        if size is not None:
            head += "Content-Length: %d\r\n" % size
        head = head.encode() + b"\r\n"
        # The head and the body (a streamed body's first piece) in one write (see `room`). Without room,
        # a small body is copied behind the head; a large one is written separately rather than copied
        # (heap). Stream.write sends at once what the socket takes and copies the rest: once it
        # returns, the body's buffer is free again.
        n = len(head)
        if body is None:
            s.write(head)
        elif room >= n:
            mv = memoryview(body)
            mv[room - n:room] = head
            s.write(mv[room - n:])
        elif len(body) - room <= _JOIN_MAX:
            s.write(head + bytes(memoryview(body)[room:]))
        else:
            s.write(head)
            s.write(memoryview(body)[room:])
        first = pieces is not None and body is None  # the first piece is still to write, its room unused
        body = head = None
        await s.drain()
        if pieces is not None:
            # The rest of a streamed body: each next() refills the buffer, and its write follows in the
            # same turn; the drain keeps at most one piece in the stream's own buffer. A piece that
            # would pass the announced length is never written.
            if first:
                sent = -room
            try:
                for body in pieces:
                    sent += len(body)
                    if sent > size:
                        break
                    s.write(memoryview(body)[room:] if first else body)
                    first = False
                    await s.drain()
            except OSError:
                # The server stopped reading: it may have answered early (a 401, a 413 for the
                # Content-Length) and closed, so its answer is read all the same below; with none, it
                # is a kept-alive connection the server closed while idle (the first write went into
                # the socket, a later one met the reset), sent again on a fresh one by request().
                partial = True
            else:
                if sent != size:  # request() closes the connection: the server sees a short body, stores nothing
                    raise HTTPError(_BAD_LENGTH)
            pieces = None  # its frame is not kept while the answer is awaited

        # The status line, then the header lines up to the blank line
        try:
            line = await s.readline()
        except OSError:
            if not partial:
                raise
            line = b""
        if not line:
            return None
        parts = line.split(None, 2)
        if len(line) > _MAX_LINE or not line.startswith(b"HTTP/1.") or len(parts) < 2 or len(parts[1]) != 3:
            raise HTTPError("not an HTTP answer")
        status = int(parts[1])
        keep = parts[0] == b"HTTP/1.1"
        hdrs = {}
        n = 0
        while True:
            line = await _line(s)
            if line == b"\r\n" or line == b"\n":
                break
            n += 1
            if n > _MAX_HEADERS:
                raise HTTPError("too many headers")
            i = line.find(b":")
            if i <= 0:
                raise HTTPError("malformed header")
            name = line[:i].strip().lower()
            if b" " not in name and _KEEP_HEADERS.find(b" " + name + b" ") >= 0:  # the others (date ...) only take heap
                hdrs[name.decode()] = line[i + 1:].decode().strip()
        conn = hdrs.get("connection", "").lower()
        if conn == "close" or partial:
            keep = False
        elif conn == "keep-alive":
            keep = True

        # The body: Content-Length bytes, chunks, or (neither) everything up to the close
        if status != 200:
            sink = None
        body = bytearray()
        chunked = False
        size = 0
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            chunked = True
        elif "content-length" in hdrs:
            size = int(hdrs["content-length"])
            if size < 0 or (status == 200 and sink is None and size > max_body):
                raise HTTPError("answer body too large")
        else:
            size = -1  # up to the close
            keep = False
        while True:
            if chunked:
                line = await _line(s)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while line and line not in (b"\r\n", b"\n"):  # trailers, up to the blank line
                        line = await s.readline()
                    break
            while size:
                part = await s.read(_CHUNK if size < 0 else min(size, _CHUNK))
                if not part:
                    if size < 0:
                        break
                    raise HTTPError("connection closed mid-answer")
                if sink is not None:
                    sink(part)
                elif status != 200:  # a proxy's error page must not need a big block of heap
                    if len(body) < _ERR_BODY:
                        body.extend(part[:_ERR_BODY - len(body)])
                elif len(body) + len(part) > max_body:
                    raise HTTPError("answer body too large")
                else:
                    body.extend(part)
                if size > 0:
                    size -= len(part)
            if not chunked:
                break
            await s.readexactly(2)  # CRLF after the chunk
        if not keep:
            self.close()
        return status, hdrs, body
