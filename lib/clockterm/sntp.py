# SNTP client (RFC 4330, with the client checks of RFC 5905) and the supervisor task that keeps the Clock synced.
#
# Why not ntptime: it keeps whole seconds and believes any reply. Here every request carries a
# random transmit timestamp (a nonce the reply must echo as its origin), the reply must come from the
# address and port we asked, and every field that could make a reply useless or dangerous is checked
# before any timestamp is used. Kiss-o'-death codes are honoured: RATE lengthens that server's poll,
# DENY and RSTR drop it. The round-trip is measured with ticks_us, so the estimate of true UTC at
# the moment of receipt (server transmit + delay/2) does not depend on the local clock at all.
#
# Non-blocking: the socket is set non-blocking and the task waits on asyncio's poller (the same
# mechanism asyncio streams use), which works on the unix port and the ESP32 alike.

import asyncio
import os
import random
import struct
import time
from micropython import const

from clockterm import log

try:
    import socket as _socket  # the one place the socket module is chosen; pass another in to replace it
except ImportError:  # pragma: no cover
    _socket = None

MIN_POLL_S = 16  # s: never poll one server more often (RFC 4330 / pool.ntp.org etiquette); tests may lower it
_MODE_CLIENT = const(3)
_MODE_SERVER = const(4)
_VERSION = const(4)
_PKT = const(48)
_MAX_PKT = const(68 + 48)  # 48 bytes + a MAC (up to 68) or extension fields we ignore
_MAX_ROOT_US = const(1500000)  # root delay/2 + root dispersion above 1.5 s: useless (RFC 5905 MAXDIST)
_MAX_POLL_S = const(131072)  # 36 h: the longest poll a RATE kiss can push a server to
_ADDRS_PER_NAME = const(4)  # pool names resolve to several servers; take at most this many
# Supervisor tunables (const: no RAM for their names; first_retry_ms and first_retry_max_ms stay
# attributes because tests shorten them).
_RETRY_MS = const(32000)  # ms: first retry after a failure once synced; doubles up to interval_s
_RESOLVE_EVERY_MS = const(3600000)  # ms: re-resolve names (pools rotate) this often
_SERVERS_PER_ROUND = const(3)  # at most this many servers polled per sync
_SAVE_EVERY_MS = const(3600000)  # ms: refresh the clock's stored time at least this often (flash wear)
_AGREE_MS = const(128)  # ms: answers further apart than this (plus their error bounds) disagree


class Reject(Exception):
    """A reply (or its absence) that must not be used. .reason is a short code."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class KoD(Reject):
    """A kiss-o'-death: .code is RATE, DENY, RSTR or another four-letter code."""

    def __init__(self, code):
        super().__init__("kod-" + code)
        self.code = code


class Sample:
    """One good exchange. utc_us is true UTC at ticks_ms reading t_ms (the moment of receipt)."""

    def __init__(self, server, t_ms, utc_us, delay_us, offset_us, err_us, stratum):
        self.server = server  # Server it came from
        self.t_ms = t_ms  # ticks_ms at receipt
        self.utc_us = utc_us  # server transmit + delay/2: true UTC at t_ms
        self.delay_us = delay_us  # round trip minus server processing
        self.offset_us = offset_us  # server - local clock (time.time_ns); None where no time_ns
        self.err_us = err_us  # error bound: delay/2 + root delay/2 + root dispersion
        self.stratum = stratum


