# SNTP client (RFC 4330 exchanges, RFC 5905 checks and selection) and the supervisor task that keeps the Clock synced.
#
# Why not ntptime: it keeps whole seconds and believes any reply. Here every request carries a
# random transmit timestamp (a nonce the reply must echo as its origin), the reply must come from the
# address and port we asked, and every field that could make a reply useless or dangerous is checked
# before any timestamp is used. The round-trip is measured with ticks_us, so the estimate of true UTC
# at the moment of receipt (server transmit + delay/2) does not depend on the local clock at all.
#
# Selection (RFC 5905 section 11.2). Each server's last good answer is a correctness interval
# [utc - dist, utc + dist], dist its root distance: half the round trip plus the server's root delay
# (together at least RFC 5905's MINDISP), plus its root dispersion, widened as the answer ages by what
# the local ticks may lose. A truechimer's interval contains the true time. Intersection (Marzullo):
# the interval where the most correctness intervals overlap; they must be a majority of the quorum,
# the configured servers (or the answers, when a pool name gives more), else nothing is corrected:
# two servers that disagree, or one answer out of three, is no majority ("quorum" alert). An interval
# that misses the intersection is a falseticker, whatever bound it claims. Clustering drops the
# survivor farthest from the others while more than a majority survive and it is farther than the
# tightest survivor claims to be accurate. Combining: the survivors' times weighted by 1/dist. The
# error bound handed to the Clock reaches every point where the true time can be if the liars are a
# minority of the quorum, so it covers the real error whatever a liar claims. The Clock then decides
# between slew, step, hold and refusal (clock.py: step discipline).
#
# Polling (pool.ntp.org's rules for vendors: few queries, kiss-o'-death honoured, random times, DNS
# again at most hourly and only when a server stopped answering): a burst of `samples` requests
# (burst_gap_ms apart) to a server without a recent answer (at start, after a long outage: ntpd's
# iburst), else one request per poll; servers listed in `owned` (the organisation's own) get a burst
# at every poll. Each server has a poll limit (min_poll_s); a RATE kiss doubles the interval in use
# with that server (it never shortens it, retries included), DENY and RSTR drop it.
#
# Non-blocking: the socket is set non-blocking and the task waits on asyncio's poller (the same
# mechanism asyncio streams use), which works on the unix port and the ESP32 alike. A reply wait is
# bounded in time and in packets, and yields after each packet: a stream of junk neither stalls the
# event loop (taps, the watchdog) nor holds a round.
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
from clockterm.clock import PORT_TO_UNIX_S

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
_MAX_DIST_US = const(1500000)  # root distance above 1.5 s: useless (RFC 5905 MAXDIST)
_MIN_DELAY_US = const(5000)  # round trip + root delay count at least this (RFC 5905 MINDISP): no tighter claim
_MAX_POLL_S = const(131072)  # 36 h: the longest poll a RATE kiss can push a server to
_ADDRS_PER_NAME = const(4)  # pool names resolve to several servers; take at most this many
_MAX_PKTS = const(32)  # refused packets one request reads before it gives up ("flood")
_EAGAIN = const(11)  # errno of a non-blocking read with nothing to read (unix port and lwIP alike)
# Supervisor tunables (const: no RAM for their names; first_retry_ms and first_retry_max_ms stay
# attributes because tests shorten them).
_KICK_STEP_MS = const(250)  # the wait between rounds looks for a kick this often
_RETRY_MS = const(32000)  # ms: first retry after a failure once synced; doubles up to interval_s
_RESOLVE_EVERY_MS = const(3600000)  # ms: names resolved again at most this often (pool rule)
_SERVERS_PER_ROUND = const(3)  # at most this many servers polled per sync
_SAVE_EVERY_MS = const(3600000)  # ms: refresh the clock's stored time at least this often (flash wear)
_F32_US = const(8388608)  # 2**23: us below this a 32-bit float holds as ms with 3 decimals
_ANSWER_POLLS = const(4)  # an answer votes for this many poll intervals (then the server is "silent")
_ANSWER_MAX_MS = const(86400000)  # and never longer than a day (ticks_diff must stay far below 2^29 ms)

