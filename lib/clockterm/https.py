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
_JOIN_MAX = const(2048)  # bodies up to this size are sent in one write with the head


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

    async def request(self, method, path, body=None, headers=None, content_type="application/json"):
        """Send one request and return its Response; raises HTTPError (the connection is then closed)."""
        self.requests += 1
        reused = self._w is not None
        try:
            if not reused:
                await self._connect()
            try:
                return await asyncio.wait_for_ms(self._exchange(method, path, body, headers, content_type, reused),
                                                 self.timeout_ms)
            except _Stale:
                # The server had closed the idle kept-alive connection (no answer byte came back): once
                # more on a fresh one. Safe because the API's requests are idempotent.
                self.close()
                await self._connect()
                return await asyncio.wait_for_ms(self._exchange(method, path, body, headers, content_type, False),
                                                 self.timeout_ms)
        except HTTPError:
            self.close()
            raise
        except asyncio.TimeoutError:
            self.close()
            raise HTTPError("timeout")
        except (OSError, EOFError, ValueError, IndexError) as e:
            self.close()
            raise HTTPError("%s: %s" % (type(e).__name__, e))
        except BaseException:  # cancellation: never leave a half-used connection behind
            self.close()
            raise

    async def _exchange(self, method, path, body, headers, content_type, reused):
        w, r = self._w, self._r
        head = "%s %s%s HTTP/1.1\r\nHost: %s\r\n" % (method, self.prefix, path, self._hosthdr)
        if body is not None:
            head += "Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body))
        if headers:
            for k in headers:
                head += "%s: %s\r\n" % (k, headers[k])
        head = head.encode() + b"\r\n"
        # A small body goes in the same write as the head: a second small write would sit behind
        # Nagle until the server's delayed ACK (about 40 ms per request on Linux). Large bodies are
        # written separately rather than copied (heap).
        if body is not None and len(body) <= _JOIN_MAX:
            w.write(head + body)
        else:
            w.write(head)
            if body is not None:
                w.write(body)
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
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            data = await self._chunked(r)
        elif "content-length" in hdrs:
            size = int(hdrs["content-length"])
            if size < 0 or size > self.max_body:
                raise HTTPError("answer body too large")
            data = await r.readexactly(size) if size else b""
            if len(data) != size:
                raise HTTPError("connection closed in the body")
        else:
            data = await self._until_close(r)
            keep = False
        if not keep:
            self.close()
        return Response(status, hdrs, data)

    def _status(self, line):
        if len(line) > self.max_line or not line.startswith(b"HTTP/1."):
            raise HTTPError("not an HTTP answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or len(parts[1]) != 3:
            raise HTTPError("malformed status line")
        return int(parts[1]), parts[0] == b"HTTP/1.1"

    async def _chunked(self, r):
        buf = bytearray()
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
                        return bytes(buf)
            if len(buf) + size > self.max_body:
                raise HTTPError("answer body too large")
            part = await r.readexactly(size)
            if len(part) != size:
                raise HTTPError("connection closed in a chunk")
            buf.extend(part)
            await r.readexactly(2)  # CRLF after the chunk

    async def _until_close(self, r):
        buf = bytearray()
        while True:
            part = await r.read(512)
            if not part:
                return bytes(buf)
            if len(buf) + len(part) > self.max_body:
                raise HTTPError("answer body too large")
            buf.extend(part)


class _Stale(Exception):
    pass