class Server:
    """A server address and what we learned about it."""

    def __init__(self, name, addr):
        self.name = name
        self.addr = addr
        self.key = _akey(addr)
        self.min_poll_s = MIN_POLL_S
        self.last_poll = None  # ticks_ms of the last burst start
        self.last_xmt = None  # transmit timestamp of its last reply (replay check)
        self.dropped = None  # DENY/RSTR code once the server told us to go away
        self.polls = 0
        self.good = 0
        self.last_reject = None
        self.delay_ms = None  # of its last good reply
        self.offset_ms = None
        self.stratum = None

    def due_in_ms(self, now):
        if self.last_poll is None:
            return 0
        d = self.min_poll_s * 1000 - time.ticks_diff(now, self.last_poll)
        return d if d > 0 else 0

    def status(self):
        return {"name": self.name, "addr": _astr(self.addr), "polls": self.polls, "good": self.good,
                "last_reject": self.last_reject, "dropped": self.dropped, "min_poll_s": self.min_poll_s,
                "delay_ms": self.delay_ms, "offset_ms": self.offset_ms, "stratum": self.stratum}


def _akey(a):
    # The unix port gives sockaddrs as bytes, the ESP32 as (ip, port) tuples.
    return a if isinstance(a, tuple) else bytes(a)


def _astr(a):
    if isinstance(a, tuple):
        return "%s:%d" % (a[0], a[1])
    try:
        _, ip, port = _socket.sockaddr(a)
        return "%s:%d" % (_socket.inet_ntop(_socket.AF_INET, ip), port)
    except (AttributeError, ValueError, OSError, TypeError):
        return repr(bytes(a))


def _ts_us(data, off):
    """NTP timestamp at data[off:off+8] as Unix microseconds (era 1 from 2036 on)."""
    sec, frac = struct.unpack_from(">II", data, off)
    if not sec & 0x80000000:
        sec += 0x100000000  # era 1: 2036-02-07 onwards (valid until 2104)
    # 2208988800: seconds from 1900 to 1970 (not a small int on 32-bit ports, so no const)
    return (sec - 2208988800) * 1000000 + ((frac * 1000000) >> 32)


def _local_us():
    # Local clock for the classic offset figure (reported, not used to set the Clock).
    return time.time_ns() // 1000


if not hasattr(time, "time_ns"):  # pragma: no cover - old ports
    _local_us = None


def _wait_readable(sock):
    # asyncio's own readiness wait (what StreamReader.read does), usable on a UDP socket.
    yield asyncio.core._io_queue.queue_read(sock)


