# The tap path: badge -> duplicate window -> roster -> event kind -> stamp -> journal -> feedback.
#
# Synchronous on purpose: a tap never awaits anything, so it never waits on the network, the
# endpoint, SNTP or the uplink. The only slow step is the flash write, and the OK feedback is given
# only after it returned (the punch is durable).

import time
from micropython import const

from clockterm import epoch, log
from clockterm.journal import JournalFull
from clockterm.punch import Punch

_RECENT = const(16)  # badges remembered for the duplicate window (a ring, allocated once)
_BADGE_MAX = const(20)


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
        self.window_ms = cfg["duplicate_window_s"] * 1000
        self.unknown_policy = cfg["unknown_badge"]
        self.kind_mode = cfg["kind_mode"]
        # Duplicate window: a fixed ring of the last _RECENT badges recorded and their ticks_ms.
        # Fixed structures, because a dict that grows needs ever larger blocks of a heap that is
        # fragmented after months of running.
        self._recent = [None] * _RECENT
        self._recent_t = [0] * _RECENT
        self._recent_i = 0
        # In/out state for toggling: one bit per roster entry ("inside"), per boot.
        self._inside = bytearray(0)
        self._roster_gen = 0
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
        now = time.ticks_ms()
        recent = self._recent
        for i in range(_RECENT):
            if recent[i] == badge and time.ticks_diff(now, self._recent_t[i]) < self.window_ms:
                self.counts["duplicate"] += 1
                self._feedback("dup", "ALREADY DONE")
                return "DENY duplicate"
        person = self.roster.lookup(badge) if self.roster else None
        if person is None and self.unknown_policy == "deny":
            self.counts["unknown_denied"] += 1
            self._feedback("deny", "UNKNOWN BADGE")
            return "DENY unknown badge"
        mode = self.kind_mode
        if person is None:
            kind = "unknown"
        elif mode == "in" or mode == "out":
            kind = mode
        elif mode == "keys" and key in ("in", "out"):
            kind = key
        else:  # toggle (and keys without a key pressed): the opposite of this badge's last punch
            kind = "out" if self._is_inside(person[2]) else "in"
        utc_ms, quality, unc_ms = self.clock.now()
        offset_min = self.tz.offset_s(utc_ms // 1000) // 60
        p = Punch(utc_ms, badge, kind, quality, unc_ms, person[0] if person else None, offset_min)
        try:
            seq = self.journal.append(p)
        except JournalFull:
            self.counts["full"] += 1
            log.error("tap", "journal full: punch of %s refused" % badge)
            self._feedback("error", "MEMORY FULL")
            return "DENY memory full"
        except Exception as e:  # a flash that fails must give honest feedback, not a crash
            self.counts["error"] += 1
            log.exc("tap", e)
            self._feedback("error", "ERROR - TRY AGAIN")
            return "ERR journal"
        self.counts["ok"] += 1
        if self.on_punch:
            self.on_punch()
        if quality == 0:
            if self.presync_first is None:
                self.presync_first = seq
            self.presync_last = seq
        # Remember the badge for the duplicate window, and the person's in/out state.
        i = self._recent_i
        recent[i] = badge
        self._recent_t[i] = now
        self._recent_i = (i + 1) % _RECENT
        if person is not None and kind in ("in", "out"):
            self._is_inside(person[2])  # sizes the bits for the current roster
            i = person[2]
            if kind == "in":
                self._inside[i >> 3] |= 1 << (i & 7)
            else:
                self._inside[i >> 3] &= ~(1 << (i & 7)) & 0xFF
        t = epoch.gmtime_ms(utc_ms + offset_min * 60000)
        if person:
            self._feedback("ok", "%s %02d:%02d %s" % (kind.upper(), t[3], t[4], person[1]))
        else:
            self._feedback("ok", "%02d:%02d UNKNOWN BADGE %s" % (t[3], t[4], badge))
        return "OK %d %s" % (seq, epoch.iso_ms(utc_ms))

    def _is_inside(self, index):
        bits = self._inside
        if self._roster_gen != self.roster.generation:
            bits = bytearray(0)  # a new roster: its indexes mean other people
            self._roster_gen = self.roster.generation
        if len(bits) * 8 < self.roster.count:
            # The roster grew (or this is the first lookup): one bit per entry, allocated once.
            self._inside = bits = bytearray((self.roster.count + 7) // 8)
        return bits[index >> 3] & (1 << (index & 7))

    def _feedback(self, code, text):
        self.last_result = text
        self.indicator.feedback(code, text)

    def status(self):
        return {"counts": self.counts, "last_result": self.last_result}
