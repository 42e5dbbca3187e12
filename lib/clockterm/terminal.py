# The tap path: badge -> duplicate window -> roster -> event kind -> stamp -> journal -> feedback.
#
# Synchronous on purpose: a tap never awaits anything, so it never waits on the network, the
# endpoint, SNTP or the uplink. The only slow step is the flash write, and the OK feedback is given
# only after it returned (the punch is durable).
#
# In/out state (toggle mode: a person's tap is the opposite of their last punch) is one bit per roster
# entry, in RAM. It is never written anywhere of its own: the journal holds every punch's kind durably,
# so the bits are rebuilt from the journal's punches of the last `shift_max_h` hours (the work-day
# rule: an IN older than that no longer counts, the next tap is an IN), by badge against the roster in
# force. That happens at boot, after a roster swap (indexes change; a badge that stays keeps its
# state), after the first clock sync of a boot, and every _REFRESH_MS so that INs age out while the
# terminal runs. A tap costs no flash beyond its punch. A rebuild runs in small steps from housekeeping
# (step()); a tap that needs the state before the rebuild for the roster in force is done finishes it
# first (restore()), so no tap is decided on a state that does not belong to the roster.

import time
from micropython import const

from clockterm import log, punch
from clockterm.clock import gmtime_ms, iso_ms
from clockterm.journal import JournalFull
from clockterm.roster import normalize_badge

_RECENT = const(16)  # badges remembered for the duplicate window
_SLOT = const(21)  # a remembered badge: its length, then its bytes (at most 20: roster._BADGE)
_SHIFT_MAX_H = const(16)  # the work-day rule when the config sets none (terminal.shift_max_h)
_REFRESH_MS = const(900000)  # in/out state rebuilt this often: an IN ages out within 15 minutes
_STEP_MS = const(10)  # a housekeeping turn spends about this long at most on a rebuild (a loop stall)
_STEP_PUNCHES = const(256)  # and replays at most this many punches (each a roster lookup: a few flash reads)