class Client:
    """Queries servers. Tunables: timeout_ms, samples, burst_gap_ms."""

    timeout_ms = 1000  # ms: wait for one reply
    samples = 4  # requests per poll of a server; the minimum-delay one is kept
    burst_gap_ms = 2000  # ms between requests of one poll (ntpd's iburst spacing; servers rate-limit)

    def __init__(self, sock_mod=None):
        self.sock = sock_mod or _socket
        self._buf = bytearray(_PKT)  # the request, built in place
        self.rejects = {}  # reason -> count

    async def query(self, server):
        """One request/reply with server; returns a Sample or raises Reject/KoD."""
        sk = self.sock
        buf = self._buf
        for i in range(_PKT):
            buf[i] = 0
        buf[0] = (_VERSION << 3) | _MODE_CLIENT  # LI 0, VN 4, mode 3
        xmt = os.urandom(8)  # random transmit timestamp: the reply must echo it as origin
        buf[40:48] = xmt
        server.polls += 1
        s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
        ignored = "timeout"
        try:
            s.setblocking(False)
            t1_local = _local_us() if _local_us else None
            t1 = time.ticks_us()
            try:
                s.sendto(buf, server.addr)
            except OSError:
                raise Reject("send")  # no route, link down: this server fails, the next is tried
            while True:
                try:
                    data, addr = s.recvfrom(_MAX_PKT + 1)
                except OSError as e:
                    if e.args[0] != 11:  # EAGAIN: nothing yet
                        raise Reject("socket")
                    left = self.timeout_ms - time.ticks_diff(time.ticks_us(), t1) // 1000
                    if left <= 0:
                        raise Reject(ignored)
                    try:
                        await asyncio.wait_for_ms(_wait_readable(s), left)
                    except asyncio.TimeoutError:
                        raise Reject(ignored)
                    continue
                t4 = time.ticks_us()
                t4_ms = time.ticks_ms()
                # Checks that anyone could trip with a forged packet: ignore it and keep waiting,
                # so a flood of junk cannot stop the real reply from being read.
                if _akey(addr) != server.key:
                    ignored = "source"
                elif len(data) < _PKT or len(data) > _MAX_PKT or len(data) & 3:
                    ignored = "length"
                elif data[0] & 7 != _MODE_SERVER:
                    ignored = "mode"
                elif not 3 <= (data[0] >> 3) & 7 <= 4:
                    ignored = "version"
                elif data[24:32] != xmt:
                    ignored = "origin"  # not an answer to this request (spoofed, late or replayed)
                else:
                    break
                self.rejects[ignored] = self.rejects.get(ignored, 0) + 1
        finally:
            s.close()
        # The reply answers our request: from here on a bad field ends the exchange.
        li = data[0] >> 6
        stratum = data[1]
        if stratum == 0:
            code = "".join(chr(b) for b in data[12:16] if 0x20 < b < 0x7F)
            raise KoD(code)
        if li == 3:
            raise Reject("unsynchronized")
        if stratum >= 16:
            raise Reject("stratum")
        t3_raw = data[40:48]
        if t3_raw == b"\0" * 8:
            raise Reject("xmt-zero")
        if t3_raw == xmt:
            raise Reject("xmt-echo")  # a server that echoes our nonce as its time is broken
        if t3_raw == server.last_xmt:
            raise Reject("xmt-repeat")  # the same answer twice: a replay
        if data[32:40] == b"\0" * 8:
            raise Reject("rec-zero")
        if data[16:24] == b"\0" * 8:
            raise Reject("ref-zero")  # the server never synchronized
        t2 = _ts_us(data, 32)
        t3 = _ts_us(data, 40)
        proc = t3 - t2
        rtt = time.ticks_diff(t4, t1)
        if proc < 0 or proc > rtt:
            raise Reject("rec-xmt")  # server claims to have answered before asking, or too slowly
        delay = rtt - proc
        root_delay = struct.unpack_from(">i", data, 4)[0]
        root_disp = struct.unpack_from(">I", data, 8)[0]
        if root_delay < 0:
            raise Reject("root")
        root_us = ((root_delay * 1000000) >> 17) + ((root_disp * 1000000) >> 16)  # delay/2 + disp
        if root_us > _MAX_ROOT_US:
            raise Reject("root")
        server.last_xmt = bytes(t3_raw)
        off = None
        if t1_local is not None:
            # the classic ((T2 - T1) + (T3 - T4)) / 2 with T4 measured on the same ticks as T1
            t4l = t1_local + rtt
            off = ((t2 - t1_local) + (t3 - t4l)) // 2
        return Sample(server, t4_ms, t3 + delay // 2, delay, off, delay // 2 + root_us, stratum)

    async def poll(self, server):
        """A burst of `samples` requests to server; returns the minimum-delay Sample or raises Reject."""
        now = time.ticks_ms()
        if server.due_in_ms(now):
            raise Reject("too-soon")  # the poll limit holds whoever calls
        server.last_poll = now
        best = None
        last = None
        for i in range(self.samples):
            if i:
                await asyncio.sleep_ms(self.burst_gap_ms)
            try:
                smp = await self.query(server)
            except KoD as k:
                self.rejects[k.reason] = self.rejects.get(k.reason, 0) + 1
                server.last_reject = k.reason
                if k.code == "RATE":
                    server.min_poll_s = min(max(server.min_poll_s * 2, MIN_POLL_S * 4), _MAX_POLL_S)
                    log.warn("sntp", "%s says RATE: poll now every %d s" % (server.name, server.min_poll_s))
                elif k.code in ("DENY", "RSTR"):
                    server.dropped = k.code
                    log.warn("sntp", "%s says %s: dropped" % (server.name, k.code))
                raise
            except Reject as r:
                self.rejects[r.reason] = self.rejects.get(r.reason, 0) + 1
                server.last_reject = r.reason
                last = r
                continue
            if best is None or smp.delay_us < best.delay_us:
                best = smp
        if best is None:
            raise last or Reject("timeout")
        server.good += 1
        server.delay_ms = best.delay_us / 1000
        server.offset_ms = None if best.offset_us is None else best.offset_us / 1000
        server.stratum = best.stratum
        return best


class Supervisor:
    """Keeps clock synced from cfg_sntp; run() is the task, status() the report.

    cfg_sntp: servers (names or addresses, optionally "host:port"), port, interval_s, samples, timeout_ms, max_offset_ms,
    stale_after_s, optional min_poll_s (default MIN_POLL_S) and burst_gap_ms."""

    first_retry_ms = 2000  # ms: first retry before any sync; doubles up to first_retry_max_ms
    first_retry_max_ms = 64000

    def __init__(self, clock, cfg, sock_mod=None):
        self.clock = clock
        self.cfg = cfg
        self.client = Client(sock_mod)
        self.client.samples = cfg.get("samples", 4)
        self.client.timeout_ms = cfg.get("timeout_ms", 1000)
        self.client.burst_gap_ms = cfg.get("burst_gap_ms", Client.burst_gap_ms)
        mp = cfg.get("min_poll_s")
        self.min_poll_s = MIN_POLL_S if mp is None else mp
        self.interval_ms = cfg.get("interval_s", 1024) * 1000
        clock.max_offset_ms = cfg.get("max_offset_ms", 1000)
        clock.stale_after_s = cfg.get("stale_after_s", 86400)
        self.servers = []
        self._resolved = None  # ticks_ms of the last resolution
        self.state = "init"
        self.failures = 0
        self.rounds = 0
        self.last_error = None
        self.next_ms = 0
        self._stale_logged = False
        self._saved = time.ticks_ms()
        self._next_at = time.ticks_ms()

    def _resolve(self):
        sk = self.client.sock
        port = self.cfg.get("port", 123)
        old = {s.key: s for s in self.servers}
        found = []
        for name in self.cfg["servers"]:
            host, p = name, port
            i = name.rfind(":")
            if i > 0 and name.count(":") == 1:  # "host:port" (IPv4 or a name)
                host, p = name[:i], int(name[i + 1:])
            try:
                ai = sk.getaddrinfo(host, p, sk.AF_INET, sk.SOCK_DGRAM)
            except OSError as e:
                log.warn("sntp", "cannot resolve %s: %s" % (name, e))
                continue
            for a in ai[:_ADDRS_PER_NAME]:
                k = _akey(a[-1])
                if any(s.key == k for s in found):
                    continue
                srv = old.get(k)
                if srv is None:
                    srv = Server(name, a[-1])
                    srv.min_poll_s = self.min_poll_s
                found.append(srv)
        if found:
            self.servers = found
            self._resolved = time.ticks_ms()

    async def sync_once(self):
        """One round: poll the due servers, correct the clock. True on success, None when no
        server may be polled yet (rate limits), False when all polled servers failed."""
        now = time.ticks_ms()
        if self._resolved is None or time.ticks_diff(now, self._resolved) > _RESOLVE_EVERY_MS \
                or self.failures:
            self._resolve()
        live = [s for s in self.servers if not s.dropped]
        if not live:
            self.last_error = "no usable server" if self.servers else "no server resolved"
            return False
        # the last good server first, then the others in configured order
        live.sort(key=lambda s: -s.good)
        due = [s for s in live if s.due_in_ms(now) == 0][:_SERVERS_PER_ROUND]
        if not due:
            return None
        self.rounds += 1
        got = []
        for srv in due:
            try:
                got.append(await self.client.poll(srv))
            except Reject as r:
                self.last_error = "%s: %s" % (srv.name, r.reason)
        if not got:
            return False
        best = self._select(got)
        if best is None:
            self.last_error = "servers disagree"
            log.warn("sntp", "servers disagree: not syncing (%s)" % ", ".join(x.server.name for x in got))
            return False
        c = self.clock
        off = c.correct(best.t_ms, best.utc_us, best.delay_us, best.err_us, best.server.name, best.stratum)
        log.info("sntp", "sync %s stratum %d: offset %.3f ms, delay %.3f ms"
                 % (best.server.name, best.stratum, off, best.delay_us / 1000))
        return True

    def _select(self, items):
        # Several answers must agree before one is used: take the largest group that agrees with
        # one answer, and only if it is a majority (a lone liar among honest servers is outvoted;
        # liars that are not outvoted stop the sync instead of setting the clock wrong).
        if len(items) == 1:
            return items[0]
        t0 = items[0].t_ms
        offs = [s.utc_us - time.ticks_diff(s.t_ms, t0) * 1000 for s in items]  # same ticks base
        group = []
        for i, a in enumerate(items):
            g = [b for j, b in enumerate(items)
                 if abs(offs[i] - offs[j]) <= _AGREE_MS * 1000 + a.err_us + b.err_us]
            if len(g) > len(group):
                group = g
        if len(group) * 2 <= len(items):
            return None
        best = group[0]
        for s in group:
            if s.err_us < best.err_us:
                best = s
        return best

    def _jitter(self, ms):
        # +-25 % spread so that a fleet rebooted together does not poll in step
        return ms * 3 // 4 + random.getrandbits(16) * (ms // 2) // 65536

    async def run(self):
        """The supervisor task: sync at once, then every interval_s; back off on failures."""
        c = self.clock
        while True:
            try:
                ok = await self.sync_once()
            except Exception as e:  # never die: log, count, back off
                log.exc("sntp", e)
                self.last_error = "%s: %s" % (type(e).__name__, e)
                ok = False
            c.now()  # keeps the clock's ticks anchor fresh
            if ok:
                self.failures = 0
                c.servers_failing = False
                self.state = "synced"
                delay = self._jitter(self.interval_ms)
            elif ok is None:
                now = time.ticks_ms()
                waits = [s.due_in_ms(now) for s in self.servers if not s.dropped]
                delay = (min(waits) if waits else self.first_retry_ms) + 10
            else:
                self.failures += 1
                c.servers_failing = True
                if c.last_sync_ms is None:
                    self.state = "retrying"
                    base = min(self.first_retry_ms << min(self.failures - 1, 16), self.first_retry_max_ms)
                else:
                    self.state = "failing"
                    base = min(_RETRY_MS << min(self.failures - 1, 16), self.interval_ms)
                delay = self._jitter(base)
                log.warn("sntp", "sync failed (%d in a row): %s; next try in %d s"
                         % (self.failures, self.last_error, delay // 1000))
            if time.ticks_diff(time.ticks_ms(), self._saved) > _SAVE_EVERY_MS:
                c.save()  # keep the stored best guess fresh for a reboot without network
                self._saved = time.ticks_ms()
            al = c.alerts()
            if "stale" in al and not self._stale_logged:
                log.warn("sntp", "no sync for more than %d s: time is stale" % c.stale_after_s)
            self._stale_logged = "stale" in al
            self.next_ms = delay
            self._next_at = time.ticks_add(time.ticks_ms(), delay)
            await asyncio.sleep_ms(delay)

    def status(self):
        left = time.ticks_diff(self._next_at, time.ticks_ms())
        return {
            "state": self.state,
            "failures": self.failures,
            "rounds": self.rounds,
            "last_error": self.last_error,
            "next_poll_s": (left if left > 0 else 0) // 1000,
            "servers": [s.status() for s in self.servers],
            "rejects": self.client.rejects,
            "alerts": self.clock.alerts(),
        }