# A server (Supervisor.servers holds one per resolved address) is a list:
_S_NAME = const(0)  # the configured name it was resolved from
_S_ADDR = const(1)  # its sockaddr, as the socket module gives it
_S_LIMIT = const(2)  # s: its poll limit (min_poll_s; a RATE kiss raises it)
_S_LAST_POLL = const(3)  # ticks_ms of the last poll start, None before the first
_S_LAST_XMT = const(4)  # transmit timestamp of its last good reply (replay check)
_S_DROPPED = const(5)  # DENY/RSTR code once the server told us to go away, else None
_S_POLLS = const(6)  # requests sent
_S_GOOD = const(7)  # polls that gave a good answer
_S_REJECT = const(8)  # reason of its last refused reply
_S_ANSWER = const(9)  # its last good answer (a sample, below), None before
_S_FALSE = const(10)  # rounds in which it was a falseticker
_S_BURST = const(11)  # ticks_ms of its last iburst since it last answered, else None
_S_OWNED = const(12)  # listed in `owned`: a burst at every poll

# A good answer (a sample) is a tuple:
_SM_T = const(0)  # ticks_ms at receipt
_SM_UTC = const(1)  # true UTC at that ticks reading, us (server transmit + delay/2)
_SM_DELAY = const(2)  # round trip minus the server's processing, us
_SM_DIST = const(3)  # root distance (its error bound), us
_SM_OFF = const(4)  # classic offset against time.time_ns, us (reported only; None where no time_ns)
_SM_STRATUM = const(5)

# A candidate of a selection is a list:
_C_UTC = const(0)  # true UTC at the selection's ticks reading, us
_C_DIST = const(1)  # root distance, aged, us
_C_SRV = const(2)  # the server


def _due_ms(server, now):
    # ms until server may be polled again (0: now)
    if server[_S_LAST_POLL] is None:
        return 0
    e = time.ticks_diff(now, server[_S_LAST_POLL])
    d = server[_S_LIMIT] * 1000 - e
    return d if d > 0 and e >= 0 else 0


def _ts_us(data, off):
    # NTP timestamp at data[off:off+8] as Unix microseconds (era 1 from 2036 on)
    sec, frac = struct.unpack_from(">II", data, off)
    if not sec >> 31:
        sec += 1 << 32  # era 1: 2036-02-07 onwards (valid until 2104)
    # 2208988800: seconds from 1900 to 1970 (not a small int on 32-bit ports, so no const)
    return (sec - 2208988800) * 1000000 + ((frac * 1000000) >> 32)


def _edge(items, n, upper):
    # Marzullo's scan over the sorted correctness-interval edges items [(value, 0 lower / 1 upper)]:
    # the first value, from below (from above when upper), where n intervals are open; None if none.
    k = 0
    i, end, step = (len(items) - 1, -1, -1) if upper else (0, len(items), 1)
    while i != end:
        v, kind = items[i]
        if kind == upper:  # an interval opens: a lower edge going up, an upper edge going down
            k += 1
            if k >= n:
                return v
        else:
            k -= 1
        i += step
    return None