class Terminal:
    """The tap path. Parts are passed in: clock, journal, roster, tz, indicator, config section."""

    def __init__(self, clock, journal, roster, tz, indicator, cfg):
        self.clock = clock
        self.journal = journal
        self.roster = roster
        self.tz = tz
        self.indicator = indicator
        self.cfg = cfg  # duplicate_window_s, unknown_badge, kind_mode, shift_max_h (optional): read at each tap
        # Duplicate window: the last _RECENT badges recorded, in a ring of fixed slots allocated here
        # (a badge kept as a str object costs 64 bytes of heap, and a dict that grows needs ever larger
        # blocks of a heap that is fragmented after months of running), with their ticks_ms beside.
        self._recent = bytearray(_RECENT * _SLOT)
        self._recent_ms = [0] * _RECENT
        self._slot = 0  # the slot the next punch's badge takes (the oldest)
        self.counts = {"ok": 0, "duplicate": 0, "unknown_denied": 0, "full": 0, "error": 0, "bad": 0}
        self.last_result = ""
        self.on_punch = None  # called after each durable punch (the uplink's kick); must not block
        # Seqs stamped before the first clock sync of this boot, for the correction record.
        self.presync_first = None
        self.presync_last = None
        # In/out state (see the top of this file): one bit per roster entry, for the roster opened
        # `_inside_for` (roster.opened); the rebuild in progress (a generator), when one is.
        self._inside = None
        self._inside_for = -1
        self._replay = None
        self.refresh_at = time.ticks_ms()  # ticks_ms of the next periodic rebuild (set it to now: at the next step)
        self._people = 0  # bits set: people inside
        self._since = None  # the last rebuild's window start (UTC ms)

    # --- the tap ----------------------------------------------------------------------------------

    def tap(self, badge, key=None):
        """Handle one badge read (the raw id); returns the control-port answer line."""
        badge = normalize_badge(badge)
        if badge is None:
            return self._done("bad", "deny", "BAD BADGE READ", "ERR bad badge")
        now = time.ticks_ms()
        b = badge.encode()  # ASCII (normalize_badge), at most 20 bytes
        # The duplicate window: b recorded less than the window ago (its slots: _remember)
        recent = self._recent
        window = self.cfg["duplicate_window_s"] * 1000
        for i in range(_RECENT):
            o = i * _SLOT
            if recent[o] == len(b) and 0 <= time.ticks_diff(now, self._recent_ms[i]) < window \
                    and recent[o + 1:o + 1 + len(b)] == b:
                return self._done("duplicate", "dup", "ALREADY DONE", "DENY duplicate")
        person = self.roster.lookup(badge) if self.roster else None
        if person is None and self.cfg["unknown_badge"] == "deny":
            return self._done("unknown_denied", "deny", "UNKNOWN BADGE", "DENY unknown badge")
        return self._record(badge, b, now, person, self._kind(person, key))

    def _remember(self, b, now):
        # The duplicate window's insert: b takes the oldest slot.
        k = self._slot
        o = k * _SLOT
        self._recent[o] = len(b)
        self._recent[o + 1:o + 1 + len(b)] = b
        self._recent_ms[k] = now
        self._slot = (k + 1) % _RECENT

    def _kind(self, person, key):
        # The event kind: fixed by the config, by a key pressed, or the opposite of the person's state.
        if person is None:
            return "unknown"
        mode = self.cfg["kind_mode"]
        if mode == "in" or mode == "out":
            return mode
        if mode == "keys" and (key == "in" or key == "out"):
            return key
        if self._inside_for != self.roster.opened:
            self.restore()  # a new roster whose rebuild has not finished yet
        i = person[2]
        return "out" if self._inside[i >> 3] & (1 << (i & 7)) else "in"

    def _record(self, badge, b, now, person, kind):
        # Stamp and journal the punch; on success remember it (duplicate window, in/out state).
        utc_ms, quality, unc_ms = self.clock.now()
        offset_min = self.tz.offset_s(utc_ms // 1000) // 60
        try:
            seq = self.journal.append(punch.Punch(utc_ms, badge, kind, quality, unc_ms,
                                                  person[0] if person else None, offset_min))
        except JournalFull:
            log.error("tap", "journal full: punch of %s refused" % badge)
            return self._done("full", "error", "MEMORY FULL", "DENY memory full")
        except Exception as e:  # a flash that fails must give honest feedback, not a crash
            log.exc("tap", e)
            return self._done("error", "error", "ERROR - TRY AGAIN", "ERR journal")
        if self.on_punch:
            self.on_punch()
        if quality == punch.Q_UNSYNCED:
            if self.presync_first is None:
                self.presync_first = seq
            self.presync_last = seq
        self._remember(b, now)
        if person and self._inside_for == self.roster.opened:
            self._people += _set(self._inside, person, kind, person[0] if person else None)
        t = gmtime_ms(utc_ms + offset_min * 60000)
        if person:
            text = "%s %02d:%02d %s" % (kind.upper(), t[3], t[4], person[1])
        else:
            text = "%02d:%02d UNKNOWN BADGE %s" % (t[3], t[4], badge)
        return self._done("ok", "ok", text, "OK %d %s" % (seq, iso_ms(utc_ms)))

    def _done(self, count, code, text, answer):
        # The outcome: its counter, the feedback (buzzer, LEDs, display), the answer line.
        self.counts[count] += 1
        self.last_result = text
        self.indicator.feedback(code, text)
        return answer

    # --- housekeeping -----------------------------------------------------------------------------

    def expire(self):
        """Forget the badges whose duplicate window is over. Called by housekeeping every few seconds:
        ticks_ms wraps (every ~12 days on an ESP32), so a slot left for days would look recent again
        and refuse a real punch as a duplicate."""
        now = time.ticks_ms()
        window = self.cfg["duplicate_window_s"] * 1000
        for i in range(_RECENT):
            if not 0 <= time.ticks_diff(now, self._recent_ms[i]) < window:
                self._recent[i * _SLOT] = 0  # an empty slot: no badge has length 0

    def step(self):
        """Housekeeping's turn (every few tens of ms): a small step of the in/out state's rebuild (at most
        _STEP_PUNCHES punches or about _STEP_MS), started when the roster is new (at boot, after a swap)
        or the periodic refresh is due (see the top of this file)."""
        if self._replay is None:
            if self.roster is None or self._inside_for == self.roster.opened and \
                    time.ticks_diff(time.ticks_ms(), self.refresh_at) < 0:
                return
            self._replay = self._rebuild()
        t0 = time.ticks_ms()
        try:
            for _ in range(_STEP_PUNCHES):
                next(self._replay)
                if time.ticks_diff(time.ticks_ms(), t0) >= _STEP_MS:
                    break
        except StopIteration:
            self._replay = None

    def restore(self):
        """Rebuild the in/out state now, to the end (at boot; or a tap that needs it after a swap)."""
        if self.roster is None:
            return
        r = self._replay
        if r is None or self._inside_for != self.roster.opened:
            r = self._rebuild()
        self._replay = None
        for _ in r:
            pass
        if self._inside_for != self.roster.opened:  # a rebuild left unfinished for an older roster
            for _ in self._rebuild():
                pass

    def _rebuild(self):
        # A generator: the in/out bits for the roster in force from the journal's punches of the last
        # shift_max_h hours, yielding after each punch; installed at the end, after the
        # punches appended meanwhile were replayed too (no yield between that and the install, so no
        # tap falls in between). Given up when the roster is swapped meanwhile.
        # A journal (or roster file) that cannot be read leaves everyone outside until the next rebuild,
        # said in the log: taps go on.
        roster = self.roster
        opened = roster.opened
        bits = bytearray((roster.count + 7) // 8)
        since = None
        try:
            after, since = self.journal.recent((self.cfg.get("shift_max_h") or _SHIFT_MAX_H) * 3600000,
                                               self.clock.now()[0])
            for p in self.journal.pending(after):
                after = p.seq
                if p.utc_ms >= since and (p.kind == "in" or p.kind == "out"):
                    _set(bits, roster.lookup(p.badge), p.kind, p.employee)
                yield
                if roster.opened != opened:
                    return
            for p in self.journal.pending(after):
                if p.utc_ms >= since and (p.kind == "in" or p.kind == "out"):
                    _set(bits, roster.lookup(p.badge), p.kind, p.employee)
        except Exception as e:
            log.exc("tap", e)
            bits = bytearray(len(bits))
        n = 0
        for x in bits:
            while x:
                n += x & 1
                x >>= 1
        self._inside = bits
        self._inside_for = opened
        self.refresh_at = time.ticks_add(time.ticks_ms(), _REFRESH_MS)
        self._people = n
        self._since = since

    def status(self):
        # inside: people inside (toggle mode); inside_since_ms: what that is based on, their punches since
        # then (UTC ms: the last rebuild's window start; None until the first rebuild of this boot is done).
        return dict(counts=self.counts, last_result=self.last_result, inside=self._people,
                    inside_since_ms=self._since)


def _set(bits, person, kind, employee):
    # A person's in/out bit from a punch of theirs (person: the roster lookup of the punch's badge, None
    # when not in the roster; employee: the punch's employee id); returns the change in people inside
    # (1, -1 or 0). A punch counts for the badge's holder now only when it was theirs: a badge given to
    # someone else since must not hand them its last holder's in/out state.
    if person is None or person[0] != employee:
        return 0
    i = person[2]
    m = 1 << (i & 7)
    was = bits[i >> 3] & m
    if kind == "in":
        bits[i >> 3] |= m
        return 0 if was else 1
    if kind == "out":
        bits[i >> 3] &= ~m & 0xFF
        return -1 if was else 0
    return 0
