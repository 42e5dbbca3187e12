# Small HTTP/1.1 client for the uplink: verified TLS over asyncio streams, keep-alive, bounded answers.
#
# MicroPython's frozen `requests` never verifies certificates and blocks the loop, so the uplink
# speaks HTTP itself. TLS: an SSLContext(PROTOCOL_TLS_CLIENT) starts with verify_mode CERT_NONE on
# MicroPython, so CERT_REQUIRED is set explicitly, the CA is loaded from config (the unix port's
# mbedTLS takes DER through cadata; PEM is converted here) and the host name is checked through
# server_hostname. Plain HTTP is used only when the URL says http://.

import asyncio
import binascii
from micropython import const

_MAX_HEADERS = const(32)  # header lines per answer; more is a protocol error
_JOIN_MAX = const(1024)  # bodies without head room up to this size are copied behind the head (one write)
_CHUNK = const(512)  # bytes per read of a streamed answer body


class HTTPError(OSError):
    """The exchange failed (connection, TLS, timeout, malformed or oversized answer)."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status  # int
        self.headers = headers  # dict, lower-case names
        self.body = body  # bytes

    def header(self, name, default=None):
        return self.headers.get(name, default)


def pem_to_der(data):
    """DER bytes of the first certificate in PEM `data` (bytes); DER input is returned as is."""
    start = data.find(b"-----BEGIN")
    if start < 0:
        return data
    start = data.find(b"\n", start) + 1
    end = data.find(b"-----END", start)
    if start <= 0 or end < 0:
        raise ValueError("bad PEM certificate")
    return binascii.a2b_base64(data[start:end].replace(b"\r", b"").replace(b"\n", b""))


def split_url(url):
    """(scheme, host, port, path prefix) of an http:// or https:// URL."""
    if url.startswith("https://"):
        scheme, rest, port = "https", url[8:], 443
    elif url.startswith("http://"):
        scheme, rest, port = "http", url[7:], 80
    else:
        raise ValueError("URL must start with https:// (or http:// for a lab)")
    i = rest.find("/")
    hostport, prefix = (rest, "") if i < 0 else (rest[:i], rest[i:].rstrip("/"))
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
    return scheme, host, port, prefix


