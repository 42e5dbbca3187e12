# The tap path: badge -> duplicate window -> roster -> event kind -> stamp -> journal -> feedback.
#
# Synchronous on purpose: a tap never awaits anything, so it never waits on the network, the
# endpoint, SNTP or the uplink. The only slow step is the flash write, and the OK feedback is given
# only after it returned (the punch is durable).

import time
from micropython import const

from clockterm import log
from clockterm.clock import gmtime_ms, iso_ms
from clockterm.journal import JournalFull
from clockterm.punch import Q_UNSYNCED, Punch

_RECENT = const(16)  # badges remembered for the duplicate window
_BADGE_MAX = const(20)
_SLOT = const(21)  # a remembered badge: its length, then its bytes


def normalize_badge(raw):
    """Upper-case, trimmed badge id, or None when it is not a plausible badge."""
    b = raw.strip().upper()
    if not 1 <= len(b) <= _BADGE_MAX:
        return None
    for c in b:
        if c not in "0123456789ABCDEF:GHIJKLMNOPQRSTUVWXYZ-":
            return None
    return b


class Terminal:
    """The tap path. Parts are passed in: clock, journal, roster, tz, indicator, config section."""

    def __init__(self, clock, journal, roster, tz, indicator, cfg):
        self.clock = clock
        self.journal = journal
        self.roster = roster
        self.tz = tz
        self.indicator = indicator
        self.cfg = cfg  # duplicate_window_s, unknown_badge, kind_mode: read at each tap
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

    def tap(self, badge, key=None):
        """Handle one badge read (the raw id); returns the control-port answer line."""
        badge = normalize_badge(badge)
        if badge is None:
            self.counts["bad"] += 1
            return "ERR bad badge"
        cfg = self.cfg
        now = time.ticks_ms()
        recent = self._recent
        b = badge.encode()  # ASCII (normalize_badge), at most _BADGE_MAX bytes
        n = len(b)
        dup = False
        window = cfg["duplicate_window_s"] * 1000
        for i in range(_RECENT):
            o = i * _SLOT
            if recent[o] == n and 0 <= time.ticks_diff(now, self._recent_ms[i]) < window \
                    and recent[o + 1:o + 1 + n] == b:
                dup = True
                break
        person = None if dup or not self.roster else self.roster.lookup(badge)
        # The outcome: its counter, feedback code and display text, and the answer line.
        if dup:
            count = "duplicate"
            code = "dup"
            text = "ALREADY DONE"
            answer = "DENY duplicate"
        elif person is None and cfg["unknown_badge"] == "deny":
            count = "unknown_denied"
            code = "deny"
            text = "UNKNOWN BADGE"
            answer = "DENY unknown badge"
        else:
            if person is not None:
                # In/out state for toggling: one bit per roster entry, kept with the roster file.
                inside = self.roster.inside
                if inside is None:
                    inside = self.roster.inside = bytearray((self.roster.count + 7) // 8)
                i = person[2] >> 3
                bit = 1 << (person[2] & 7)
            mode = cfg["kind_mode"]
            if person is None:
                kind = "unknown"
            elif mode == "in" or mode == "out":
                kind = mode
            elif mode == "keys" and (key == "in" or key == "out"):
                kind = key
            else:  # toggle (and keys without a key pressed): the opposite of this badge's last punch
                kind = "out" if inside[i] & bit else "in"
            utc_ms, quality, unc_ms = self.clock.now()
            offset_min = self.tz.offset_s(utc_ms // 1000) // 60
            try:
                seq = self.journal.append(Punch(utc_ms, badge, kind, quality, unc_ms, person[0] if person else None,
                                                offset_min))
            except JournalFull:
                log.error("tap", "journal full: punch of %s refused" % badge)
                count = "full"
                code = "error"
                text = "MEMORY FULL"
                answer = "DENY memory full"
            except Exception as e:  # a flash that fails must give honest feedback, not a crash
                log.exc("tap", e)
                count = code = "error"
                text = "ERROR - TRY AGAIN"
                answer = "ERR journal"
            else:
                if self.on_punch:
                    self.on_punch()
                if quality == Q_UNSYNCED:
                    if self.presync_first is None:
                        self.presync_first = seq
                    self.presync_last = seq
                # Remember the badge for the duplicate window, and the person's in/out state.
                k = self._slot
                o = k * _SLOT
                recent[o] = n
                recent[o + 1:o + 1 + n] = b
                self._recent_ms[k] = now
                self._slot = (k + 1) % _RECENT
                if kind == "in" and person:
                    inside[i] |= bit
                elif kind == "out" and person:
                    inside[i] &= ~bit & 0xFF
                t = gmtime_ms(utc_ms + offset_min * 60000)
                if person:
                    text = "%s %02d:%02d %s" % (kind.upper(), t[3], t[4], person[1])
                else:
                    text = "%02d:%02d UNKNOWN BADGE %s" % (t[3], t[4], badge)
                count = code = "ok"
                answer = "OK %d %s" % (seq, iso_ms(utc_ms))
        self.counts[count] += 1
        self.last_result = text
        self.indicator.feedback(code, text)
        return answer

    def expire(self):
        """Forget the badges whose duplicate window is over. Called by housekeeping every few seconds:
        ticks_ms wraps (every ~12 days on an ESP32), so a slot left for days would look recent again
        and refuse a real punch as a duplicate."""
        now = time.ticks_ms()
        window = self.cfg["duplicate_window_s"] * 1000
        for i in range(_RECENT):
            if not 0 <= time.ticks_diff(now, self._recent_ms[i]) < window:
                self._recent[i * _SLOT] = 0  # an empty slot: no badge has length 0

    def status(self):
        return dict(counts=self.counts, last_result=self.last_result)
