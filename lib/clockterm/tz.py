# Local time from POSIX TZ strings (with DST rules): for the display, work-day rules and punch offsets.
#
# Storage and the wire are UTC; this module only gives the offset of local time at a UTC instant
# (local civil time is then epoch.gmtime_ms(utc_ms + offset_s * 1000)). The calendar arithmetic of
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

from micropython import const

_DAY_S = const(86400)
_DEF_TIME_S = const(7200)  # 02:00 local, when a rule gives no time

# Rule kinds
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


def _rule_day(r, y):
    """Days since 1970 of the rule's date in year y."""
    kind, a, w, d, _ = r
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
    """A parsed POSIX TZ string. Invalid strings raise ValueError naming the problem and where."""

    def __init__(self, s):
        self.spec = s  # also the parser's input, self._i its position
        self._i = 0
        if not isinstance(s, str):
            self._fail("not a string")
        self.std = self._name()
        # |offset| <= 24:59:59 as POSIX allows (the parser's limit of 24 hours); stored EAST positive, s
        self.std_off = -self._hms(24, "offset")
        self.dst = None
        self.dst_off = self.std_off
        self._rule = None  # ((kind, a, w, d, time_s) of the DST start, the same of its end)
        if self._i < len(s):
            self.dst = self._name()
            self.dst_off = self.std_off + 3600
            if self._i < len(s) and s[self._i] != ",":
                self.dst_off = -self._hms(24, "offset")
            if self._i < len(s):
                self._rule = (self._date(), self._date())  # ",start[/time],end[/time]"
            else:
                t = _DEF_TIME_S  # (a variable: a constant tuple would take heap at import)
                self._rule = ((_MWD, 3, 2, 0, t), (_MWD, 11, 1, 0, t))
            if self._i != len(s):
                self._fail("trailing characters")
        self._cache = None  # (year, DST start, DST end in UTC seconds) of the last year asked

    # --- parsing -------------------------------------------------------------------------
    # (few distinct messages: each costs heap; the position says which field)

    def _fail(self, text):
        raise ValueError("TZ %r: %s at position %d" % (self.spec, text, self._i))

    def _expect(self, c):
        if self.spec[self._i:self._i + 1] != c:
            self._fail("expected %r" % c)
        self._i += 1

    def _name(self):
        s, i = self.spec, self._i
        if s[i:i + 1] == "<":
            j = s.find(">", i + 1)
            name = s[i + 1:j] if j > 0 else ""
            for c in name:
                if not (c.isalpha() or c.isdigit() or c in "+-"):
                    name = ""
            self._i = j + 1
        else:
            j = i
            while j < len(s) and s[j].isalpha():
                j += 1
            name = s[i:j]
            self._i = j
        if len(name) < 3:
            self._i = i
            self._fail("zone name: 3 or more letters, or <...> of letters, digits, + and -")
        return name

    def _num(self, start, end, text):
        s, i = self.spec, self._i
        j = i
        while j < len(s) and s[j].isdigit():
            j += 1
        v = int(s[i:j]) if j > i else -1
        if v < start or v > end:
            self._fail("%s: expected %d..%d" % (text, start, end))
        self._i = j
        return v

    def _hms(self, n, text):
        """[+|-]hh[:mm[:ss]] in seconds, at most n hours; text names the field in errors."""
        sign = 1
        c = self.spec[self._i:self._i + 1]
        if c == "+" or c == "-":
            sign = -1 if c == "-" else 1
            self._i += 1
        v = self._num(0, n, text) * 3600
        mul = 60  # then 1 (seconds), then done
        while mul and self.spec[self._i:self._i + 1] == ":":
            self._i += 1
            v += self._num(0, 59, text) * mul
            mul //= 60
        return sign * v

    def _date(self):
        """,date[/time] of a DST rule: (kind, a, w, d, time_s)."""
        self._expect(",")
        c = self.spec[self._i:self._i + 1]
        if c == "J":
            self._i += 1
            r = [_JULIAN1, self._num(1, 365, "DST rule date"), 0, 0]
        elif c == "M":
            self._i += 1
            r = [_MWD, self._num(1, 12, "DST rule date")]
            self._expect(".")
            r.append(self._num(1, 5, "DST rule date"))
            self._expect(".")
            r.append(self._num(0, 6, "DST rule date"))
        elif c.isdigit():
            r = [_JULIAN0, self._num(0, 365, "DST rule date"), 0, 0]
        else:
            self._fail("expected a DST rule date: Jn, n or Mm.w.d")
        t = _DEF_TIME_S
        if self.spec[self._i:self._i + 1] == "/":
            self._i += 1
            t = self._hms(167, "time")
        r.append(t)
        return tuple(r)

    # --- rules ---------------------------------------------------------------------------

    def is_dst(self, s):
        """True when DST is in effect at Unix UTC second s."""
        if self._rule is None:
            return False
        y = civil_from_days((s + self.std_off) // _DAY_S)[0]
        # (DST start, DST end) in UTC seconds for year y; cached for the last year asked.
        c = self._cache
        if c is None or c[0] != y:
            start, end = self._rule
            c = self._cache = (y, _rule_day(start, y) * _DAY_S + start[4] - self.std_off,
                               _rule_day(end, y) * _DAY_S + end[4] - self.dst_off)
        a, b = c[1], c[2]
        if a < b:
            return a <= s < b
        return not (b <= s < a)  # southern hemisphere: DST spans the new year

    def offset_s(self, s):
        """Local offset from UTC in seconds (s: Unix UTC seconds), east positive, DST applied."""
        return self.dst_off if self.is_dst(s) else self.std_off

    def abbrev(self, s):
        """The zone abbreviation in effect at Unix UTC second s (e.g. CET or CEST; +0530 for <+0530>)."""
        return self.dst if self.is_dst(s) else self.std
