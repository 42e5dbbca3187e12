# Uplink supervisor: sends journaled punches to the central API in batches; acks only what is stored.
#
# One task that never dies. It waits for a valid clock (TLS checks certificate dates), gets an OAuth2
# client-credentials token, reads pending punches from the journal (after the durable ack point)
# into one preallocated body buffer, bounded by count and bytes, POSTs them to /v1/punches and moves
# the journal's durable ack only through the `stored_through` the server answered, and only when that
# seq lies inside the batch just sent. Errors follow docs/central-api.yaml: 401 refresh the token
# once; 413 halve the batch; 429 wait Retry-After; 400 keep the batch and pause long (alert); other
# failures back off exponentially with jitter, capped. The tap path never waits on any of this.
# When idle it also pulls the roster and the central's config overlay (conditional GETs, ETags on flash).

import asyncio
import json
import random
import time
from micropython import const

from clockterm import https, log

_Q_UNSYNCED = const(0)
_TOKEN_MARGIN_MS = const(30000)  # refresh a token this long before it expires
_CONFIG_MAX_BYTES = const(2048)  # largest config overlay taken (it holds a few policy fields)
QUALITY_NAMES = ("unsynced", "synced", "stale", "corrected")
# The columns of a batch's rows, in order (docs/central-api.yaml, PunchBatch.fields).
FIELDS = ("seq", "badge", "kind", "utc_ms", "utc_offset_min", "quality", "uncertainty_ms", "employee_id")
_FIELDS_JSON = '["seq","badge","kind","utc_ms","utc_offset_min","quality","uncertainty_ms","employee_id"]'
_SEP = (",", ":")

# states reported by status()
IDLE = "idle"
WAIT_CLOCK = "waiting_clock"
SENDING = "sending"
BACKOFF = "backoff"
REJECTED = "rejected"
DISABLED = "disabled"  # no usable CA or URL in the config


class BadAnswer(Exception):
    """The server answered 200 with something that is not a valid Stored document."""


def _qs(s):
    # Percent-encode a form value (RFC 3986 unreserved characters pass).
    out = []
    for ch in s.encode():
        c = chr(ch)
        if c.isalpha() or c.isdigit() or c in "-._~":
            out.append(c)
        else:
            out.append("%%%02X" % ch)
    return "".join(out)