def _select(items, n):
    """RFC 5905 selection over candidates items [utc_us, dist_us, server] seen at one ticks reading,
    n servers configured: (estimate_us, bound_us, survivors, falsetickers), or None when no
    majority of the quorum (max(n, len(items))) agrees. The true time lies within estimate +- bound
    unless the liars are a majority of the quorum."""
    m = len(items)
    quorum = n if n > m else m
    majority = quorum // 2 + 1
    edges = []
    for c in items:
        edges.append((c[_C_UTC] - c[_C_DIST], 0))
        edges.append((c[_C_UTC] + c[_C_DIST], 1))
    edges.sort()  # at equal values lower edges first: intervals that touch overlap
    # Intersection: the most intervals that share a point, a majority at least (m - k falsetickers).
    k = m
    while k >= majority:
        low = _edge(edges, k, 0)
        if low is not None:
            break
        k -= 1
    else:
        return None
    high = _edge(edges, k, 1)
    surv = []
    false = []
    for c in items:
        (surv if c[_C_UTC] - c[_C_DIST] <= high and c[_C_UTC] + c[_C_DIST] >= low else false).append(c)
    # Clustering (RFC 5905 11.2.2 for a handful of servers): while more than a majority survive, drop
    # the one farthest from the others (largest selection jitter) if it is farther than the tightest
    # survivor claims to be accurate (RFC 5905 compares with the smallest peer jitter, which one
    # answer per poll cannot measure). Survivors that agree within their bounds all stay.
    while len(surv) > majority:
        worst = None
        far = -1
        tight = _MAX_DIST_US
        for c in surv:
            j = 0
            for o in surv:
                j += (c[_C_UTC] - o[_C_UTC]) ** 2
            if j > far:
                far, worst = j, c
            if c[_C_DIST] < tight:
                tight = c[_C_DIST]
        if far <= tight * tight:
            break
        surv.remove(worst)
    # Combine: weighted by 1/dist, relative to the first survivor (integers: a float has 24 bits here).
    ref = surv[0][_C_UTC]
    wsum = dsum = 0
    for c in surv:
        w = (1 << 24) // c[_C_DIST]
        wsum += w
        dsum += (c[_C_UTC] - ref) * w
    est = ref + dsum // wsum
    # The bound: with at most quorum - majority liars, the true time lies in at least
    # m - (quorum - majority) of the intervals.
    k = m - quorum + majority
    lo = _edge(edges, k, 0)
    hi = _edge(edges, k, 1)
    est = lo if est < lo else hi if est > hi else est
    return est, max(est - lo, hi - est), surv, false


def _wait_readable(sock):
    # asyncio's own readiness wait (what StreamReader.read does), usable on a UDP socket.
    yield asyncio.core._io_queue.queue_read(sock)


