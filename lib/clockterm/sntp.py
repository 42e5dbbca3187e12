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
#
# Heap: one class (the Supervisor). A server is a list indexed by the _S_* constants below and a
# good answer a tuple (a class and a dict per server or per answer cost several times more), and
# a refused answer is its reason as a short string, not an exception object.

import asyncio
import os
import random
import struct
import time
from micropython import const

from clockterm import cancel_after, log

try:
    import socket  # the one place the socket module is chosen; pass another in to replace it
except ImportError:  # pragma: no cover
    socket = None

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

# A server (Supervisor.servers holds one per resolved address) is a list:
_S_NAME = const(0)  # the configured name it was resolved from
_S_ADDR = const(1)  # its sockaddr, as the socket module gives it
_S_MIN_POLL = const(2)  # s: its poll limit (a RATE kiss doubles it)
_S_LAST_POLL = const(3)  # ticks_ms of the last burst start, None before the first
_S_LAST_XMT = const(4)  # transmit timestamp of its last good reply (replay check)
_S_DROPPED = const(5)  # DENY/RSTR code once the server told us to go away, else None
_S_POLLS = const(6)  # requests sent
_S_GOOD = const(7)  # polls that gave a good answer
_S_REJECT = const(8)  # reason of its last refused reply
_S_DELAY_MS = const(9)  # of its last good answer
_S_OFFSET_MS = const(10)  # of its last good answer (server - local clock), None where no time_ns
_S_STRATUM = const(11)

# A good answer (a sample) is a tuple (t_ms, utc_us, delay_us, err_us, offset_us, stratum, server):
# utc_us is true UTC at ticks_ms reading t_ms (the moment of receipt: server transmit + delay/2),
# delay_us the round trip minus server processing, err_us its error bound (delay/2 + root delay/2
# + root dispersion), offset_us the classic offset against the local clock (time.time_ns; None where
# there is none), server the list above.


def _due_ms(server, now):
    # ms until server may be polled again (0: now)
    if server[_S_LAST_POLL] is None:
        return 0
    d = server[_S_MIN_POLL] * 1000 - time.ticks_diff(now, server[_S_LAST_POLL])
    return d if d > 0 else 0


def _ts_us(data, off):
    # NTP timestamp at data[off:off+8] as Unix microseconds (era 1 from 2036 on)
    sec, frac = struct.unpack_from(">II", data, off)
    if not sec >> 31:
        sec += 1 << 32  # era 1: 2036-02-07 onwards (valid until 2104)
    # 2208988800: seconds from 1900 to 1970 (not a small int on 32-bit ports, so no const)
    return (sec - 2208988800) * 1000000 + ((frac * 1000000) >> 32)


def _select(items):
    # Several answers must agree before one is used: take the largest group that agrees with one
    # answer, and only if it is a majority (a lone liar among honest servers is outvoted; liars
    # that are not outvoted stop the sync instead of setting the clock wrong). Answers are compared
    # as true UTC at one ticks reading, the first answer's. The best of the group, or None.
    t0 = items[0][0]
    group = []
    for a in items:
        ua = a[1] - time.ticks_diff(a[0], t0) * 1000
        g = []
        for b in items:
            if abs(ua - b[1] + time.ticks_diff(b[0], t0) * 1000) <= _AGREE_MS * 1000 + a[3] + b[3]:
                g.append(b)
        if len(g) > len(group):
            group = g
    if len(group) * 2 <= len(items):
        return None
    best = group[0]
    for s in group:
        if s[3] < best[3]:
            best = s
    return best


def _wait_readable(sock):
    # asyncio's own readiness wait (what StreamReader.read does), usable on a UDP socket.
    yield asyncio.core._io_queue.queue_read(sock)


