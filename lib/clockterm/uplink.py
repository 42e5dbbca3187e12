# Uplink supervisor: sends journaled punches to the central API in batches; acks only what is stored.
#
# One task that never dies. It waits for a valid clock (TLS checks certificate dates), gets an OAuth2
# client-credentials token, POSTs pending punches from the journal (after the durable ack point) to
# /v1/punches in batches bounded by count and bytes, streamed through one small request buffer, and
# moves the journal's durable ack only through the `stored_through` the server answered, and only when that
# seq lies inside the batch just sent. Errors follow docs/central-api.yaml: 401 refresh the token
# once; 413 halve the batch; 429 wait Retry-After; 400: the batch halved until the punch refused is
# alone (those before it leave), that one kept aside on flash (a file in fs_root + _ASIDE), acked in
# the journal so that the rest go on, and offered again with the pulls, every _ROSTER_EVERY_MS, until
# the central takes it (docs/uplink.md, "Refused punches"); one that cannot be kept aside holds its
# batch back, paused long (alert); other failures back off exponentially with jitter, capped. The tap
# path never waits on any of this.
# When idle it also pulls the roster and the central's config overlay (clockterm.pulls, loaded for them).
#
# Heap: one class; the status counters are attributes, and status() makes its document with keyword
# names (a dict literal's keys over 9 characters are string constants, ~40 B each); fixed limits are
# const() (no names, no dict entries); no asyncio.Event (its module costs about 1 KB): kick() sets a
# flag that the idle wait looks at every _KICK_MS. Attribute and argument names reuse names the
# firmware interns anyway where they fit (fs_root, config_path, failures ...).

import asyncio
import json
import os
import random
import time
from micropython import const

from clockterm import OutBuf, forget, https, log
from clockterm.punch import QUALITY, Q_UNSYNCED

_TOKEN_MARGIN_MS = const(30000)  # refresh a token this long before it expires
_TOKEN_DEFAULT_S = const(3600)  # a token's lifetime when the answer gives no expires_in
# A token is used for a day at most, however long it lives: its expiry is a ticks value, and on an
# ESP32 ticks_add refuses a step of 2**29 ms (6.2 days) or more (ticks wrap at 2**30)
_TOKEN_MAX_S = const(86400)
_TOKEN_MAX_LEN = const(2048)  # characters of an access token (it goes into every request's head)
_BATCH_BYTES = const(1536)  # the request buffer allocated when the creator lends none
_HEAD_ROOM = const(320)  # bytes in front of the body for the HTTP head (a batch that fits the buffer is
#                          one write; a longer head, e.g. a huge token, falls back to a write of its own)
_BODY_MAX = const(16384)  # bytes of a batch's body at most (far below what a central refuses with 413)
_TURN_ROWS = const(32)  # punches sized per event-loop turn (about what a piece of the buffer holds)
_CHANGED = const("journal changed")
_RETRY_AFTER_MAX_S = const(900)  # cap on a server's Retry-After
_IDLE_CLOSE_MS = const(20000)  # close the kept-alive connection after this long with nothing to send
_KICK_MS = const(50)  # the idle wait sees a kick() within this
_ROSTER_EVERY_MS = const(300000)  # conditional pulls (roster, config) this often (unchanged: a 304)
_ASIDE = const("/refused/")  # in fs_root: a file per punch the central refused, "<journal id>.<seq>": its row
# A batch's JSON up to its first row: device, journal, and the columns of the rows in order
# (docs/central-api.yaml, PunchBatch.fields)
_BATCH_HEAD = const('{"device_id":%s,"journal_id":%s,"fields":["seq","badge","kind","utc_ms","utc_offset_min",'
                    '"quality","uncertainty_ms","employee_id"],"rows":[')

# states reported by status()
_IDLE = const("idle")
_WAIT_CLOCK = const("waiting_clock")
_SENDING = const("sending")
_BACKOFF = const("backoff")
_REJECTED = const("rejected")
_DISABLED = const("disabled")  # no usable CA or URL in the config


def _batch_head(device_id, jid):
    # The batch's JSON up to its first row (bytes)
    return (_BATCH_HEAD % (json.dumps(device_id), json.dumps(jid))).encode()


def _row(p):
    # A punch as a compact row (bytes), in the order of _BATCH_HEAD's fields: the one encoding of both
    # passes of Uplink._build, whose Content-Length depends on their giving the same bytes.
    return json.dumps([p.seq, p.badge, p.kind, p.utc_ms, p.utc_offset_min, QUALITY[p.quality],
                       p.uncertainty_ms, p.employee], separators=(",", ":")).encode()

