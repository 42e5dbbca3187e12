"""A small SNTP server serving the host clock, for `clockterm sim` (tests use a real chrony)."""

from __future__ import annotations

import socket
import struct
import threading
import time

NTP_DELTA = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def ntp_timestamp(ns: int) -> int:
    sec, frac_ns = divmod(ns, 1_000_000_000)
    return ((sec + NTP_DELTA) << 32) | ((frac_ns << 32) // 1_000_000_000)


class SntpServer:
    """Answers mode-3 requests with mode 4, stratum 2, the host's time with ns resolution."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> SntpServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        ref = ntp_timestamp(time.time_ns())
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            rx = ntp_timestamp(time.time_ns())
            if len(data) < 48 or data[0] & 7 != 3:
                continue  # only client requests get an answer
            self.requests += 1
            version = (data[0] >> 3) & 7
            origin = data[40:48]
            head = struct.pack("!BBbb4s4s4s", (version << 3) | 4, 2, 6, -20,
                               struct.pack("!I", 1 << 8), struct.pack("!I", 1 << 8), b"LOCL")
            body = struct.pack("!Q", ref) + origin + struct.pack("!Q", rx)
            tx = struct.pack("!Q", ntp_timestamp(time.time_ns()))
            self.sock.sendto(head + body + tx, addr)

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
