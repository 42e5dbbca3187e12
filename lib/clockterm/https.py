# Small HTTP/1.1 client for the uplink: verified TLS over asyncio streams, keep-alive, strict bounded answers.
#
# MicroPython's frozen `requests` never verifies certificates and blocks the loop, so the uplink
# speaks HTTP itself. TLS: the built-in `tls` module's SSLContext(PROTOCOL_TLS_CLIENT), with
# CERT_REQUIRED set explicitly (the `ssl` wrapper module starts with CERT_NONE; `tls` is used directly
# because `ssl` is a Python wrapper whose module and class cost heap for nothing here), the CA loaded
# from config (mbedTLS takes DER; PEM is converted here) and the host name checked through
# server_hostname. Plain HTTP is used only when the URL says http:// (the tests drive the parser over
# plain loopback sockets; the terminal's config and the uplink accept only https://).
#
# A request body larger than the caller's buffer can be streamed through it in pieces (request's
# `body`), each filled just before its write; the socket has TCP_NODELAY, so that Nagle does not hold
# a piece back until the server's delayed ACK.
#
# The answer is read strictly, because the uplink acks punches on what it says: any framing error
# (a line not ended by CRLF, a bare CR or other control byte in the head, a status line that is not
# "HTTP/1.x NNN ...", a header that is not "name: value" or is folded, a Content-Length that is not
# plain digits or is given twice with different values, both Content-Length and Transfer-Encoding, a
# transfer-coding other than chunked, a chunk size that is not plain hex, a chunk not followed by
# CRLF, fewer bytes than announced, a 200 whose length only the close would tell, bytes left over
# after the answer on a kept-alive connection) fails the request with HTTPError and closes the
# connection. Every read goes through one small read buffer made with the client: no line or
# piece is ever held larger than it (a header line over it is read through and dropped when it is
# not one of the kept headers, else refused), so a hostile answer cannot make the client allocate.
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

from clockterm import cancel_after, shut

_READ_BYTES = const(128)  # the read buffer: a status, Content-Length, Transfer-Encoding or chunk-size line must fit it
_MAX_HEADERS = const(32)  # header lines of a head (trailer lines of a chunked body); more is an error
_DROP_LINE_MAX = const(4096)  # bytes of a header line that is read through and dropped (not kept)
_MAX_INTERIM = const(4)  # 1xx answers (103 Early Hints ...) passed over before the final one
_SIZE_DIGITS = const(8)  # hex digits of a chunk size (leading zeros included): under 4 GB
_LENGTH_DIGITS = const(9)  # digits of a Content-Length: under 1 GB
_JOIN_MAX = const(1024)  # bodies without head room up to this size are copied behind the head (one write)
# The answer headers kept: the ones this client and its users read, each between spaces (one string
# constant: heap, see docs/heap.md)
_KEEP_HEADERS = const(b" content-length transfer-encoding connection retry-after etag ")
_FRAMING_END = const(33)  # the framing headers come first in _KEEP_HEADERS: found before this index
_TCHAR = const(b"!#$%&'*+-.^_`|~")  # the punctuation allowed in a header name (RFC 9110 token)
_BAD_LENGTH = const("body not of its Content-Length")
_IPPROTO_TCP = const(6)  # socket.IPPROTO_TCP and TCP_NODELAY (see Client.connect)
_TCP_NODELAY = const(1)
_ERR_BODY = const(256)  # bytes kept of an answer other than 200 (its start says enough; the rest is read and dropped)


class HTTPError(OSError):
    """The exchange failed (connection, TLS, timeout, malformed or oversized answer)."""


def load(data):
    """A certificate or key as DER bytes, from PEM or DER bytes or the name of a file with them: the first
    PEM block's content (this port's mbedTLS takes PEM only with a NUL at its end). ValueError when bad."""
    if isinstance(data, str):
        with open(data, "rb") as f:
            data = f.read()
    start = data.find(b"-----BEGIN")
    if start >= 0:
        start = data.find(b"\n", start) + 1
        end = data.find(b"-----END", start)
        if start <= 0 or end < 0:
            raise ValueError("bad PEM")
        data = binascii.a2b_base64(data[start:end].replace(b"\r", b"").replace(b"\n", b""))
    return data


