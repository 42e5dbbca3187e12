# Local time from POSIX TZ strings (with DST rules): for the display, work-day rules and punch offsets.
#
# Storage and the wire are UTC; this module only gives the offset of local time at a UTC instant
# (local civil time is then clock.gmtime_ms(utc_ms + offset_s * 1000)). The calendar arithmetic of
# the DST rules is done here on integers (days from 1970-01-01), not with time.mktime, so the
# result does not depend on the port's epoch (1970 or 2000) nor on floats (single precision on the
# ESP32).
#
# Grammar (POSIX, with the RFC 8536 extension for transition times from -167 to 167 hours):
#   std offset [dst [offset] [,start[/time],end[/time]]]
#   std/dst: 3+ letters, or <...> quoted (letters, digits, + and -), e.g. <+0530>
#   offset: [+|-]hh[:mm[:ss]], positive WEST of Greenwich (so CET is "CET-1")
#   start/end: Jn (1..365, Feb 29 never counted), n (0..365, Feb 29 counted), Mm.w.d
#   (month 1..12, week 1..5 where 5 = last, weekday 0 = Sunday); time defaults to 02:00.
# A DST name without a rule takes the US rule M3.2.0,M11.1.0 (as glibc does).
# The parser is clockterm.tzparse, loaded only while a string is parsed.

from micropython import const

_DAY_S = const(86400)

# Rule kinds (the parser, tzparse.py, makes the rules)
_JULIAN1 = const(0)  # Jn: 1..365, February 29 is never counted
_JULIAN0 = const(1)  # n: 0..365, February 29 counted
_MWD = const(2)  # Mm.w.d


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (integers only)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(n):
    """(year, month, day) of day n counted from 1970-01-01."""
    n += 719468
    era = (n if n >= 0 else n - 146096) // 146097
    doe = n - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (y + (m <= 2), m, d)


def _rule_day(r, k, y):
    """Days since 1970 of the date of rule r[k:k + 5] (kind, a, w, d, time_s) in year y."""
    kind, a, w, d = r[k], r[k + 1], r[k + 2], r[k + 3]
    if kind == _JULIAN1:
        n = a - 1
        if a >= 60 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):  # skip February 29
            n += 1
        return days_from_civil(y, 1, 1) + n
    if kind == _JULIAN0:
        return days_from_civil(y, 1, 1) + a
    first = days_from_civil(y, a, 1)
    wd1 = (first + 4) % 7  # weekday of the 1st, 0 = Sunday (1970-01-01 was a Thursday)
    day = first + (d - wd1) % 7 + (w - 1) * 7
    if w == 5:
        nxt = days_from_civil(y + (a == 12), a % 12 + 1, 1)
        while day >= nxt:
            day -= 7
    return day


class TZ:
    """A parsed POSIX TZ string. Invalid strings raise ValueError naming the problem and where.

    std and dst are the zone abbreviations (dst None without DST: the one in effect at s is
    dst if is_dst(s) else std), std_off and dst_off their offsets in seconds east of Greenwich."""

    def __init__(self, s):
        from clockterm import forget, tzparse

        try:
            self.std, self.std_off, self.dst, self.dst_off, self._rule = tzparse.parse(s)
        finally:
            forget("clockterm.tzparse")  # needed again only for another TZ string
        self._cache = None  # (year, DST start, DST end in UTC seconds) of the last year asked

    # --- rules ---------------------------------------------------------------------------

    def is_dst(self, s):
        """True when DST is in effect at Unix UTC second s."""
        if self._rule is None:
            return False
        y = civil_from_days((s + self.std_off) // _DAY_S)[0]
        # (DST start, DST end) in UTC seconds for year y; cached for the last year asked.
        c = self._cache
        if c is None or c[0] != y:
            r = self._rule  # the start's (kind, a, w, d, time_s), then the end's
            c = self._cache = (y, _rule_day(r, 0, y) * _DAY_S + r[4] - self.std_off,
                               _rule_day(r, 5, y) * _DAY_S + r[9] - self.dst_off)
        a, b = c[1], c[2]
        if a < b:
            return a <= s < b
        return not (b <= s < a)  # southern hemisphere: DST spans the new year

    def offset_s(self, s):
        """Local offset from UTC in seconds (s: Unix UTC seconds), east positive, DST applied."""
        return self.dst_off if self.is_dst(s) else self.std_off
