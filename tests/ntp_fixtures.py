"""NTP test parts: a real chronyd on loopback, and a scripted hostile SNTP server (CPython).

chronyd runs with -x (never touches the host clock), so what it serves is the host clock: the
reference the tests and the bench compare against. The hostile server answers each request in a
scripted way, one UDP port per behaviour, so a single micropython process can go through all of them.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

NTP_TO_UNIX_S = 2208988800


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chronyd() -> str:
    path = shutil.which("chronyd") or ("/usr/sbin/chronyd" if os.path.exists("/usr/sbin/chronyd") else None)
    if path is None:
        raise AssertionError("chronyd not found: run 'make setup' (Debian package chrony, in APT_PACKAGES)")
    return path


@contextmanager
def chrony(stratum: int = 8) -> Iterator[int]:
    """Run chronyd serving the host clock on 127.0.0.1:<port>; yields the port once it answers."""
    tmp = Path(tempfile.mkdtemp(prefix="chrony-"))
    tmp.chmod(0o777)  # chronyd drops root to its own user and writes its pid/drift files here
    port = free_udp_port()
    conf = tmp / "chrony.conf"
    conf.write_text(
        f"port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum {stratum}\n"
        f"pidfile {tmp}/chronyd.pid\ndriftfile {tmp}/drift\ncmdport 0\n")
    log = open(tmp / "chronyd.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([_chronyd(), "-x", "-d", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"chronyd exited {proc.returncode}: {(tmp / 'chronyd.log').read_text()}")
            try:
                reply = ntp_query("127.0.0.1", port, timeout=0.2)
                if reply[1] != 0 and reply[0] >> 6 != 3:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"chronyd does not answer: {(tmp / 'chronyd.log').read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def ntp_query(host: str, port: int, timeout: float = 1.0) -> bytes:
    """A plain blocking client request (used to wait until a server is up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        req = bytearray(48)
        req[0] = 0x23
        req[40:48] = os.urandom(8)
        s.sendto(req, (host, port))
        data, _ = s.recvfrom(512)
        if data[24:32] != req[40:48]:
            raise OSError("origin mismatch")
        return data


# --- the hostile server -------------------------------------------------------------------------

def ntp_ts(t: float) -> bytes:
    """A Unix time (float seconds) as a 64-bit NTP timestamp."""
    sec = int(t // 1) + NTP_TO_UNIX_S
    frac = int((t - int(t // 1)) * (1 << 32))
    return struct.pack(">II", sec & 0xFFFFFFFF, frac)


def good_reply(req: bytes, stratum: int = 2, offset_s: float = 0.0, now: float | None = None) -> bytearray:
    """A correct server reply to req, serving `now` (host time when None) + offset_s."""
    now = (time.time() if now is None else now) + offset_s
    r = bytearray(48)
    r[0] = (0 << 6) | (4 << 3) | 4
    r[1] = stratum
    r[2] = 6
    r[3] = 0xEC  # precision 2^-20
    r[4:8] = struct.pack(">i", 1 << 10)  # root delay ~15 ms
    r[8:12] = struct.pack(">I", 1 << 10)  # root dispersion ~15 ms
    r[12:16] = b"GPS\0" if stratum == 1 else b"\x7f\x00\x00\x01"
    r[16:24] = ntp_ts(now - 10)
    r[24:32] = req[40:48]
    r[32:40] = ntp_ts(now)
    r[40:48] = ntp_ts(now)
    return r


Send = Callable[[bytes], None]
# A behaviour gets the request and a send function (replying from the listening socket to the
# client) plus the server object for odd paths (replying from another socket).
Behaviour = Callable[[bytes, tuple, Send, "HostileServer"], None]


def _patched(**fields: object) -> Behaviour:
    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        r = good_reply(req, now=srv.now())
        for k, v in fields.items():
            if k == "li":
                r[0] = (int(v) << 6) | (r[0] & 0x3F)  # type: ignore[call-overload]
            elif k == "vn":
                r[0] = (r[0] & 0xC7) | (int(v) << 3)  # type: ignore[call-overload]
            elif k == "mode":
                r[0] = (r[0] & 0xF8) | int(v)  # type: ignore[call-overload]
            elif k == "stratum":
                r[1] = int(v)  # type: ignore[call-overload]
            elif k == "root_delay":
                r[4:8] = struct.pack(">i", v)
            elif k == "root_disp":
                r[8:12] = struct.pack(">I", v)
            elif k in ("ref", "origin", "receive", "transmit"):
                off = {"ref": 16, "origin": 24, "receive": 32, "transmit": 40}[k]
                r[off:off + 8] = v if v != "echo" else req[40:48]  # type: ignore[assignment]
        send(bytes(r))
    return act


def _kod(code: bytes, echo: bool) -> Behaviour:
    # ntpsec's rate-limit kiss: LI 3, stratum 0, refid RATE, and the client's transmit timestamp
    # copied into origin, receive and transmit (ntptime took that for the time and landed in 2036).
    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        r = bytearray(48)
        r[0] = (3 << 6) | (4 << 3) | 4
        r[1] = 0
        r[12:16] = code
        r[24:32] = req[40:48]
        if echo:
            r[32:40] = req[40:48]
            r[40:48] = req[40:48]
        send(bytes(r))
    return act


def _length(n: int) -> Behaviour:
    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        r = good_reply(req, now=srv.now())
        send(bytes(r[:n]) if n <= 48 else bytes(r) + b"\0" * (n - 48))
    return act


def _from_other_port(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(good_reply(req, now=srv.now()), addr)


def _from_other_addr(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", srv.port_of_current))  # same port, another loopback address
        s.sendto(good_reply(req, now=srv.now()), addr)


def _silent(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
    return None


def _flood_then_good(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
    # forged replies first (wrong origin, wrong source port, junk), then the real one
    for _ in range(5):
        bad = good_reply(req, offset_s=3600, now=srv.now())
        bad[24:32] = os.urandom(8)
        send(bytes(bad))
    _from_other_port_lying(req, addr, srv.now())
    send(b"\x00" * 13)
    send(bytes(good_reply(req, now=srv.now())))


def _from_other_port_lying(req: bytes, addr: tuple, now: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(good_reply(req, offset_s=-3600, now=now), addr)


def _repeat_xmt(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
    # the first answer is fine; later ones repeat its transmit timestamp (a replay)
    r = good_reply(req, now=srv.now())
    if srv.count_of_current > 1:
        r[40:48] = srv.memo.setdefault("xmt", bytes(r[40:48]))
        r[32:40] = r[40:48]
    else:
        srv.memo["xmt"] = bytes(r[40:48])
    send(bytes(r))


def _late(delay_s: float) -> Behaviour:
    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        threading.Timer(delay_s, lambda: send(bytes(good_reply(req, now=srv.now())))).start()
    return act


def _rec_after_xmt(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
    r = good_reply(req, now=srv.now())
    r[32:40] = ntp_ts(srv.now() + 0.5)
    send(bytes(r))


def _liar(offset_s: float) -> Behaviour:
    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        send(bytes(good_reply(req, offset_s=offset_s, now=srv.now())))
    return act


def _good(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
    send(bytes(good_reply(req, now=srv.now())))


# --- modes for selection, step discipline, polling policy and the receive loop --------------------
# Each counts requests per port (HostileServer.count_of_current: 1 for the first request).

def tight_liar(offset_s: float) -> Behaviour:
    """A falseticker that claims to be nearly perfect: offset_s off, root delay and dispersion 0."""
    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        r = good_reply(req, offset_s=offset_s, now=srv.now())
        r[4:12] = b"\0" * 8
        send(bytes(r))
    return act


def jumper(first: int, offset_s: float, count: int | None = None) -> Behaviour:
    """Honest for `first` requests, then offset_s off for `count` requests (None: for good), then honest."""
    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        n = srv.count_of_current - first
        off = offset_s if n > 0 and (count is None or n <= count) else 0.0
        send(bytes(good_reply(req, offset_s=off, now=srv.now())))
    return act


def rate_after(first: int) -> Behaviour:
    """Honest for `first` requests, then a RATE kiss (ntpsec's form) to every later one."""
    kiss = _kod(b"RATE", echo=True)

    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        if srv.count_of_current > first:
            kiss(req, addr, send, srv)
        else:
            send(bytes(good_reply(req, now=srv.now())))
    return act


def silent_between(first: int, last: int) -> Behaviour:
    """Honest, except silent for requests first..last (an outage)."""
    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        if not first <= srv.count_of_current <= last:
            send(bytes(good_reply(req, now=srv.now())))
    return act


def flooder(seconds: float) -> Behaviour:
    """Answers each request with a stream of wrong-origin replies from the right address and port,
    as fast as it can for `seconds`, and never with the real one. (On this host the unix port reads
    faster than one Python thread sends: the stream has gaps. A board reads far slower; test_sntp's
    never-dry socket covers a stream without gaps.)"""
    def act(req: bytes, addr: tuple, send: Send, srv: HostileServer) -> None:
        sock = srv.current_sock

        def stream() -> None:
            bad = good_reply(req, now=srv.now())
            bad[24:32] = b"\x5a" * 8
            end = time.monotonic() + seconds
            while time.monotonic() < end and not srv.stopping:
                try:
                    sock.sendto(bytes(bad), addr)
                    srv.flooded += 1
                except OSError:
                    time.sleep(0.0005)  # the socket buffer is full: let the client read

        t = threading.Thread(target=stream, daemon=True)
        srv.threads.append(t)
        t.start()
    return act


# name -> (behaviour, the client's expected verdict: "ok" or the Reject reason)
HOSTILE: dict[str, tuple[Behaviour, str]] = {
    "good": (_good, "ok"),
    "flood_then_good": (_flood_then_good, "ok"),
    "short": (_length(47), "length"),
    "odd_length": (_length(50), "length"),
    "too_long": (_length(400), "length"),
    "mode_client": (_patched(mode=3), "mode"),
    "mode_broadcast": (_patched(mode=5), "mode"),
    "version_2": (_patched(vn=2), "version"),
    "version_7": (_patched(vn=7), "version"),
    "source_port": (_from_other_port, "source"),
    "source_addr": (_from_other_addr, "source"),
    "origin_random": (_patched(origin=b"\x12\x34\x56\x78\x9a\xbc\xde\xf0"), "origin"),
    "origin_zero": (_patched(origin=b"\0" * 8), "origin"),
    "li_alarm": (_patched(li=3), "unsynchronized"),
    "stratum_16": (_patched(stratum=16), "stratum"),
    "stratum_200": (_patched(stratum=200), "stratum"),
    "xmt_zero": (_patched(transmit=b"\0" * 8), "xmt-zero"),
    "xmt_echo": (_patched(transmit="echo"), "xmt-echo"),
    "rec_zero": (_patched(receive=b"\0" * 8), "rec-zero"),
    "ref_zero": (_patched(ref=b"\0" * 8), "ref-zero"),
    "rec_after_xmt": (_rec_after_xmt, "rec-xmt"),
    "root_delay_huge": (_patched(root_delay=5 << 16), "root"),
    "root_delay_negative": (_patched(root_delay=-(1 << 16)), "root"),
    "root_disp_huge": (_patched(root_disp=2 << 16), "root"),
    "silent": (_silent, "timeout"),
    "late": (_late(0.6), "timeout"),
    "kod_rate_ntpsec": (_kod(b"RATE", echo=True), "kod-RATE"),
    "kod_rate": (_kod(b"RATE", echo=False), "kod-RATE"),
    "kod_deny": (_kod(b"DENY", echo=True), "kod-DENY"),
    "kod_rstr": (_kod(b"RSTR", echo=False), "kod-RSTR"),
    "kod_other": (_kod(b"XYZW", echo=True), "kod-XYZW"),
}


class HostileServer:
    """One UDP port per behaviour on 127.0.0.1, served from one thread. ports[name] -> port.

    requests[name] counts the requests each port got and times[name] lists when (in the time it
    serves). control_port takes "T <ms>" datagrams (answered "ok"): from then on every behaviour
    serves host time + ms, so a client under simulated time (tests/sntp_mp.py) and these servers
    agree on what time it is."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.ports: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}
        self.memo: dict[str, bytes] = {}
        self.port_of_current = 0
        self.count_of_current = 0
        self.current_sock: socket.socket | None = None
        self.skew_s = 0.0
        self.flooded = 0
        self.stopping = False
        self.threads: list[threading.Thread] = []
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        for name in [*behaviours, None]:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ, name)
            self._socks.append(s)
            if name is None:
                self.control_port = s.getsockname()[1]
            else:
                self.ports[name] = s.getsockname()[1]
                self.requests[name] = 0
                self.times[name] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def now(self) -> float:
        """The time served: the host's, plus what the client skipped under simulated time."""
        return time.time() + self.skew_s

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self._stop.set()
        self._thread.join(5)
        for t in self.threads:
            t.join(5)
        for s in self._socks:
            s.close()
        self._sel.close()

    def _control(self, sock: socket.socket) -> None:
        try:
            msg, addr = sock.recvfrom(64)
        except OSError:
            return
        words = msg.split()
        if len(words) == 2 and words[0] == b"T":
            self.skew_s = int(words[1]) / 1000
            sock.sendto(b"ok", addr)

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                name: str | None = key.data
                if name is None:
                    self._control(sock)
                    continue
                try:
                    req, addr = sock.recvfrom(512)
                except OSError:
                    continue
                self.requests[name] += 1
                self.times[name].append(self.now())
                self.port_of_current = self.ports[name]
                self.count_of_current = self.requests[name]
                self.current_sock = sock
                if len(req) < 48:
                    continue

                def send(data: bytes, sock: socket.socket = sock, addr: tuple = addr) -> None:
                    try:
                        sock.sendto(data, addr)
                    except OSError:
                        pass

                self.behaviours[name](req, addr, send, self)


BEHAVIOURS_EXTRA: dict[str, Behaviour] = {
    "repeat_xmt": _repeat_xmt,
    "liar_plus_hour": _liar(3600.0),
    "liar_2036": _liar(2085978496.0 - time.time()),  # a 2036-02-07 answer: what ntptime fell for
    "good_b": _good,
    "good_c": _good,
}
