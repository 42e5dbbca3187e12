"""A loopback server that answers each connection with bytes a test gives: for the firmware's HTTP
client and uplink facing answers no real server would send."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator


def read_request(conn: socket.socket, data: bytes) -> tuple[bytes, bytes] | None:
    """The next request's head (without its blank line) and what came after its body (the body read
    by its Content-Length); None when the connection closed first. data: bytes already read."""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    n = int(m[1]) if m else 0
    while len(rest) < n:
        more = conn.recv(65536)
        if not more:
            return None
        rest += more
    return head, rest[n:]


@contextlib.contextmanager
def answering(answers: list[bytes], aside: Callable[[bytes], bytes | None] | None = None) -> Iterator[int]:
    """A server on 127.0.0.1 (its port is yielded), on a thread: the i-th connection's request is read
    whole and answered with answers[i], then the server closes the connection. aside(head) may answer
    a request itself (say an uplink's token request) on the same connection without using up an
    answer; it returns None for the others."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(20)

    def serve() -> None:
        i = 0
        while i < len(answers):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                try:
                    while True:
                        got = read_request(conn, data)
                        if got is None:
                            break  # closed without a request (a kept-alive connection found closed)
                        head, data = got
                        own = aside(head) if aside else None
                        if own is not None:
                            conn.sendall(own)
                            continue
                        conn.sendall(answers[i])
                        i += 1
                        conn.shutdown(socket.SHUT_WR)
                        conn.recv(1)  # until the client closes its end
                        break
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()
        t.join(10)
