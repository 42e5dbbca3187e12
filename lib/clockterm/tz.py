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

# The DST rule, as the parser (tzparse.py) makes it: one tuple of ten, the start's five fields and
# then the end's, each indexed by the _R_* constants (from _R_END on for the end).
_R_KIND = const(0)  # one of the kinds below
_R_N = const(1)  # Jn and n: the day number; Mm.w.d: the month
_R_WEEK = const(2)  # Mm.w.d: the week, 1..5 (5: the last)
_R_WEEKDAY = const(3)  # Mm.w.d: the weekday, 0 = Sunday
_R_TIME = const(4)  # local time of the change, seconds after midnight (-167..167 hours)
_R_END = const(5)
# Rule kinds (tzparse.py has a copy)
_JULIAN1 = const(0)  # Jn: 1..365, February 29 is never counted
_JULIAN0 = const(1)  # n: 0..365, February 29 counted
_MWD = const(2)  # Mm.w.d
# TZ._last, the last year asked: (year, DST start, DST end), both as Unix UTC seconds
_C_YEAR = const(0)
_C_START = const(1)
_C_END = const(2)


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


def _rule_day(r, start, y):
    """Days since 1970 of the date of a DST change in year y: that of rule r whose fields begin at
    r[start] (0: the change to DST, _R_END: the change back)."""
    kind, n = r[start + _R_KIND], r[start + _R_N]
    if kind == _JULIAN1:
        day = n - 1
        if n >= 60 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):  # skip February 29
            day += 1
        return days_from_civil(y, 1, 1) + day
    if kind == _JULIAN0:
        return days_from_civil(y, 1, 1) + n
    month, week, weekday = n, r[start + _R_WEEK], r[start + _R_WEEKDAY]
    first = days_from_civil(y, month, 1)
    wd1 = (first + 4) % 7  # weekday of the 1st, 0 = Sunday (1970-01-01 was a Thursday)
    day = first + (weekday - wd1) % 7 + (week - 1) * 7
    if week == 5:
        next_month = days_from_civil(y + (month == 12), month % 12 + 1, 1)
        while day >= next_month:
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
        self._last = None  # the last year asked and its DST start and end (_C_* fields)
        self.name = s  # the rule as configured (the endpoint's time document shows it)

    # --- rules ---------------------------------------------------------------------------

    def is_dst(self, s):
        """True when DST is in effect at Unix UTC second s."""
        if self._rule is None:
            return False
        y = civil_from_days((s + self.std_off) // _DAY_S)[0]
        cache = self._last
        if cache is None or cache[_C_YEAR] != y:
            # The start's local time is in standard time, the end's in DST.
            rule = self._rule
            start = _rule_day(rule, 0, y) * _DAY_S + rule[_R_TIME] - self.std_off
            end = _rule_day(rule, _R_END, y) * _DAY_S + rule[_R_END + _R_TIME] - self.dst_off
            cache = self._last = (y, start, end)
        start, end = cache[_C_START], cache[_C_END]
        if start < end:
            return start <= s < end
        return not (end <= s < start)  # southern hemisphere: DST spans the new year

    def offset_s(self, s):
        """Local offset from UTC in seconds (s: Unix UTC seconds), east positive, DST applied."""
        return self.dst_off if self.is_dst(s) else self.std_off