def _tls(ca):
    # A TLS client context that trusts the CA (PEM or DER bytes, or the name of a file with them).
    ca = load(ca) if ca else None
    if not ca:
        raise ValueError("https needs a CA (cadata or cafile)")
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

    request() is the API. The steps it takes (connect, send, write, readline, fill, read) and the read
    buffer's positions (start, end) are not for callers, yet named without a leading underscore: those
    names are interned by MicroPython anyway, and every new name costs heap for good (heap: see
    docs/heap.md, the qstr pool).
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
            raise ValueError("URL must start with https://")
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
        self.sock = None  # under TLS, the TCP socket (close() closes it too)
        self.connections = 0
        self.requests = 0
        # The read buffer, made once here at boot like the TLS context (nothing to allocate per
        # connection in a heap that hours of running have cut up): the answer's bytes from start to end
        # are read from the connection and not yet used
        self._buf = bytearray(_READ_BYTES)
        self.start = self.end = 0

    def close(self):
        """Close the connection (idempotent); the next request opens a new one."""
        s, raw = self.stream, self.sock
        self.stream = self.sock = None
        self.start = self.end = 0  # what the read buffer held belonged to that connection
        # Closed now: a connection left to the GC stays open on both ends, its TLS session's memory
        # taken, until some later collection
        shut(s, raw)

    async def request(self, method, path, body=None, headers="", room=0, sink=None, timeout_ms=0, max_body=0):
        """Send one request and return (status, headers, body); raises HTTPError (the connection is
        then closed).

        body: bytes-like, or a function that returns it. A function is called right before the
          write, in the same event-loop turn (and again if the request has to be sent again), so the
          body may be built in the shared answer buffer (clockterm.OutBuf, whose rule this follows).
          A body larger than that buffer is streamed: the function returns a generator that gives
          the body's length in bytes (the Content-Length; None before it, for a turn of the event loop
          while the length is worked out), then, at each further next(), builds the next piece in the
          buffer and gives it (a view of it, the first one with `room` in front).
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
        sink: a function called with each piece (a bytearray of up to _READ_BYTES) of a 200 answer's
          body instead of collecting it: a large answer (a roster) never sits in RAM whole. It must not
          keep the piece; an exception from it aborts the exchange (connection closed).
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
                if reused:
                    # A kept-alive connection is used again only when nothing came on it since the last
                    # answer: bytes past that answer (a server that does not frame its answers: they
                    # could pass for this request's answer) or its close (the server ended it while
                    # idle). A read that would block says so; it never waits.
                    try:
                        reused = self.stream.s.readinto(self._buf) is None
                    except OSError:
                        reused = False
                    if not reused:
                        self.close()
                if not reused:
                    timer = asyncio.create_task(cancel_after(me, self.connect_timeout_ms))
                    try:
                        await self.connect()
                    finally:
                        timer.cancel()
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
                # The server closed the kept-alive connection as the request went out (no answer byte
                # came back): once more on a fresh one. Safe because the API's requests are idempotent.
                self.close()
        except HTTPError:
            self.close()
            raise
        except (OSError, EOFError, ValueError, IndexError) as e:
            self.close()
            raise HTTPError("%s: %s" % (type(e).__name__, e)) from None
        except BaseException as e:  # cancellation, a sink's error: never leave a half-used connection behind
            self.close()
            if isinstance(e, asyncio.CancelledError) and timer is not None and timer.done():
                # our own timer cancelled us (one cancelled from outside: re-raised)
                raise HTTPError("timeout") from None
            raise

    async def connect(self):
        # A new connection to the origin, TCP connected (under the caller's connect timer); for https
        # wrapped in TLS, whose handshake runs at the first write and checks the host name.
        # Connected here rather than by asyncio.open_connection: its socket, made in its own frame,
        # stayed open when the connect timed out or was cancelled (a socket per retry toward an
        # unreachable central; lwIP has only a few). Here the Stream holds it from the start, and
        # request()'s error paths close it.
        self.connections += 1
        ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
        s = socket.socket(ai[0], ai[1], ai[2])
        self.stream = asyncio.StreamWriter(s, {})
        s.setblocking(False)
        # TCP_NODELAY: a streamed body is several writes, and Nagle would hold each one after the first
        # until the server's delayed ACK (about 40 ms; on loopback, whose MSS is 64 KB, every piece is
        # a small segment). The unix port's socket module lacks the names; 6 and 1 are their values on
        # Linux, lwIP and BSD alike. A port that refuses the option still connects.
        try:
            s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        yield asyncio.core._io_queue.queue_write(s)  # connected (or failed: the first write says)
        if self._ctx is not None:
            self.sock = s
            s = self._ctx.wrap_socket(s, server_hostname=self.host, do_handshake_on_connect=False)
            s.setblocking(False)
            self.stream.s = s

    async def _exchange(self, method, path, body, headers, room, sink, max_body, fresh=False):
        # One request on the open connection: its answer, or None when the connection turns out closed
        # before the first answer byte (a kept-alive one the server closed meanwhile).
        partial = await self.send(method, path, body, headers, room, fresh)
        if self.start == self.end:  # (after a kept-alive answer's exact end, nothing is left unread)
            try:
                n = await self.fill()
            except OSError:
                if not partial:
                    raise
                n = 0  # the reset that broke off the body: no answer came before it
            if not n:
                return None
        status, hdrs, keep = await self._read_head()
        body = await self._read_body(method, status, hdrs, sink, max_body)
        if partial or not keep:
            self.close()
        elif self.start != self.end:
            raise HTTPError("bytes after the answer")
        return status, hdrs, body

    # --- the request ---------------------------------------------------------------------------

    async def send(self, method, path, body, headers, room, fresh):
        # The request's head and body, written and drained. Returns True when the server broke off a
        # streamed body (it may have answered early and closed: the answer is read all the same).
        pieces = size = None  # size: the Content-Length
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
        sent = 0
        if body is not None:
            sent = len(body) - room
            if size is None:
                size = sent
            elif sent > size:
                raise HTTPError(_BAD_LENGTH)
        # The head and the body (a streamed body's first piece) in one write (see `room`). Without room,
        # a small body is copied behind the head; a large one is written separately rather than copied
        # (heap). Stream.write sends at once what the socket takes and copies the rest: once it
        # returns, the body's buffer is free again.
        s = self.stream
        host = self.host if self.port in (80, 443) else "%s:%d" % (self.host, self.port)
        head = "%s %s%s HTTP/1.1\r\nHost: %s\r\n%s" % (method, self.prefix, path, host, headers)
        if size is not None:
            head += "Content-Length: %d\r\n" % size
        head = head.encode() + b"\r\n"
        n = len(head)
        if body is None:
            s.write(head)
        else:
            if room >= n:
                mv = memoryview(body)
                mv[room - n:room] = head
                s.write(mv[room - n:])
            elif len(body) - room <= _JOIN_MAX:
                s.write(head + bytes(memoryview(body)[room:]))
            else:
                s.write(head)
                s.write(memoryview(body)[room:])
            room = 0  # the first piece is out, its room used
        body = head = None
        await s.drain()
        if pieces is None:
            return False
        return await self.write(pieces, size, sent, room)

    async def write(self, body, size, n, room):
        # The rest of a streamed body (body: its generator; n: its bytes out so far; room: in front of the
        # next piece, when the first is still to go). Each next() refills the buffer, and its write follows in the same
        # turn; the drain keeps at most one piece in the stream's own buffer. A piece that would pass
        # the announced length is never written. Returns True when the server broke off the body.
        s = self.stream
        try:
            for piece in body:
                n += len(piece) - room
                if n > size:
                    break
                s.write(memoryview(piece)[room:] if room else piece)
                room = 0
                await s.drain()
        except OSError:
            # The server stopped reading: it may have answered early (a 401, a 413 for the
            # Content-Length) and closed, so its answer is read all the same; with none, it is a
            # kept-alive connection the server closed as the request went out (the first write went
            # into the socket, a later one met the reset), sent again on a fresh one by request().
            return True
        if n != size:  # request() closes the connection: the server sees a short body, stores nothing
            raise HTTPError(_BAD_LENGTH)
        return False

    # --- the answer ----------------------------------------------------------------------------

    async def fill(self):
        # More of the answer into the read buffer, behind the unread bytes (moved to its front first).
        # Returns how many came: 0 when the server closed the connection.
        b = self._buf
        p, e = self.start, self.end
        if p:
            mv = memoryview(b)
            mv[:e - p] = mv[p:e]
            e -= p
            self.start = 0
            self.end = e
        while True:
            n = await self.stream.readinto(memoryview(b)[e:])
            if n is not None:  # None: a TLS record not yet whole
                self.end = e + n
                return n

    async def readline(self, headers=False):
        # The next line of the answer (a status, header, trailer or chunk-size line), as bytes without
        # its CRLF. It must end in CRLF and hold no other CR nor control byte (HTAB allowed). Never more
        # than the read buffer is held: a longer line fails, except a header line (headers: True) other
        # than Content-Length and Transfer-Encoding, which is read through (up to _DROP_LINE_MAX bytes)
        # and dropped: None (a long ETag then is no ETag: the next pull downloads the whole answer).
        b = self._buf
        dropped = -1  # bytes of a long line dropped so far (-1: not dropping)
        while True:
            p, e = self.start, self.end
            i = b.find(b"\n", p, e)
            if i < 0 and e - p < len(b):  # no end of line yet, and room for more
                if not await self.fill():
                    raise HTTPError("connection closed mid-answer")
                continue
            if i >= 0:
                if i == p or b[i - 1] != 13:
                    raise HTTPError("malformed answer line")
                stop = i - 1
            else:  # the buffer is full of a line that goes on: its last byte may be its CRLF's CR
                stop = e - 1 if b[e - 1] == 13 else e
            # No control byte but HTAB (a bare CR, a NUL ...), nor DEL: min() runs in C, the byte loop
            # only for a line that has one below 32
            if b.find(b"\x7f", p, stop) >= 0 or p < stop and min(memoryview(b)[p:stop]) < 32:
                for c in memoryview(b)[p:stop]:
                    if c < 32 and c != 9 or c == 127:
                        raise HTTPError("malformed answer line")
            if i >= 0:
                self.start = i + 1
                return None if dropped >= 0 else bytes(memoryview(b)[p:stop])
            if dropped < 0:  # the line's start must be a header's name and its colon; not a framing one
                i = b.find(b":", p, stop)
                if not headers or i <= p or b.find(b" ", p, i) >= 0 or b.find(b"\t", p, i) >= 0 or \
                        0 <= _KEEP_HEADERS.find(b" " + bytes(memoryview(b)[p:i]).lower() + b" ") < _FRAMING_END:
                    raise HTTPError("answer line too long")
                dropped = 0
            dropped += stop - p
            if dropped > _DROP_LINE_MAX:
                raise HTTPError("answer line too long")
            self.start = stop

    async def _read_head(self):
        # The answer's status line and headers: (status, kept headers, keep-alive). 1xx answers are
        # passed over.
        for _ in range(_MAX_INTERIM + 1):
            # "HTTP/1.x NNN[ reason]" (x: 0 or 1, the status 100..599)
            line = await self.readline()
            if (len(line) < 12 or line[:7] != b"HTTP/1." or not 48 <= line[7] <= 49 or line[8] != 32
                    or (len(line) > 12 and line[12] != 32) or not line[9:12].isdigit() or not 49 <= line[9] <= 53):
                raise HTTPError("not an HTTP answer")
            status = int(line[9:12])
            keep = line[7] == 49  # HTTP/1.1
            hdrs = await self.readlines(True)
            if not 100 <= status < 200:
                break
            if status == 101:
                raise HTTPError("not an HTTP answer")  # switching protocols: nothing this client speaks
        else:
            raise HTTPError("not an HTTP answer")  # endless 1xx
        for t in hdrs.get("connection", "").lower().split(","):
            t = t.strip()
            if t == "close":
                keep = False
            elif t == "keep-alive":
                keep = True
        return status, hdrs, keep

    async def readlines(self, headers):
        # Header lines up to the blank line: a dict of the kept ones (headers: else none are kept, as for
        # a chunked body's trailer). Each is a token (RFC 9110) right before its colon: no space before
        # the colon, no folded continuation line. A kept header given twice must say the same (a
        # Content-Length twice with different values is two framings); Transfer-Encoding only once.
        hdrs = {}
        n = 0
        while True:
            line = await self.readline(True)
            if line is not None and not line:
                return hdrs
            n += 1
            if n > _MAX_HEADERS:
                raise HTTPError("too many headers")
            if line is None:
                continue  # long, not kept: checked and dropped by readline
            i = line.find(b":")
            if i <= 0:
                raise HTTPError("malformed header")
            for c in memoryview(line)[:i]:
                if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in _TCHAR):
                    raise HTTPError("malformed header")
            name = line[:i].lower()
            if headers and _KEEP_HEADERS.find(b" " + name + b" ") >= 0:
                name = name.decode()
                try:
                    v = line[len(name) + 1:].decode().strip()  # (SP and HTAB: no other control byte is left)
                except UnicodeError:
                    raise HTTPError("malformed header") from None
                old = hdrs.get(name)
                if old is not None and (old != v or name == "transfer-encoding"):
                    raise HTTPError("malformed header")
                hdrs[name] = v

    async def _read_body(self, method, status, headers, sink, max_body):
        # The answer's body (see request: collected, cut to its start, or to the sink), framed by its
        # Content-Length or chunks; a body other than 200's may run up to the close (the connection
        # is closed here then).
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if te is not None and cl is not None:  # two framings: which one the server meant is a guess
            raise HTTPError("malformed framing")
        body = bytearray()
        if method == "HEAD" or status in (204, 304):
            return body
        if status != 200:
            sink = None
        if te is not None:
            if te.lower() != "chunked":  # gzip, identity, a list: nothing this client decodes
                raise HTTPError("malformed framing")
            while True:
                # A chunk-size line: plain hex digits (no sign, 0x or underscore; spaces only before a ';'
                # that starts extensions), at most _SIZE_DIGITS of them
                line = await self.readline()
                i = line.find(b";")
                if i >= 0:
                    line = line[:i].rstrip()
                if not 0 < len(line) <= _SIZE_DIGITS:
                    raise HTTPError("malformed chunk")
                for c in line:
                    if not (48 <= c <= 57 or 65 <= c <= 70 or 97 <= c <= 102):
                        raise HTTPError("malformed chunk")
                size = int(line, 16)
                if not size:
                    break
                await self.read(size, body, sink, status, max_body)
                if await self.readline():
                    raise HTTPError("malformed chunk")
            await self.readlines(False)  # the trailer, up to the blank line
        elif cl is not None:
            if not cl.isdigit() or len(cl) > _LENGTH_DIGITS:  # plain digits only: no sign, list or hex
                raise HTTPError("malformed framing")
            size = int(cl)
            if status == 200 and sink is None and size > max_body:
                raise HTTPError("answer body too large")
            await self.read(size, body, sink, status, max_body)
        elif status == 200:
            # Only the close would end it, and a connection cut short would pass for the whole answer.
            raise HTTPError("malformed framing")
        else:
            await self.read(-1, body, sink, status, max_body)
            self.close()
        return body

    async def read(self, size, body, sink, status, max_body):
        # size bytes of the body (-1: up to the close) through the read buffer: to the sink, into body
        # (up to max_body), or for an answer other than 200 its first _ERR_BODY bytes (a proxy's error
        # page must not need a big block of heap) and the rest dropped.
        b = self._buf
        while size:
            if self.start == self.end and not await self.fill():
                if size < 0:
                    return
                raise HTTPError("connection closed mid-answer")
            p = self.start
            k = self.end - p
            if 0 < size < k:
                k = size
            if sink is not None:
                sink(b[p:p + k])
            elif status != 200:
                if len(body) < _ERR_BODY:
                    body.extend(memoryview(b)[p:p + min(k, _ERR_BODY - len(body))])
            elif len(body) + k > max_body:
                raise HTTPError("answer body too large")
            else:
                body.extend(memoryview(b)[p:p + k])
            self.start = p + k
            if size > 0:
                size -= k