class Uplink:
    """Supervisor for one central API. Tunables are attributes (units in the names):

    batch_max          punches per request (config central.batch_max; halved on 413, min 1); a batch
                       is also cut at _BODY_MAX bytes of body
    interval_ms        idle poll for new punches (config central.interval_s); a kick() ends the wait
                       within _KICK_MS
    backoff_min_ms / backoff_max_ms    exponential backoff range (jittered 50..100 %)
    rejected_pause_ms  pause after a 400 before the same batch is offered again, when its refused punch
                       cannot be kept aside (no fs_root, 32 kept: pulls._ASIDE_MAX, a flash error)
    Fixed limits are the _CONSTANTS above (head room, Retry-After cap, idle close, pull schedule).

    buf: the answer buffer (a clockterm.OutBuf, shared with the app's other users: its rule for
    streamed bodies); when None, one of _BATCH_BYTES is allocated here, at boot, while the heap still
    has large free blocks. A batch larger than it goes through it in pieces (_build, driven by
    https.Client.request); its size only sets how many writes a batch takes (a retry builds the batch
    again).
    """

    batch_max = 200
    interval_ms = 5000
    backoff_min_ms = 1000
    backoff_max_ms = 300000
    rejected_pause_ms = 3600000

    def __init__(self, journal, clock, device_id, url, client_id, client_secret, cadata=None, cafile=None,
                 batch_max=None, interval_s=None, client=None, roster=None, fs_root=None, config_path=None,
                 good_config_path=None, buf=None):
        self.journal = journal
        self.clock = clock
        self.device_id = device_id
        self.client_id = client_id
        self.client_secret = client_secret
        # The status (status() makes the document; its names are keyword names, not string constants
        # that would each cost heap); the counters are this boot's
        self.state = _IDLE
        self.last_error = None
        self.last_ok = None  # utc_ms of the last stored batch
        self.sent = 0  # punches acknowledged by the server
        self.batches = 0  # requests answered 200
        self.rejected_seq = None  # the seq of the punch last refused (400), or the batch's first when paused
        self.limit = 0  # while a refused punch is looked for: punches per batch (0: batch_max)
        self.refused = 0  # punches kept aside (the files in fs_root + _ASIDE; clockterm.pulls keeps them)
        self.roster_pulls = 0  # roster answers 200 applied
        self.roster_error = None
        self.config_checks = 0  # config answers 200 or 304
        self.config_pulls = 0  # new overlays accepted (200, valid)
        self.config_writes = 0  # of those, written to flash (a changed overlay)
        self.config_error = None
        # Pulls from central (docs/uplink.md), ETags on flash in fs_root: the roster, when one is given
        # to keep current; the config overlay, when the local config's path is known (checked against
        # it, kept on flash for the next boot, which applies it).
        self.fs_root = fs_root
        try:
            self.refused = len(os.listdir(fs_root + _ASIDE))
        except (OSError, TypeError):  # none kept, or no fs_root
            pass
        self.roster = roster if fs_root is not None else None  # ("": the root, an ESP32's)
        self.config_path = config_path if config_path and fs_root is not None else None
        self.good_config_path = good_config_path
        self._cfg_crc = -1  # CRC of the overlay this boot started with (None: none), known at the first 200
        self.config_pending = False  # the overlay on flash differs from the one this boot started with
        self._next_at = time.ticks_ms()  # next pulls: the first as soon as the clock is valid
        self.client = None
        try:
            self.client = client or https.Client(url, cadata=cadata, cafile=cafile)
        except (OSError, ValueError) as e:
            # No usable CA or URL: punches stay safe in the journal, the uplink says why it idles.
            self.state = _DISABLED
            self.last_error = msg = "central: %s (%s)" % (e, cafile or url)
            log.error("uplink", msg)
        if batch_max:
            self.batch_max = batch_max
        if interval_s:
            self.interval_ms = interval_s * 1000
        self._out = buf or OutBuf(_BATCH_BYTES)
        self._batch = None  # (first seq, last seq, journal id) of the batch last built
        self.token = None  # the bearer token while one is held
        self._token_exp = 0  # ticks_ms when the token stops being used
        self._kicked = False
        self.failures = 0  # attempts failed in a row (the backoff step)
        self._idle_since = time.ticks_ms()

    def kick(self):
        """A punch was journaled: send soon (never blocks)."""
        self._kicked = True

    def status(self):
        """The status document, made at each call."""
        j = self.journal
        c = self.client
        return dict(state=self.state, backlog=j.last_seq - j.acked_seq, last_error=self.last_error,
                    last_ok=self.last_ok, sent=self.sent, batches=self.batches, batch_max=self.batch_max,
                    connections=c.connections if c else 0, requests=c.requests if c else 0,
                    rejected_seq=self.rejected_seq, refused=self.refused, roster_pulls=self.roster_pulls,
                    roster_error=self.roster_error,
                    config_checks=self.config_checks, config_pulls=self.config_pulls,
                    config_writes=self.config_writes, config_pending=self.config_pending,
                    config_error=self.config_error)

    def _error(self, msg):
        self.last_error = msg
        log.warn("uplink", msg)

    # --- token ---------------------------------------------------------------------------------

    async def ensure_token(self):
        if self.token is not None and time.ticks_diff(self._token_exp, time.ticks_ms()) > 0:
            return True
        self.token = None
        # Client credentials, form-encoded: RFC 3986 unreserved characters pass, the others as %XX
        # (built as bytes: a one-character string made at run time, chr(), is interned for good, and a
        # secret's characters could grow the interned-name pool by a whole new pool: docs/heap.md)
        form = []
        for value in (self.client_id, self.client_secret):
            v = bytearray()
            for ch in value.encode():
                if 48 <= ch <= 57 or 65 <= ch <= 90 or 97 <= ch <= 122 or ch in b"-._~":
                    v.append(ch)
                else:
                    v.extend(b"%%%02X" % ch)
            form.append(v.decode())
        form = "grant_type=client_credentials&client_id=%s&client_secret=%s" % tuple(form)
        status, _, body = await self.client.request(
            "POST", "/v1/oauth/token", form.encode(), "Content-Type: application/x-www-form-urlencoded\r\n")
        if status != 200:
            self._error("token: HTTP %d" % status)
            return False
        try:
            d = json.loads(body)
            tok = d.get("access_token")
            ttl = d.get("expires_in")
        except (ValueError, AttributeError):  # not JSON, not an object
            tok = ttl = None
        # The token goes into every request's head: visible ASCII only (b64token, RFC 6750), so that
        # it can never end the Authorization line and add a header of its own
        if isinstance(tok, str) and 0 < len(tok) <= _TOKEN_MAX_LEN:
            b = tok.encode()
            if min(b) < 33 or max(b) > 126:
                tok = None
        else:
            tok = None
        if tok is None:
            self._error("token: malformed answer")
            return False
        # expires_in: seconds, a positive number (an int, a float, or digits in a string); huge values
        # (1e999 is inf) are cut to _TOKEN_MAX_S; none means _TOKEN_DEFAULT_S; anything else (a bool,
        # zero or less, NaN, text) refuses the answer
        if ttl is None:
            ttl = _TOKEN_DEFAULT_S
        elif isinstance(ttl, str) and ttl.isdigit():
            ttl = int(ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            self._error(("token: bad expires_in %r" % (ttl,))[:60])
            return False
        ttl_ms = int(min(ttl, _TOKEN_MAX_S) * 1000)
        self.token = tok
        self._token_exp = time.ticks_add(time.ticks_ms(), max(1000, ttl_ms - _TOKEN_MARGIN_MS)
                                         if ttl_ms > 2 * _TOKEN_MARGIN_MS else ttl_ms // 2)
        return True

    # --- batch ---------------------------------------------------------------------------------

    def _build(self):
        """The batch as a streamed body for https.Client.request (docs/uplink.md, "The batch"): a
        generator that gives None while it sizes the batch (a turn of the event loop after each
        _TURN_ROWS punches), then the body's length in bytes, then the body in pieces, each a view of
        the answer buffer built in the turn it is given (clockterm.OutBuf's rule; the first with
        _HEAD_ROOM bytes in front, where the client writes the HTTP head, so that a batch that fits the
        buffer leaves in one write). The batch's (first seq, last seq, journal id) go to self._batch.

        Punches go as compact rows (the "fields" order, see docs/central-api.yaml), about 55 bytes
        each. A batch is bounded by batch_max punches, one journal and _BODY_MAX bytes, not by the
        buffer. Both passes read the journal with a new reader each turn (none lives across the
        client's awaits) and do about a buffer's worth of punches a turn, so a large batch does not
        stall the loop (the tap path). Nothing changes the pending punches between the passes (the
        uplink sends only once the clock is synced, and the presync corrections are made at the first
        sync); if a row came out otherwise anyway, the client's length check aborts the request, and
        the batch goes again from the same ack point.
        """
        # Sizing: the rows' bytes, nothing in the buffer (so the loop may run between turns)
        size = 2  # the body's bytes: the closing ]} and the rest as they come
        n = first = last = 0
        jid = None
        most = min(self.limit, self.batch_max) if self.limit else self.batch_max
        while True:
            n0 = n
            lim = min(_TURN_ROWS, most - n)
            for p in self.journal.pending(last if n else None, lim):
                if jid is None:
                    jid = p.journal_id
                    first = p.seq
                    size += len(_batch_head(self.device_id, jid))  # not kept: made again below
                elif p.journal_id != jid:
                    break  # one journal per batch
                k = len(_row(p)) + (1 if n else 0)  # and the comma before it
                if n and size + k > _BODY_MAX:
                    break
                size += k
                last = p.seq
                n += 1
            p = None
            if n - n0 < lim or n >= most:
                break  # the journal, the batch or the body ended
            yield None
        if n == 0:
            raise ValueError("no punch pending")  # only the uplink acks: cannot follow a pending peek
        self._batch = first, last, jid
        yield size
        # The pieces: rows read again after the last one given, whole rows only in each
        out = self._out.reset()
        out.n = _HEAD_ROOM
        out.write(_batch_head(self.device_id, jid))
        after = None  # the seq of the last row given
        while True:
            for p in self.journal.pending(after, n):
                mark = out.n
                try:
                    if after is not None:
                        out.write(b",")
                    out.write(_row(p))
                except ValueError:  # full: the row starts the next piece
                    out.n = mark
                    if not mark:
                        raise ValueError("punch %d does not fit in the request buffer" % p.seq)
                    break
                after = p.seq
                n -= 1
            else:
                if n:
                    raise ValueError(_CHANGED)
            p = None  # not held across the client's awaits
            if not n:
                break
            yield out.view()
            out.reset()
        if after != last:
            raise ValueError(_CHANGED)
        try:
            out.write(b"]}")
        except ValueError:
            yield out.view()
            out.reset().write(b"]}")
        yield out.view()

    async def send_once(self, body=None):
        """One attempt: returns 0 when nothing is pending, else the ms to wait before the next attempt
        (-1: look again at once). body: the row of a punch kept aside, offered again (its seq and
        journal in self._batch), instead of the journal's pending punches."""
        line = body
        for _ in () if line else self.journal.pending(None, 1):
            break
        else:
            if not line:
                return 0
        refreshed = False
        while True:
            if not await self.ensure_token():
                return self._backoff()
            self.state = _SENDING
            # The batch is streamed by the client, each piece built right before its write (see `buf`)
            status, hdrs, body = await self.client.request(
                "POST", "/v1/punches", self._build if line is None else
                _batch_head(self.device_id, self._batch[2]) + line + b"]}",
                "Authorization: Bearer %s\r\nContent-Type: application/json\r\n" % self.token,
                room=0 if line else _HEAD_ROOM)
            if status == 401 and not refreshed:
                self.token = None  # refresh once
                refreshed = True
                continue
            break
        first, last, jid = self._batch
        if status == 200:
            # The answer must name a seq inside this batch, for this device and journal
            try:
                d = json.loads(body)
                stored = d.get("stored_through")
                other = d.get("journal_id") != jid or d.get("device_id") != self.device_id
            except (ValueError, AttributeError):  # not JSON, not an object
                d = None
            if d is None:
                why = "bad answer: not a JSON object"
            elif not isinstance(stored, int) or isinstance(stored, bool):
                why = "bad answer: no stored_through"
            elif other:
                why = "bad answer: for another device or journal"
            elif not first <= stored <= last:
                why = "bad answer: stored_through %d outside the batch %d..%d" % (stored, first, last)
            else:
                why = None
            if why is not None:
                self._error(why)
                return self._backoff()
            if line is None:
                self.journal.ack(stored)  # durable before we believe it
                if self.limit:  # looking for a refused punch: back to whole batches step by step
                    self.limit = 0 if self.limit * 2 >= self.batch_max else self.limit * 2
            else:  # the punch kept aside is stored at last
                os.remove(self.fs_root + _ASIDE + jid + "." + str(first))
            self.sent += stored - first + 1
            self.batches += 1
            self.failures = 0
            self.last_error = None
            self.rejected_seq = None
            self.last_ok = self.clock.now()[0]
            return 1 if stored < last else -1  # -1: sent, look again at once
        if status == 413:
            if self.batch_max > 1 and line is None:
                self.batch_max = max(1, min(self.batch_max, last - first + 1) // 2)
                self._error("HTTP 413: batch halved to %d" % self.batch_max)
                return -1
            status = 400  # a single punch too large: as good as rejected
        if status == 400:
            if line is not None:  # kept aside, refused again: offered again with the next pulls
                self._error("HTTP 400 for seq %d (kept aside) again: %s" % (first, bytes(body[:80])))
                return 0
            self.rejected_seq = first
            from clockterm import pulls  # (its code in the heap only meanwhile: _aside forgets it)

            return pulls._aside(self, first, last, jid, bytes(body[:80]))
        if status == 429:
            ra = hdrs.get("retry-after")
            self._error("HTTP %d" % status)
            if ra is not None and ra.isdigit():
                self.state = _BACKOFF
                return max(1, min(int(ra), _RETRY_AFTER_MAX_S) * 1000)
            return self._backoff()
        self._error("HTTP %d" % status)
        return self._backoff()

    def _backoff(self):
        self.state = _BACKOFF
        self.failures += 1
        d = self.backoff_min_ms << min(self.failures - 1, 20)
        if d > self.backoff_max_ms:
            d = self.backoff_max_ms
        return d // 2 + random.getrandbits(20) % (d // 2 + 1)  # jitter: 50..100 % of the step

    # --- pulls: roster and config (clockterm.pulls) -------------------------------------------

    async def pulls(self):
        """The pulls that are configured (roster, config overlay; not while a batch is paused), then the
        punches kept aside offered again, with the code of clockterm.pulls, imported for them and
        forgotten after: it takes heap only while it runs. A failed pull, its code not loaded included
        (a MemoryError on a cut-up heap), keeps the old roster or overlay in force, with its error in
        roster_error or config_error; it is not an uplink failure."""
        paused = self.state == _REJECTED
        try:
            if self.refused:
                from clockterm import pulls

                await pulls._replay(self)
            if paused:
                return
            if self.roster is not None:
                try:
                    from clockterm import pulls

                    await pulls.pull_roster(self)
                except Exception as e:
                    self.roster_error = "%s: %s" % ("roster", e)
                    self._error(self.roster_error)
            if self.config_path is not None:
                try:
                    from clockterm import pulls

                    await pulls.pull_config(self)
                except Exception as e:
                    self.config_error = "%s: %s" % ("config", e)
                    self._error(self.config_error)
        finally:
            forget("clockterm.pulls")

    # --- the task ------------------------------------------------------------------------------

    async def run(self):
        """The supervisor task: never returns, never raises (except cancellation)."""
        while self.client is None:
            await asyncio.sleep(3600)  # disabled until a config with a usable CA (a reboot)
        while True:
            try:
                if self.clock.now()[1] == Q_UNSYNCED:
                    self.state = _WAIT_CLOCK
                else:
                    try:
                        wait = await self.send_once()
                    except https.HTTPError as e:
                        self._error("connection: %s" % e)
                        wait = self._backoff()
                    # Nothing to send, or a batch paused (its punch found no room to be kept aside): the
                    # pulls (not while paused) and the punches kept aside, when due. A failed pull keeps
                    # the old roster or overlay in force, and holds up no punch.
                    paused = self.state == _REJECTED
                    if (not wait or paused) and time.ticks_diff(time.ticks_ms(), self._next_at) >= 0:
                        self._next_at = time.ticks_add(time.ticks_ms(), _ROSTER_EVERY_MS)
                        n = self.refused
                        await self.pulls()
                        if paused:  # room made: the paused batch at once; else the pause goes on
                            wait = -1 if self.refused < n else wait
                            self.state = _IDLE if self.refused < n else _REJECTED
                    if wait:
                        # Sent (-1: look again at once), or a backoff, a pause, a Retry-After to wait out
                        self._idle_since = time.ticks_ms()
                        if wait > 0:
                            await asyncio.sleep_ms(wait)
                        continue
                    self.state = _IDLE
                    if time.ticks_diff(time.ticks_ms(), self._idle_since) > _IDLE_CLOSE_MS:
                        self.client.close()  # free the TLS session's memory while there is nothing to send
                # Wait: up to interval_ms, or until a kick() (also one that came while busy)
                t0 = time.ticks_ms()
                while not self._kicked and time.ticks_diff(time.ticks_ms(), t0) < self.interval_ms:
                    await asyncio.sleep_ms(_KICK_MS)
                self._kicked = False
            except asyncio.CancelledError:
                self.client.close()
                raise
            except Exception as e:  # a bug or a journal error must not kill the supervisor
                self._error("uplink: %r" % (e,))
                await asyncio.sleep_ms(self._backoff())