class Uplink:
    """Supervisor for one central API. Tunables are attributes (units in the names):

    batch_max          punches per request (config central.batch_max; halved on 413, min 1)
    batch_bytes        request buffer bytes, allocated once at boot: HTTP head room + JSON body
    head_room          bytes reserved in front of the body for the HTTP head (one write per request;
                       a longer head, e.g. a huge token, falls back to two writes)
    interval_ms        idle poll for new punches (config central.interval_s); kick() wakes early
    backoff_min_ms / backoff_max_ms    exponential backoff range (jittered 50..100 %)
    retry_after_max_s  cap on a server's Retry-After
    rejected_pause_ms  pause after a 400 before the same batch is offered again
    idle_close_ms      close the kept-alive connection after this long with nothing to send
    """

    batch_max = 200
    batch_bytes = 4096
    head_room = 320
    interval_ms = 5000
    backoff_min_ms = 1000
    backoff_max_ms = 300000
    retry_after_max_s = 900
    rejected_pause_ms = 3600000
    idle_close_ms = 20000
    roster_every_ms = 300000  # conditional roster pull this often (an unchanged roster costs a 304)
    roster_timeout_ms = 120000  # a whole roster download (10,000 badges is some 300 KB)

    def __init__(self, journal, clock, device_id, url, client_id, client_secret, cadata=None, cafile=None,
                 batch_max=None, interval_s=None, client=None, roster=None, fs_root=None, config_path=None,
                 good_config_path=None):
        self.journal = journal
        self.roster = roster  # clockterm.roster.Roster to keep current from central, or None
        self._etag_path = (fs_root + "/roster.etag") if (roster is not None and fs_root) else None
        self._roster_due = time.ticks_ms()  # first pull (roster, config) as soon as the clock is valid
        self.roster_pulls = 0  # answers 200 applied (this boot)
        self.roster_error = None
        # The config overlay (docs/uplink.md, "Config"): pulled when the local config's path is known,
        # checked against it, kept on flash for the next boot, which applies it.
        # (overlay file, local config, last good local config), or None: no config pull
        self._cfg = (fs_root + "/config.central.json", config_path, good_config_path) \
            if (config_path and fs_root) else None
        self._cfg_crc = -1  # CRC of the overlay this boot started with (None: none), known at the first 200
        self.config_checks = 0  # config answers 200 or 304 (this boot)
        self.config_pulls = 0  # new overlays accepted (200, valid)
        self.config_writes = 0  # of those, written to flash (a changed overlay)
        self.config_pending = False  # the overlay on flash differs from the one this boot started with
        self.config_error = None
        self.clock = clock
        self.device_id = device_id
        self._cid = client_id
        self._secret = client_secret
        self.state = IDLE
        self.last_error = None
        try:
            self.client = client or https.Client(url, cadata=cadata, cafile=cafile)
        except (OSError, ValueError) as e:
            # No usable CA or URL: punches stay safe in the journal, the uplink says why it idles.
            self.client = None
            self.state = DISABLED
            self.last_error = "central: %s (%s)" % (e, cafile or url)
            log.error("uplink", self.last_error)
        if batch_max:
            self.batch_max = batch_max
        if interval_s:
            self.interval_ms = interval_s * 1000
        # The body buffer is allocated here, at boot, while the heap still has large free blocks.
        self._buf = bytearray(self.batch_bytes)
        self._token = None
        self._token_exp = 0  # ticks_ms when the token stops being used
        self._wake = asyncio.Event()
        self._failures = 0
        self._idle_since = time.ticks_ms()
        self.last_ok = None  # utc_ms of the last stored batch
        self.sent = 0  # punches acknowledged by the server (this boot)
        self.batches = 0  # requests answered 200
        self.rejected_seq = None  # first seq of a batch answered 400

    def kick(self):
        """A punch was journaled: send soon (never blocks)."""
        self._wake.set()

    def backlog(self):
        return self.journal.last_seq - self.journal.acked_seq

    def status(self):
        return {
            "state": self.state,
            "backlog": self.backlog(),
            "last_error": self.last_error,
            "last_ok": self.last_ok,
            "sent": self.sent,
            "batches": self.batches,
            "batch_max": self.batch_max,
            "connections": self.client.connections if self.client else 0,
            "requests": self.client.requests if self.client else 0,
            "rejected_seq": self.rejected_seq,
            "roster_pulls": self.roster_pulls,
            "roster_error": self.roster_error,
            "config_checks": self.config_checks,
            "config_pulls": self.config_pulls,
            "config_writes": self.config_writes,
            "config_pending": self.config_pending,
            "config_error": self.config_error,
        }

    def _error(self, msg):
        self.last_error = msg
        try:
            from clockterm import log

            log.warn("uplink", msg)
        except ImportError:
            pass

    # --- token ---------------------------------------------------------------------------------

    async def _ensure_token(self):
        if self._token is not None and time.ticks_diff(self._token_exp, time.ticks_ms()) > 0:
            return True
        self._token = None
        form = "grant_type=client_credentials&client_id=%s&client_secret=%s" % (_qs(self._cid), _qs(self._secret))
        r = await self.client.request("POST", "/v1/oauth/token", form.encode(), None,
                                      "application/x-www-form-urlencoded")
        if r.status != 200:
            self._error("token: HTTP %d" % r.status)
            return False
        try:
            d = json.loads(r.body)
            tok = d["access_token"]
            ttl_ms = int(d.get("expires_in", 3600)) * 1000
        except (ValueError, KeyError, TypeError):
            self._error("token: malformed answer")
            return False
        if not isinstance(tok, str) or not tok:
            self._error("token: malformed answer")
            return False
        self._token = tok
        self._token_exp = time.ticks_add(time.ticks_ms(), max(1000, ttl_ms - _TOKEN_MARGIN_MS)
                                         if ttl_ms > 2 * _TOKEN_MARGIN_MS else max(0, ttl_ms // 2))
        return True

    # --- batch ---------------------------------------------------------------------------------

    def _build(self):
        """Fill the body buffer from the journal; return (end, first_seq, last_seq, journal_id) or None.

        The body starts at head_room: the bytes in front of it take the HTTP head, so that the request
        leaves in one write. Punches go as compact rows (FIELDS order, see docs/central-api.yaml):
        about 55 bytes each instead of 150 as objects, so a 4 KB buffer carries some 65 punches.
        """
        if self._buf is None or len(self._buf) != self.batch_bytes:
            self._buf = None
            self._buf = bytearray(self.batch_bytes)
        buf = self._buf
        first = last = 0
        jid = None
        n = 0
        pos = self.head_room
        for p in self.journal.pending(None, self.batch_max):
            if jid is None:
                jid = p.journal_id
                head = ('{"device_id":%s,"journal_id":%s,"fields":%s,"rows":['
                        % (json.dumps(self.device_id), json.dumps(jid), _FIELDS_JSON)).encode()
                buf[pos:pos + len(head)] = head
                pos += len(head)
            elif p.journal_id != jid:
                break  # one journal per batch
            item = json.dumps([p.seq, p.badge, p.kind, p.utc_ms, p.utc_offset_min, QUALITY_NAMES[p.quality],
                               p.uncertainty_ms, p.employee], separators=_SEP).encode()
            need = len(item) + (1 if n else 0) + 2  # comma, and the closing ]}
            if pos + need > len(buf):
                if n == 0:
                    raise ValueError("punch %d does not fit in batch_bytes" % p.seq)
                break
            if n:
                buf[pos] = 0x2C  # ,
                pos += 1
            buf[pos:pos + len(item)] = item
            pos += len(item)
            if n == 0:
                first = p.seq
            last = p.seq
            n += 1
        if n == 0:
            return None
        buf[pos:pos + 2] = b"]}"
        return pos + 2, first, last, jid

    def _check_answer(self, body, first, last, jid):
        try:
            d = json.loads(body)
        except ValueError:
            raise BadAnswer("answer is not JSON")
        if not isinstance(d, dict):
            raise BadAnswer("answer is not an object")
        st = d.get("stored_through")
        if not isinstance(st, int) or isinstance(st, bool):
            raise BadAnswer("answer has no stored_through")
        if d.get("journal_id") != jid or d.get("device_id") != self.device_id:
            raise BadAnswer("answer is for another device or journal")
        if st < first or st > last:
            raise BadAnswer("stored_through %d outside the batch %d..%d" % (st, first, last))
        return st

    async def send_once(self):
        """One attempt: returns 0 when nothing is pending, else the ms to wait before the next attempt."""
        built = self._build()
        if built is None:
            return 0
        end, first, last, jid = built
        body = memoryview(self._buf)[:end]
        refreshed = False
        while True:
            if not await self._ensure_token():
                return self._backoff()
            self.state = SENDING
            r = await self.client.request("POST", "/v1/punches", body,
                                          {"Authorization": "Bearer " + self._token}, room=self.head_room)
            if r.status == 401 and not refreshed:
                self._token = None  # refresh once
                refreshed = True
                continue
            break
        if r.status == 200:
            try:
                st = self._check_answer(r.body, first, last, jid)
            except BadAnswer as e:
                self._error("bad answer: %s" % e)
                return self._backoff()
            self.journal.ack(st)  # durable before we believe it
            self.sent += st - first + 1
            self.batches += 1
            self._failures = 0
            self.last_error = None
            self.rejected_seq = None
            self.last_ok = self.clock.now()[0]
            return 1 if st < last else -1  # -1: sent, look again at once
        if r.status == 413:
            if self.batch_max > 1:
                self.batch_max = max(1, min(self.batch_max, last - first + 1) // 2)
                self._error("HTTP 413: batch halved to %d" % self.batch_max)
                return -1
            r_status = 400  # a single punch too large: as good as rejected
        else:
            r_status = r.status
        if r_status == 400:
            self.state = REJECTED
            self.rejected_seq = first
            self._error("HTTP 400 for seq %d..%d: batch rejected, paused: %s" % (first, last, r.body[:80]))
            return self.rejected_pause_ms
        if r_status == 429:
            ra = r.header("retry-after")
            self._error("HTTP 429")
            if ra is not None and ra.isdigit():
                self.state = BACKOFF
                return max(1, min(int(ra), self.retry_after_max_s) * 1000)
            return self._backoff()
        self._error("HTTP %d" % r_status)
        return self._backoff()

    def _backoff(self):
        self.state = BACKOFF
        self._failures += 1
        d = self.backoff_min_ms << min(self._failures - 1, 20)
        if d > self.backoff_max_ms:
            d = self.backoff_max_ms
        return d // 2 + random.getrandbits(20) % (d // 2 + 1)  # jitter: 50..100 % of the step

    # --- roster pull ---------------------------------------------------------------------------

    def _etag(self, path=None):
        try:
            with open(path or self._etag_path) as f:
                return f.read(200).strip() or None
        except OSError:
            return None

    async def pull_roster(self):
        """Conditional GET of the roster; a 200 is streamed row by row into roster.new, checked and
        swapped in (RosterWriter), then reopened for lookups; the ETag goes to flash after the swap, so
        a reboot asks with it and a cut before leaves the old ETag (the roster is fetched again).
        Returns True when a new roster was applied."""
        if not await self._ensure_token():
            raise https.HTTPError("no token")
        from clockterm.roster import RosterWriter

        hdrs = {"Authorization": "Bearer " + self._token, "Accept": "text/tab-separated-values"}
        etag = self._etag()
        if etag:
            hdrs["If-None-Match"] = etag
        rows = _RowSink(self.roster.path, RosterWriter)
        client = self.client
        t = client.timeout_ms
        client.timeout_ms = self.roster_timeout_ms
        try:
            r = await client.request("GET", "/v1/devices/%s/roster" % self.device_id, None, hdrs, sink=rows.feed)
            if r.status == 401:
                self._token = None
                return False
            if r.status == 304:
                self.roster_error = None
                return False
            if r.status != 200:
                raise https.HTTPError("roster: HTTP %d" % r.status)
            n = rows.finish()  # commit: checked on flash, renamed over roster.bin
        finally:
            client.timeout_ms = t
            rows.abort()  # no-op after a commit; otherwise roster.new goes, the old roster stays
        self.roster.open()  # same loop turn as the rename: no lookup sees a closed roster
        new = r.header("etag")
        if new:
            with open(self._etag_path, "w") as f:
                f.write(new)
        self.roster_pulls += 1
        self.roster_error = None
        log.info("uplink", "roster applied: %d badges" % n)
        return True

    async def _maybe_pull(self):
        if (self._etag_path is None and self._cfg is None) or \
                time.ticks_diff(time.ticks_ms(), self._roster_due) < 0:
            return
        self._roster_due = time.ticks_add(time.ticks_ms(), self.roster_every_ms)
        if self._etag_path is not None:
            try:
                await self.pull_roster()
            except Exception as e:  # the old roster stays in force; punches are not held up by this
                self.roster_error = "roster: %s" % (e,)
                self._error(self.roster_error)
        if self._cfg is not None:
            try:
                await self.pull_config()
            except Exception as e:  # the old overlay stays on flash; the running config is untouched
                self.config_error = "config: %s" % (e,)
                self._error(self.config_error)

    # --- config pull ---------------------------------------------------------------------------

    async def pull_config(self):
        """Conditional GET of the device's config overlay. A 200 is checked over the local config and
        written to config.central.json through a temp file and a rename, only when it changed
        (clockterm.config.save_overlay: the config module is imported for this and unloaded after, so
        that its code costs heap only during a pull); its ETag follows in config.etag after the swap.
        The next boot applies it. Returns True when an overlay was accepted; raises (old overlay kept)
        when it is refused."""
        if not await self._ensure_token():
            raise https.HTTPError("no token")
        path = self._cfg[0]
        etag_path = path[:-len("central.json")] + "etag"  # <fs_root>/config.etag
        hdrs = {"Authorization": "Bearer " + self._token, "Accept": "application/json"}
        etag = self._etag(etag_path)
        if etag:
            hdrs["If-None-Match"] = etag
        client = self.client
        mb = client.max_body
        client.max_body = _CONFIG_MAX_BYTES
        try:
            r = await client.request("GET", "/v1/devices/%s/config" % self.device_id, None, hdrs)
        finally:
            client.max_body = mb
        if r.status == 401:
            self._token = None
            return False
        if r.status == 304:
            self.config_checks += 1
            self.config_error = None
            return False
        if r.status != 200:
            raise https.HTTPError("HTTP %d" % r.status)
        self.config_checks += 1
        body = r.body
        new = r.header("etag")
        r = None
        import sys

        keep = "clockterm.config" in sys.modules  # someone else holds it: leave it loaded
        from clockterm import config  # ~8 KB of code, only while a new overlay is checked and saved

        try:
            old, crc = config.save_overlay(body, *self._cfg)  # refused: raises
        finally:
            body = config = None
            if not keep:
                _unload("clockterm.config")
        if self._cfg_crc == -1:
            self._cfg_crc = old  # only the uplink writes the file: the first pull sees the boot's overlay
        if crc != old:
            self.config_writes += 1
        self.config_pending = crc != self._cfg_crc
        if new:  # after the swap: a cut before it leaves the old ETag, and the overlay is fetched again
            with open(etag_path, "w") as f:
                f.write(new)
        self.config_pulls += 1
        self.config_error = None
        log.info("uplink", "config overlay accepted%s" % (" (applies at the next boot)" if self.config_pending else ""))
        return True

    # --- the task ------------------------------------------------------------------------------

    async def run(self):
        """The supervisor task: never returns, never raises (except cancellation)."""
        while self.client is None:
            await asyncio.sleep(3600)  # disabled until a config with a usable CA (a reboot)
        while True:
            try:
                if self.clock.now()[1] == _Q_UNSYNCED:
                    self.state = WAIT_CLOCK
                    await self._wait(self.interval_ms)
                    continue
                try:
                    wait = await self.send_once()
                except https.HTTPError as e:
                    self._error("connection: %s" % e)
                    wait = self._backoff()
                if wait < 0:
                    self._idle_since = time.ticks_ms()
                    continue
                if wait == 0:
                    await self._maybe_pull()  # only when no punch is waiting
                    self.state = IDLE
                    if self.client.connected and time.ticks_diff(time.ticks_ms(), self._idle_since) > self.idle_close_ms:
                        self.client.close()  # free the TLS session's memory while there is nothing to send
                    await self._wait(self.interval_ms)
                    continue
                self._idle_since = time.ticks_ms()
                await asyncio.sleep_ms(wait)
            except asyncio.CancelledError:
                self.client.close()
                raise
            except Exception as e:  # a bug or a journal error must not kill the supervisor
                self._error("uplink: %r" % (e,))
                await asyncio.sleep_ms(self._backoff())

    async def _wait(self, ms):
        self._wake.clear()
        try:
            await asyncio.wait_for_ms(self._wake.wait(), ms)
        except asyncio.TimeoutError:
            pass


class _RowSink:
    # Assembles the roster answer's lines (badge TAB employee TAB name LF) from the body's pieces into
    # one preallocated line buffer and hands each row to a RosterWriter, created at the first piece
    # (so a 304 or an error answer never touches flash). Rows must arrive badge-sorted.
    max_line = 160

    def __init__(self, path, writer_class):
        self.path = path
        self.cls = writer_class
        self.w = None
        self.line = bytearray(self.max_line)
        self.n = 0

    def feed(self, piece):
        if self.w is None:
            self.w = self.cls(self.path)
        start = 0
        end = len(piece)
        while start < end:
            i = piece.find(b"\n", start)
            stop = end if i < 0 else i
            k = stop - start
            if self.n + k > self.max_line:
                raise ValueError("roster line too long")
            self.line[self.n:self.n + k] = piece[start:stop]
            self.n += k
            if i < 0:
                break
            self._row()
            start = i + 1

    def _row(self):
        n = self.n
        self.n = 0
        if n and self.line[n - 1] == 13:
            n -= 1
        if not n:
            return
        parts = bytes(memoryview(self.line)[:n]).decode().split("\t")
        if len(parts) < 2:
            raise ValueError("roster line without employee id")
        self.w.add(parts[0], parts[1], parts[2] if len(parts) > 2 else "")

    def finish(self):
        if self.n:
            self._row()
        if self.w is None:
            self.w = self.cls(self.path)  # an empty roster is a roster
        w = self.w
        w.commit()
        self.w = None
        return w.count

    def abort(self):
        if self.w is not None:
            self.w.abort()
            self.w = None


def _unload(name):
    # Forget a module imported for a rare job (sys.modules and the package attribute hold it).
    import sys

    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    if pkg in sys.modules and hasattr(sys.modules[pkg], attr):
        delattr(sys.modules[pkg], attr)