class Supervisor:
    """Keeps clock synced from cfg_sntp; run() is the task, status() the report.

    cfg_sntp: servers (names or addresses, optionally "host:port"), port, interval_s, samples
    (requests per poll of a server; the minimum-delay answer is kept), timeout_ms (wait for one
    reply), max_offset_ms, stale_after_s, optional min_poll_s (default MIN_POLL_S) and burst_gap_ms
    (between the requests of one poll, default 2000: ntpd's iburst spacing; servers rate-limit).
    Read where they are used, so a test may change them in the dict."""

    first_retry_ms = 2000  # ms: first retry before any sync; doubles up to first_retry_max_ms
    first_retry_max_ms = 64000

    def __init__(self, clock, cfg, sock_mod=None):
        self.clock = clock
        self.cfg = cfg
        self.sock = sock_mod or socket
        self.rejects = {}  # reason -> count
        self.interval_ms = cfg.get("interval_s", 1024) * 1000
        clock.max_offset_ms = cfg.get("max_offset_ms", 1000)
        clock.stale_after_s = cfg.get("stale_after_s", 86400)
        self.servers = []  # server lists (see _S_*), in configured order
        self._resolved = None  # ticks_ms of the last resolution
        self.state = "init"
        self.failures = 0
        self.rounds = 0
        self.last_error = None
        self.next_ms = 0  # the delay before the next round, as last chosen
        self._stale_logged = False
        self._saved = time.ticks_ms()
        self._next_at = self._saved

    def _resolve(self):
        sk = self.sock
        cfg = self.cfg
        mp = cfg.get("min_poll_s")
        found = []
        for name in cfg["servers"]:
            host, p = name, cfg.get("port", 123)
            i = name.rfind(":")
            if i > 0 and name.count(":") == 1:  # "host:port" (IPv4 or a name)
                host, p = name[:i], int(name[i + 1:])
            try:
                ai = sk.getaddrinfo(host, p, sk.AF_INET, sk.SOCK_DGRAM)
            except OSError as e:
                log.warn("sntp", "cannot resolve %s: %s" % (name, e))
                continue
            for a in ai[:_ADDRS_PER_NAME]:
                a = a[-1]
                for s in found:
                    if s[_S_ADDR] == a:
                        break  # the same address under two names: poll it once
                else:
                    for s in self.servers:
                        if s[_S_ADDR] == a:
                            found.append(s)  # known: keep what we learned (poll limit, replays, drop)
                            break
                    else:
                        found.append([name, a, MIN_POLL_S if mp is None else mp, None, None, None, 0, 0, None,
                                      None, None, None])
        if found:
            self.servers = found
            self._resolved = time.ticks_ms()

    async def _query(self, server):
        # One request/reply with server: the sample, or the reason (str) the reply was refused.
        # (few locals on purpose: this coroutine's frame is on the heap while it waits)
        # (built per request: 48 bytes once in a poll interval cost less than holding a buffer)
        buf = bytearray(_PKT)
        buf[0] = (_VERSION << 3) | _MODE_CLIENT  # LI 0, VN 4, mode 3
        xmt = os.urandom(8)  # random transmit timestamp: the reply must echo it as origin
        buf[40:48] = xmt
        server[_S_POLLS] += 1
        s = self.sock.socket(self.sock.AF_INET, self.sock.SOCK_DGRAM)
        ignored = "timeout"
        try:
            s.setblocking(False)
            try:
                t1_local = time.time_ns() // 1000  # local clock, for the offset figure (reported only)
            except AttributeError:  # pragma: no cover - old ports
                t1_local = None
            t1 = time.ticks_us()
            try:
                s.sendto(buf, server[_S_ADDR])
            except OSError:
                return "send"  # no route, link down: this server fails, the next is tried
            while True:
                try:
                    data, addr = s.recvfrom(_MAX_PKT + 1)
                except OSError as e:
                    if e.args[0] != 11:  # EAGAIN: nothing yet
                        return "socket"
                    left = self.cfg.get("timeout_ms", 1000) - time.ticks_diff(time.ticks_us(), t1) // 1000
                    if left <= 0:
                        return ignored
                    # (not asyncio.wait_for_ms: its two extra tasks and closure take ~0.7 KB while
                    # waiting; here one small timer task cancels this wait)
                    timer = asyncio.create_task(cancel_after(asyncio.current_task(), left))
                    try:
                        await _wait_readable(s)
                    except asyncio.CancelledError:
                        if not timer.done():
                            raise  # cancelled from outside, not a timeout
                        return ignored
                    finally:
                        timer.cancel()
                    continue
                rtt = time.ticks_diff(time.ticks_us(), t1)  # T4 - T1, both on ticks_us
                t4_ms = time.ticks_ms()
                # Checks that anyone could trip with a forged packet: ignore it and keep waiting,
                # so a flood of junk cannot stop the real reply from being read.
                if addr != server[_S_ADDR]:
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
        stratum = data[1]
        if stratum == 0:
            # a kiss-o'-death: its code (RATE, DENY, RSTR ...) in the reference id
            code = "kod-"
            for b in data[12:16]:
                if 0x20 < b < 0x7F:
                    code += chr(b)
            return code
        if data[0] >> 6 == 3:
            return "unsynchronized"
        if stratum >= 16:
            return "stratum"
        t3_raw = data[40:48]
        if t3_raw == b"\0" * 8:
            return "xmt-zero"
        if t3_raw == xmt:
            return "xmt-echo"  # a server that echoes our nonce as its time is broken
        if t3_raw == server[_S_LAST_XMT]:
            return "xmt-repeat"  # the same answer twice: a replay
        if data[32:40] == b"\0" * 8:
            return "rec-zero"
        if data[16:24] == b"\0" * 8:
            return "ref-zero"  # the server never synchronized
        t2 = _ts_us(data, 32)  # server receive
        t3 = _ts_us(data, 40)  # server transmit
        delay = rtt - (t3 - t2)  # the round trip minus the server's processing
        if t3 < t2 or delay < 0:
            return "rec-xmt"  # server claims to have answered before asking, or too slowly
        root_delay, root_disp = struct.unpack_from(">II", data, 4)
        if root_delay >> 31:  # a negative root delay (a signed field)
            return "root"
        root_us = ((root_delay * 1000000) >> 17) + ((root_disp * 1000000) >> 16)  # delay/2 + disp
        if root_us > _MAX_ROOT_US:
            return "root"
        server[_S_LAST_XMT] = bytes(t3_raw)
        # offset: the classic ((T2 - T1) + (T3 - T4)) / 2, with T4 measured on the same ticks as T1
        return (t4_ms, t3 + delay // 2, delay, delay // 2 + root_us,
                None if t1_local is None else ((t2 - t1_local) + (t3 - t1_local - rtt)) // 2, stratum, server)

    async def poll(self, server):
        """A burst of `samples` requests to server (one of .servers): the minimum-delay sample,
        or the reason (str) there is none: "too-soon" while the server's poll limit holds (whoever
        calls), "kod-<code>" for a kiss-o'-death (the burst stops there), else the last refusal."""
        now = time.ticks_ms()
        if _due_ms(server, now):
            return "too-soon"
        server[_S_LAST_POLL] = now
        cfg = self.cfg
        rejects = self.rejects
        best = None
        why = "timeout"
        for i in range(cfg.get("samples", 4)):
            if i:
                await asyncio.sleep_ms(cfg.get("burst_gap_ms", 2000))
            smp = await self._query(server)
            if isinstance(smp, str):
                rejects[smp] = rejects.get(smp, 0) + 1
                server[_S_REJECT] = why = smp
                if smp[:4] != "kod-":
                    continue  # the next request of the burst may do better
                code = smp[4:]
                if code == "RATE":
                    server[_S_MIN_POLL] = min(max(server[_S_MIN_POLL] * 2, MIN_POLL_S * 4), _MAX_POLL_S)
                    log.warn("sntp", "%s says RATE: poll now every %d s" % (server[_S_NAME], server[_S_MIN_POLL]))
                elif code == "DENY" or code == "RSTR":
                    server[_S_DROPPED] = code
                    log.warn("sntp", "%s says %s: dropped" % (server[_S_NAME], code))
                return smp
            if best is None or smp[2] < best[2]:
                best = smp
        if best is None:
            return why
        server[_S_GOOD] += 1
        server[_S_DELAY_MS] = best[2] / 1000
        server[_S_OFFSET_MS] = None if best[4] is None else best[4] / 1000
        server[_S_STRATUM] = best[5]
        return best

    async def sync_once(self):
        """One round: poll the due servers, correct the clock. True on success, None when no
        server may be polled yet (rate limits), False when all polled servers failed."""
        now = time.ticks_ms()
        if self._resolved is None or time.ticks_diff(now, self._resolved) > _RESOLVE_EVERY_MS \
                or self.failures:
            self._resolve()
        # The servers due for a poll: the ones with most good polls first, then in configured order.
        due = []
        live = False
        for s in self.servers:
            if not s[_S_DROPPED]:
                live = True
                if not _due_ms(s, now):
                    i = len(due)
                    while i and due[i - 1][_S_GOOD] < s[_S_GOOD]:
                        i -= 1
                    due.insert(i, s)
        if not live:
            self.last_error = "no usable server" if self.servers else "no server resolved"
            return False
        if not due:
            return None
        del due[_SERVERS_PER_ROUND:]
        self.rounds += 1
        got = []
        for srv in due:
            smp = await self.poll(srv)
            if isinstance(smp, str):
                self.last_error = "%s: %s" % (srv[_S_NAME], smp)
            else:
                got.append(smp)
        if not got:
            return False
        best = _select(got)
        if best is None:  # (_after logs it as a failed sync)
            names = []
            for s in got:
                names.append(s[6][_S_NAME])
            self.last_error = "servers disagree: " + ", ".join(names)
            return False
        t_ms, utc_us, delay, err, _, stratum, srv = best
        off = self.clock.correct(t_ms, utc_us, delay, err, srv[_S_NAME], stratum)
        log.info("sntp", "sync %s stratum %d: offset %.3f ms, delay %.3f ms"
                 % (srv[_S_NAME], stratum, off, delay / 1000))
        return True

    async def run(self):
        """The supervisor task: sync at once, then every interval_s; back off on failures."""
        # (lean on purpose: this coroutine's frame lives for ever; the bookkeeping is in _after)
        while True:
            try:
                ok = await self.sync_once()
            except Exception as e:  # never die: log, count, back off
                log.exc("sntp", e)
                self.last_error = "%s: %s" % (type(e).__name__, e)
                ok = False
            await asyncio.sleep_ms(self._after(ok))

    def _after(self, ok):
        # After a round (ok as sync_once answered): state, backoff, the clock's alerts and stored
        # time; returns the delay to the next round in ms.
        c = self.clock
        c.now()  # keeps the clock's ticks anchor fresh
        if ok is None:  # no server due yet: wait for the first that is
            now = time.ticks_ms()
            delay = None
            for s in self.servers:
                if not s[_S_DROPPED]:
                    d = _due_ms(s, now)
                    delay = d if delay is None or d < delay else delay
            delay = (self.first_retry_ms if delay is None else delay) + 10
        else:
            if ok:
                self.failures = 0
                c.servers_failing = False
                self.state = "synced"
                delay = self.interval_ms
            else:
                self.failures += 1
                c.servers_failing = True
                if c.last_sync_ms is None:
                    self.state = "retrying"
                    delay = min(self.first_retry_ms << min(self.failures - 1, 16), self.first_retry_max_ms)
                else:
                    self.state = "failing"
                    delay = min(_RETRY_MS << min(self.failures - 1, 16), self.interval_ms)
            # +-25 % spread so that a fleet rebooted together does not poll in step
            delay = delay * 3 // 4 + random.getrandbits(16) * (delay // 2) // 65536
            if not ok:
                log.warn("sntp", "sync failed (%d in a row): %s; next try in %d s"
                         % (self.failures, self.last_error, delay // 1000))
        if time.ticks_diff(time.ticks_ms(), self._saved) > _SAVE_EVERY_MS:
            c.save()  # keep the stored best guess fresh for a reboot without network
            self._saved = time.ticks_ms()
        stale = "stale" in c.alerts()
        if stale and not self._stale_logged:
            log.warn("sntp", "no sync for more than %d s: time is stale" % c.stale_after_s)
        self._stale_logged = stale
        self.next_ms = delay
        self._next_at = time.ticks_add(time.ticks_ms(), delay)
        return delay

    def status(self):
        left = time.ticks_diff(self._next_at, time.ticks_ms())
        servers = []
        sk = self.sock
        for s in self.servers:
            a = s[_S_ADDR]  # for people: the ESP32 gives (ip, port) tuples, the unix port packed bytes
            if isinstance(a, tuple):
                a = "%s:%d" % a[:2]
            else:
                try:
                    _, ip, port = sk.sockaddr(a)
                    a = "%s:%d" % (sk.inet_ntop(sk.AF_INET, ip), port)
                except (AttributeError, ValueError, OSError, TypeError):
                    a = repr(bytes(a))
            servers.append(dict(name=s[_S_NAME], addr=a, polls=s[_S_POLLS], good=s[_S_GOOD],
                                last_reject=s[_S_REJECT], dropped=s[_S_DROPPED], min_poll_s=s[_S_MIN_POLL],
                                delay_ms=s[_S_DELAY_MS], offset_ms=s[_S_OFFSET_MS], stratum=s[_S_STRATUM]))
        return dict(
            state=self.state,
            failures=self.failures,
            rounds=self.rounds,
            last_error=self.last_error,
            next_poll_s=(left if left > 0 else 0) // 1000,
            servers=servers,
            rejects=self.rejects,
            alerts=self.clock.alerts(),
        )