class Client:
    """One origin (scheme, host, port), at most one open connection, reused while the server allows.

    Tunables (instance attributes, set after construction):
      max_body            bytes of an answer body; larger -> HTTPError
      max_line            bytes of a status or header line
      connect_timeout_ms  TCP connect plus TLS handshake
      timeout_ms          whole request: send plus complete answer (also bounds a trickling server)
    Counters: connections (opened; = TLS handshakes over https), requests.
    """

    max_body = 16384
    max_line = 512
    connect_timeout_ms = 10000
    timeout_ms = 15000

    def __init__(self, url, cadata=None, cafile=None):
        self.scheme, self.host, self.port, self.prefix = split_url(url)
        self._ctx = None
        if self.scheme == "https":
            if cadata is None and cafile is not None:
                with open(cafile, "rb") as f:
                    cadata = f.read()
            if not cadata:
                raise ValueError("https needs a CA (cadata or cafile)")
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED  # MicroPython starts with CERT_NONE
            ctx.load_verify_locations(cadata=pem_to_der(cadata))
            self._ctx = ctx
        self._r = None
        self._w = None
        self.connections = 0
        self.requests = 0
        self._hosthdr = self.host if self.port in (80, 443) else "%s:%d" % (self.host, self.port)

    @property
    def connected(self):
        return self._w is not None

    def close(self):
        """Close the connection (idempotent); the next request opens a new one."""
        w = self._w
        self._r = self._w = None
        if w is not None:
            try:
                w.close()
            except Exception:
                pass

    async def _connect(self):
        self.connections += 1
        if self._ctx is not None:
            coro = asyncio.open_connection(self.host, self.port, ssl=self._ctx, server_hostname=self.host)
        else:
            coro = asyncio.open_connection(self.host, self.port)
        self._r, self._w = await asyncio.wait_for_ms(coro, self.connect_timeout_ms)

    async def request(self, method, path, body=None, headers=None, content_type="application/json", room=0,
                      sink=None):
        """Send one request and return its Response; raises HTTPError (the connection is then closed).

        room: the first `room` bytes of `body` are scratch space, not body: the head is written into
          their end so that head and body leave in one write (one TLS record, one TCP segment). Two
          writes would let Nagle hold the second until the server's delayed ACK, about 40 ms.
        sink: a function called with each piece (bytes, up to 512) of a 200
          answer's body instead of collecting it: a large answer (a roster) never sits in RAM whole.
          It must not keep the piece; an exception from it aborts the exchange (connection closed).
        """
        self.requests += 1
        reused = self._w is not None
        try:
            if not reused:
                await self._connect()
            try:
                return await asyncio.wait_for_ms(
                    self._exchange(method, path, body, headers, content_type, reused, room, sink), self.timeout_ms)
            except _Stale:
                # The server had closed the idle kept-alive connection (no answer byte came back): once
                # more on a fresh one. Safe because the API's requests are idempotent.
                self.close()
                await self._connect()
                return await asyncio.wait_for_ms(
                    self._exchange(method, path, body, headers, content_type, False, room, sink), self.timeout_ms)
        except HTTPError:
            self.close()
            raise
        except asyncio.TimeoutError:
            self.close()
            raise HTTPError("timeout")
        except (OSError, EOFError, ValueError, IndexError) as e:
            self.close()
            raise HTTPError("%s: %s" % (type(e).__name__, e))
        except BaseException:  # cancellation, a sink's error: never leave a half-used connection behind
            self.close()
            raise

    async def _exchange(self, method, path, body, headers, content_type, reused, room, sink):
        w, r = self._w, self._r
        head = "%s %s%s HTTP/1.1\r\nHost: %s\r\n" % (method, self.prefix, path, self._hosthdr)
        if body is not None:
            head += "Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body) - room)
        if headers:
            for k in headers:
                head += "%s: %s\r\n" % (k, headers[k])
        head = head.encode() + b"\r\n"
        # One write per request (see `room`). Without room, a small body is copied behind the head; a
        # large one is written separately rather than copied (heap).
        n = len(head)
        if body is None:
            w.write(head)
        elif room >= n:
            mv = memoryview(body)
            mv[room - n:room] = head
            w.write(mv[room - n:])
        elif len(body) - room <= _JOIN_MAX:
            w.write(head + bytes(memoryview(body)[room:]))
        else:
            w.write(head)
            w.write(memoryview(body)[room:])
        await w.drain()
        line = await r.readline()
        if not line:
            raise _Stale() if reused else HTTPError("connection closed before the answer")
        status, keep = self._status(line)
        hdrs = {}
        n = 0
        while True:
            line = await r.readline()
            if not line:
                raise HTTPError("connection closed in the headers")
            if len(line) > self.max_line:
                raise HTTPError("header line too long")
            if line == b"\r\n" or line == b"\n":
                break
            n += 1
            if n > _MAX_HEADERS:
                raise HTTPError("too many headers")
            i = line.find(b":")
            if i <= 0:
                raise HTTPError("malformed header")
            hdrs[line[:i].decode().strip().lower()] = line[i + 1:].decode().strip()
        conn = hdrs.get("connection", "").lower()
        if conn == "close":
            keep = False
        elif conn == "keep-alive":
            keep = True
        out = _Body(self.max_body, sink if status == 200 else None)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            await self._chunked(r, out)
        elif "content-length" in hdrs:
            size = int(hdrs["content-length"])
            if size < 0 or (out.sink is None and size > self.max_body):
                raise HTTPError("answer body too large")
            await self._exactly(r, size, out)
        else:
            await self._until_close(r, out)
            keep = False
        if not keep:
            self.close()
        return Response(status, hdrs, out.value())

    def _status(self, line):
        if len(line) > self.max_line or not line.startswith(b"HTTP/1."):
            raise HTTPError("not an HTTP answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or len(parts[1]) != 3:
            raise HTTPError("malformed status line")
        return int(parts[1]), parts[0] == b"HTTP/1.1"

    async def _exactly(self, r, size, out):
        while size > 0:
            part = await r.read(min(size, _CHUNK))
            if not part:
                raise HTTPError("connection closed in the body")
            out.add(part)
            size -= len(part)

    async def _chunked(self, r, out):
        while True:
            line = await r.readline()
            if not line:
                raise HTTPError("connection closed in a chunk")
            if len(line) > self.max_line:
                raise HTTPError("chunk line too long")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while True:  # trailers, up to the blank line
                    line = await r.readline()
                    if not line or line in (b"\r\n", b"\n"):
                        return
            await self._exactly(r, size, out)
            await r.readexactly(2)  # CRLF after the chunk

    async def _until_close(self, r, out):
        while True:
            part = await r.read(_CHUNK)
            if not part:
                return
            out.add(part)


class _Body:
    # Collects an answer body up to max_body, or hands each piece to a sink (streaming).
    def __init__(self, max_body, sink):
        self.max_body = max_body
        self.sink = sink
        self.buf = None

    def add(self, part):
        if self.sink is not None:
            self.sink(part)
            return
        if self.buf is None:
            self.buf = bytearray()
        if len(self.buf) + len(part) > self.max_body:
            raise HTTPError("answer body too large")
        self.buf.extend(part)

    def value(self):
        return b"" if self.buf is None else bytes(self.buf)


class _Stale(Exception):
    pass