class Supervisor:
    """Keeps clock synced from cfg_sntp; run() is the task, status() the report.

    cfg_sntp: servers (names or addresses, optionally "host:port"), port, interval_s, samples
    (requests of a burst; the minimum-delay answer is kept), timeout_ms (wait for one reply),
    max_offset_ms, stale_after_s; optional (absent or null: the default): min_poll_s (default
    MIN_POLL_S), burst_gap_ms (between the requests of a burst, default 2000: ntpd's iburst
    spacing), owned (servers, as written in `servers`, that get a burst at every poll), panic_ms
    and stepout_s (the Clock's). Most are read where they are used, so a test may change them in
    the dict; min_poll_s is read once."""

    first_retry_ms = 2000  # ms: first retry before any sync; doubles up to first_retry_max_ms
    first_retry_max_ms = 64000

    def __init__(self, clock, cfg, sock_mod=None):
        self.clock = clock
        self.cfg = cfg
        self.sock = sock_mod or socket
        self.rejects = {}  # reason -> refused packets or requests
        self.interval_ms = cfg.get("interval_s", 1024) * 1000
        clock.max_offset_ms = cfg.get("max_offset_ms", 1000)
        clock.stale_after_s = cfg.get("stale_after_s", 86400)
        # (the optional fields may be absent or null: then their defaults apply)
        if cfg.get("panic_ms") is not None:
            clock.panic_ms = cfg["panic_ms"]
        if cfg.get("stepout_s") is not None:
            clock.stepout_s = cfg["stepout_s"]
        v = cfg.get("min_poll_s")
        self.min_poll_s = MIN_POLL_S if v is None else v  # s: no server is polled more often
        self.servers = []  # server lists (see _S_*), in configured order
        self._resolved = None  # ticks_ms of the last resolution
        self.state = "init"
        self.failures = 0
        self.rounds = 0
        self.last_error = None
        self.next_ms = 0  # the delay before the next round, as last chosen
        self._stale_logged = False
        self._saved = time.ticks_ms()
        self._kicked = False  # set by kick: sync now
        self._next_at = self._saved

    def kick(self):
        """Sync now (the endpoint's resync action): the wait between rounds ends within _KICK_STEP_MS."""
        self._kicked = True

    def _count(self, reason):
        self.rejects[reason] = self.rejects.get(reason, 0) + 1
        return reason

    def _live(self, server, now):
        # Its last answer, while it may still vote (for _ANSWER_POLLS poll intervals; then the
        # server counts as silent, and the answer is forgotten: kept, its ticks would read as new
        # again once they wrap, 2**30 ms on an ESP32, and a server silent for 12.4 days would vote).
        a = server[_S_ANSWER]
        ttl = min(self.interval_ms * _ANSWER_POLLS, _ANSWER_MAX_MS)
        if a is not None and not 0 <= time.ticks_diff(now, a[_SM_T]) <= ttl:
            a = server[_S_ANSWER] = None
        return a

    # --- servers ------------------------------------------------------------------------------

    def _resolve(self):
        sk = self.sock
        cfg = self.cfg
        now = time.ticks_ms()
        owned = cfg.get("owned") or ()
        found = []
        for name in cfg["servers"]:
            # What we know of this name: the servers still answering stay (a pool's DNS rotates;
            # they keep their poll limits and replay checks), then new addresses up to the cap.
            known = [s for s in self.servers if s[_S_NAME] == name]
            host, p = name, cfg.get("port", 123)
            i = name.rfind(":")
            if i > 0 and name.count(":") == 1:  # "host:port" (IPv4 or a name)
                host, p = name[:i], int(name[i + 1:])
            try:
                ai = sk.getaddrinfo(host, p, sk.AF_INET, sk.SOCK_DGRAM)
            except OSError as e:
                log.warn("sntp", "cannot resolve %s: %s" % (name, e))
                found.extend(known)  # keep what we had
                continue
            mine = [s for s in known if self._live(s, now) is not None and not s[_S_DROPPED]]
            for a in ai:
                a = a[-1]
                if len(mine) >= _ADDRS_PER_NAME:
                    break
                for s in found + mine:
                    if s[_S_ADDR] == a:
                        break  # the same address under two names: poll it once
                else:
                    for s in known:
                        if s[_S_ADDR] == a:
                            mine.append(s)  # known: keep what we learned (poll limit, replays, drop)
                            break
                    else:
                        mine.append([name, a, self.min_poll_s, None, None, None, 0, 0, None, None, 0, None,
                                     name in owned])
            found.extend(mine)
        if found:
            self.servers = found
            self._resolved = now

    # --- one request ----------------------------------------------------------------------------

    async def _query(self, server):
        # One request/reply with server: the sample, or the reason (str) there is none, counted
        # once in rejects (a refused packet is counted as it comes).
        buf = bytearray(_PKT)  # (48 bytes once per request cost less than holding a buffer)
        buf[0] = (_VERSION << 3) | _MODE_CLIENT  # LI 0, VN 4, mode 3
        sent = os.urandom(8)  # random transmit timestamp: the reply must echo it as origin
        buf[40:48] = sent
        server[_S_POLLS] += 1
        s = self.sock.socket(self.sock.AF_INET, self.sock.SOCK_DGRAM)
        try:
            s.setblocking(False)
            try:
                # local clock, for the offset figure (reported only); on a port whose time counts from
                # 2000 (the ESP32's) its seconds from 1970, as the server's
                t0 = time.time_ns() // 1000 + PORT_TO_UNIX_S * 1000000
            except AttributeError:  # pragma: no cover - old ports
                t0 = None
            start = time.ticks_us()
            try:
                s.sendto(buf, server[_S_ADDR])
            except OSError:
                return self._count("send")  # no route, link down: this server fails, the next is tried
            msg = await self._receive(s, server[_S_ADDR], sent, start)
        finally:
            s.close()
        if isinstance(msg, str):
            return msg
        smp = self._sample(server, msg, sent, t0)
        return self._count(smp) if isinstance(smp, str) else smp

    async def _receive(self, sock, addr, sent, start):
        # Wait for the reply to the request whose transmit timestamp is sent, made at ticks_us
        # start: (data, rtt_us, ticks_ms at receipt), or why there is none. The deadline is checked
        # after every packet, at most _MAX_PKTS refused packets are read, and the loop yields after
        # each one.
        why = None  # the last refused packet's reason (counted already)
        n = 0
        timeout = self.cfg.get("timeout_ms", 1000)
        while True:
            left = timeout - time.ticks_diff(time.ticks_us(), start) // 1000
            if left <= 0:
                return why or self._count("timeout")
            try:
                data, frm = sock.recvfrom(_MAX_PKT + 1)
            except OSError as e:
                if e.args[0] != _EAGAIN:
                    return self._count("socket")
                # (not asyncio.wait_for_ms: its two extra tasks and closure take ~0.7 KB while
                # waiting; here one small timer task cancels this wait)
                timer = asyncio.create_task(cancel_after(asyncio.current_task(), left))
                try:
                    await _wait_readable(sock)
                except asyncio.CancelledError:
                    if not timer.done():
                        raise  # cancelled from outside, not a timeout
                finally:
                    timer.cancel()
                continue
            rtt = time.ticks_diff(time.ticks_us(), start)  # T4 - T1, both on ticks_us
            t4 = time.ticks_ms()
            # Checks that anyone could trip with a forged packet: ignore it and keep waiting, so
            # that junk cannot stop the real reply from being read.
            if frm != addr:
                why = "source"
            elif len(data) < _PKT or len(data) > _MAX_PKT or len(data) & 3:
                why = "length"
            elif data[0] & 7 != _MODE_SERVER:
                why = "mode"
            elif not 3 <= (data[0] >> 3) & 7 <= 4:
                why = "version"
            elif data[24:32] != sent:
                why = "origin"  # not an answer to this request (spoofed, late or replayed)
            else:
                return data, rtt, t4
            self._count(why)
            n += 1
            if n >= _MAX_PKTS:
                return self._count("flood")
            await asyncio.sleep_ms(0)  # let the other tasks run between packets

    def _sample(self, server, msg, sent, t0):
        # The reply msg (data, rtt_us, ticks_ms at receipt) answers our request: from here on a bad
        # field ends the exchange. The sample, or the reason (str) the reply is refused.
        data, rtt, t4 = msg
        stratum = data[1]
        if stratum == 0:
            # a kiss-o'-death: its code (RATE, DENY, RSTR ...) in the reference id
            # (as bytes: chr() would intern each character for good, and a server picks them)
            return (b"kod-" + bytes(b for b in data[12:16] if 0x20 < b < 0x7F)).decode()
        if data[0] >> 6 == 3:
            return "unsynchronized"
        if stratum >= 16:
            return "stratum"
        t3_raw = data[40:48]
        if t3_raw == b"\0" * 8:
            return "xmt-zero"
        if t3_raw == sent:
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
        # root distance: (delay + root delay) / 2, no less than MINDISP / 2, + root dispersion
        d = delay + ((root_delay * 1000000) >> 16)
        dist = (d if d > _MIN_DELAY_US else _MIN_DELAY_US) // 2 + ((root_disp * 1000000) >> 16)
        if dist > _MAX_DIST_US:
            return "root"
        server[_S_LAST_XMT] = bytes(t3_raw)
        # offset: the classic ((T2 - T1) + (T3 - T4)) / 2, with T4 measured on the same ticks as T1
        return (t4, t3 + delay // 2, delay, dist,
                None if t0 is None else ((t2 - t0) + (t3 - t0 - rtt)) // 2, stratum)

    # --- one poll of one server -----------------------------------------------------------------

    async def poll(self, server):
        """One poll of server (one of .servers): a burst of `samples` requests when it is owned or
        has no recent answer (iburst), else one request. The best (least delay) sample, a tuple
        (t_ms, utc_us, delay_us, dist_us, offset_us, stratum), or the reason (str) there is none:
        "too-soon" while the server's poll limit holds (whoever calls), "kod-<code>" for a
        kiss-o'-death (a burst stops there), else the last refusal."""
        now = time.ticks_ms()
        if _due_ms(server, now):
            return "too-soon"
        last = server[_S_LAST_POLL]
        server[_S_LAST_POLL] = now
        cfg = self.cfg
        # iburst: for a server without a recent answer (start, long outage), at most once while it
        # stays silent that long, and never for one that asked us to slow down
        b = server[_S_BURST]
        quiet = self._live(server, now) is None and server[_S_LIMIT] <= self.min_poll_s
        ttl = min(self.interval_ms * _ANSWER_POLLS, _ANSWER_MAX_MS)
        n = 1
        if server[_S_OWNED] or (quiet and (b is None or not 0 <= time.ticks_diff(now, b) <= ttl)):
            n = cfg.get("samples", 4)
            server[_S_BURST] = now
        best = None
        why = "timeout"
        for i in range(n):
            if i:
                wait = cfg.get("burst_gap_ms")
                await asyncio.sleep_ms(2000 if wait is None else wait)
            smp = await self._query(server)
            if isinstance(smp, str):
                server[_S_REJECT] = why = smp
                if smp[:4] != "kod-":
                    continue  # the next request of a burst may do better
                code = smp[4:]
                if code == "RATE":
                    # back off from the interval in use with this server: never poll it sooner than before
                    gap = 0 if last is None else (time.ticks_diff(now, last) + 999) // 1000
                    server[_S_LIMIT] = min(max(server[_S_LIMIT], gap, MIN_POLL_S * 2) * 2, _MAX_POLL_S)
                    log.warn("sntp", "%s says RATE: poll now every %d s" % (server[_S_NAME], server[_S_LIMIT]))
                elif code == "DENY" or code == "RSTR":
                    server[_S_DROPPED] = code
                    log.warn("sntp", "%s says %s: dropped" % (server[_S_NAME], code))
                return smp
            if best is None or smp[_SM_DELAY] < best[_SM_DELAY]:
                best = smp
        if best is None:
            return why
        server[_S_GOOD] += 1
        server[_S_ANSWER] = best
        server[_S_BURST] = None
        return best

    # --- one round ----------------------------------------------------------------------------

    async def sync_once(self):
        """One round: poll the due servers, select among their answers, offer the result to the
        clock. True when the clock took it, None when no server may be polled yet (rate limits),
        False otherwise (no answer, no majority, a step held or refused: last_error says which)."""
        now = time.ticks_ms()
        for s in self.servers:
            self._live(s, now)  # answers past their time forgotten, whatever else this round does
        # Names are resolved until they resolve; then again at most hourly, when a server stopped
        # answering or was dropped (a pool gives other addresses).
        again = self._resolved is None
        if not again and not 0 <= time.ticks_diff(now, self._resolved) < _RESOLVE_EVERY_MS:
            for s in self.servers:
                again = again or s[_S_DROPPED] or self._live(s, now) is None
        if again:
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
        fresh = False
        for srv in due:
            smp = await self.poll(srv)
            if isinstance(smp, str):
                self.last_error = "%s: %s" % (srv[_S_NAME], smp)
            else:
                fresh = True
        return self._discipline(now) if fresh else False

    def _discipline(self, start):
        # Select among the servers' answers (those that may still vote) and offer the result to the
        # clock; True when it took it. Only a round with a new answer among the survivors corrects.
        ref = time.ticks_ms()
        c = self.clock
        cands = []
        for s in self.servers:
            a = self._live(s, ref)
            if a is None or s[_S_DROPPED]:
                continue
            e, lost = c.elapsed_us(a[_SM_T], ref)
            dist = a[_SM_DIST] + lost  # what the ticks may have lost since
            if dist <= _MAX_DIST_US:
                cands.append([a[_SM_UTC] + e, dist, s])
        got = _select(cands, len(self.cfg["servers"])) if cands else None
        if got is None:
            c.alert("quorum")
            self.last_error = "no majority: %s" % ", ".join([x[_C_SRV][_S_NAME] for x in cands])
            return False
        est, bound, surv, false = got
        for x in false:
            x[_C_SRV][_S_FALSE] += 1
            c.alert("falseticker")
            log.warn("sntp", "%s: falseticker (%+d ms)" % (x[_C_SRV][_S_NAME], (x[_C_UTC] - est) // 1000))
        best = surv[0]
        new = False
        for x in surv:
            if x[_C_DIST] < best[_C_DIST]:
                best = x
            new = new or time.ticks_diff(x[_C_SRV][_S_ANSWER][_SM_T], start) >= 0
        if not new:
            self.last_error = "no new answer"
            return False
        names = ", ".join([x[_C_SRV][_S_NAME] for x in surv])
        a = best[_C_SRV][_S_ANSWER]
        off = c.correct(ref, est, a[_SM_DELAY], bound, names, a[_SM_STRATUM])
        if off is None:
            self.last_error = "pending" if c.pending else "panic"  # (the clock's alerts say more)
            return False
        log.info("sntp", "sync %s: offset %s ms, bound %.3f ms" % (names, off, bound / 1000))
        return True

    # --- the task -----------------------------------------------------------------------------

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
            # The wait to the next round, in steps: a kick (the endpoint's resync action) ends it, and
            # makes every server that is not rate-limited (a RATE kiss raises its limit) due at once
            t0 = time.ticks_ms()
            ms = self._after(ok)
            while not self._kicked:
                left = ms - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0:
                    break
                await asyncio.sleep_ms(min(left, _KICK_STEP_MS))
            if self._kicked:
                self._kicked = False
                for s in self.servers:
                    if s[_S_LIMIT] <= self.min_poll_s:
                        s[_S_LAST_POLL] = None

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
                c.clear_alerts("servers")
                self.state = "synced"
                delay = self.interval_ms
            elif c.pending:
                # a step waits for confirmation: samples over stepout_s (each server's limit holds)
                self.state = "pending"
                delay = min(c.stepout_s * 500, self.interval_ms)
            else:
                self.failures += 1
                c.alert("servers")
                if c.last_sync_ms is None:
                    self.state = "retrying"
                    delay = min(self.first_retry_ms << min(self.failures - 1, 16), self.first_retry_max_ms)
                else:
                    self.state = "failing"
                    delay = min(_RETRY_MS << min(self.failures - 1, 16), self.interval_ms)
            # +-25 % spread so that a fleet rebooted together does not poll in step
            delay = delay * 3 // 4 + random.getrandbits(16) * (delay // 2) // 65536
            if not ok:
                log.warn("sntp", "no sync (%d in a row): %s; next try in %d s"
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
        now = time.ticks_ms()
        left = time.ticks_diff(self._next_at, now)
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
            v = s[_S_ANSWER]
            servers.append(dict(name=s[_S_NAME], addr=a, owned=s[_S_OWNED], polls=s[_S_POLLS], good=s[_S_GOOD],
                                last_reject=s[_S_REJECT], dropped=s[_S_DROPPED], min_poll_s=s[_S_LIMIT],
                                falseticker=s[_S_FALSE], fresh=self._live(s, now) is not None,
                                delay_ms=v and v[_SM_DELAY] / 1000,
                                offset_ms=None if v is None or v[_SM_OFF] is None else v[_SM_OFF] / 1000
                                if -_F32_US < v[_SM_OFF] < _F32_US else v[_SM_OFF] // 1000,  # (Clock.offset_ms)
                                stratum=v and v[_SM_STRATUM]))
        return dict(
            state=self.state,
            failures=self.failures,
            rounds=self.rounds,
            last_error=self.last_error,
            next_poll_s=(left if left > 0 else 0) // 1000,
            servers=servers,
            rejects=self.rejects,
        )
