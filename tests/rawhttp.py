"""A raw-socket HTTP/1.1 client for the endpoint tests: bytes sent exactly as written (malformed ones
too), answers parsed by hand (Content-Length, chunked, or up to the close), and how the server ends a
connection (its close, a reset, or nothing before a deadline) observed and timed. An SSE client on
the same footing. No http.client: it would refuse to send, or to read, what these tests need."""

from __future__ import annotations

import json
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    names: list[str] = field(default_factory=list)  # the header names as they came, in order

    def json(self) -> Any:
        return json.loads(self.body)


def parse_head(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, the bytes after the head) of an answer's bytes."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def connect(port: int, source: str | None = None, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the terminal; source: the local address to send from (any 127.x.y.z on
    Linux), so that a test's failed logins are counted against an address of its own."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((HOST, port))
    except OSError:
        s.close()
        raise
    return s


def exchange(port: int, data: bytes, wait: float = 5.0, source: str | None = None) -> bytes:
    """Bytes sent on a connection of their own; what came back until the server closed it, or until
    nothing more came for a second (after the first bytes) or `wait` seconds."""
    with connect(port, source, wait) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            s.settimeout(1.0 if out else max(0.05, deadline - time.monotonic()))
            try:
                got = s.recv(65536)
            except TimeoutError:
                if out:
                    break
                continue
            except ConnectionResetError:
                break
            if not got:
                break
            out += got
        return out


class Conn:
    """One connection, driven step by step: send, read an answer, see how and when it ends."""

    def __init__(self, port: int, source: str | None = None, timeout: float = 10.0) -> None:
        self.sock = connect(port, source, timeout)
        self.buf = b""
        self.timeout = timeout
        self.chunk = 65536  # bytes taken at a time, and a pause before each: a slow reader sets them
        self.pause = 0.0

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self, deadline: float) -> bool:
        # More bytes into buf; False at the server's close (EOF, or a reset after what it sent).
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"nothing more within the time; so far {self.buf[-200:]!r}")
        if self.pause:
            time.sleep(self.pause)
        self.sock.settimeout(left)
        try:
            got = self.sock.recv(self.chunk)
        except ConnectionResetError:
            return False
        self.buf += got
        return bool(got)

    def _take(self, end: bytes, deadline: float) -> bytes:
        while end not in self.buf:
            if not self._more(deadline):
                raise EOFError(f"closed before {end!r}: {self.buf[-200:]!r}")
        i = self.buf.index(end) + len(end)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exactly(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if not self._more(deadline):
                raise EOFError(f"closed {n - len(self.buf)} bytes short")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def answer(self, timeout: float | None = None) -> Answer:
        """The next answer, whole (its body de-chunked); EOFError when the server closes first."""
        deadline = time.monotonic() + (timeout or self.timeout)
        head = self._take(b"\r\n\r\n", deadline)
        lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        names = [ln.partition(":")[0].strip() for ln in lines[1:]]
        headers = {k.lower(): ln.partition(":")[2].strip() for k, ln in zip(names, lines[1:], strict=True)}
        if "content-length" in headers:
            body = self._exactly(int(headers["content-length"]), deadline)
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                n = int(self._take(b"\r\n", deadline)[:-2], 16)
                body += self._exactly(n, deadline)
                assert self._exactly(2, deadline) == b"\r\n", "a chunk not followed by CRLF"
                if not n:
                    break
        else:  # up to the close
            while self._more(deadline):
                pass
            body, self.buf = self.buf, b""
        return Answer(status, headers, body, names)

    def request(self, method: str, path: str, token: str | None = None, headers: str = "",
                timeout: float | None = None) -> Answer:
        """A well-formed request (path from /api/v1 on), then its answer."""
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.send(f"{method} /api/v1{path} HTTP/1.1\r\nHost: t\r\n{auth}{headers}\r\n".encode())
        return self.answer(timeout)

    def ends(self, timeout: float) -> float | None:
        """Seconds until the server ends the connection (close or reset; what it sends meanwhile is
        kept in buf), or None when it is still open after timeout seconds."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            while self._more(deadline):
                pass
        except TimeoutError:
            return None
        except OSError:  # a reset seen on a send's heels, or the like: ended all the same
            pass
        return time.monotonic() - t0

    def reset(self) -> None:
        """Close with a reset (SO_LINGER 0): what a client that crashes or gives up mid-answer does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


class EventStream:
    """An SSE client on a raw socket (the stream ends only when the client closes it, or the server
    drops it)."""

    def __init__(self, port: int, token: str, query: str = "") -> None:
        self.sock = connect(port)
        self.sock.sendall(f"GET /api/v1/events{query} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
                          f"Accept: text/event-stream\r\n\r\n".encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n", 10)
        self.status, self.headers, _ = parse_head(head)
        self.head = head

    def _until(self, end: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while end not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing ended by {end!r} within {timeout} s: {self.buf[-300:]!r}")
            self.sock.settimeout(left)
            got = self.sock.recv(4096)
            if not got:
                raise EOFError(f"the stream closed: {self.buf[-300:]!r}")
            self.buf += got
        i = self.buf.index(end) + len(end)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def block(self, timeout: float = 5.0) -> str:
        """The next block (an event or a comment), without its blank line."""
        return self._until(b"\n\n", timeout).decode()[:-2]

    def event(self, kind: str, timeout: float = 5.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            fields: dict[str, str] = {}
            for line in self.block(max(0.01, deadline - time.monotonic())).split("\n"):
                if not line.startswith(":"):
                    k, _, v = line.partition(": ")
                    fields[k] = v
            if fields.get("event") == kind:
                return fields

    def close(self) -> None:
        self.sock.close()
