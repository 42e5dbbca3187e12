# The POSIX TZ string parser of clockterm.tz, imported only while a string is parsed.
#
# tz.TZ() imports this module, parses, and forgets it again (clockterm.forget): its code
# and its messages take heap only during a parse (at boot, and when the uplink checks a central
# config overlay), not for the life of the terminal. The grammar is in tz.py's header.
#
# Errors are ValueError "TZ <spec>: <what> at position <n>". Few distinct messages on purpose (each
# is a string object while the module is loaded); the position says which field.

from micropython import const

_DEF_TIME_S = const(7200)  # 02:00 local, when a rule gives no time
_OFF_MAX = const(64800)  # seconds: 18 hours, the most a zone's offset may be (parse)
# Rule kinds (tz.py has a copy); a rule's fields are in tz.py's order (_R_*)
_JULIAN1 = const(0)  # Jn: 1..365, February 29 is never counted
_JULIAN0 = const(1)  # n: 0..365, February 29 counted
_MWD = const(2)  # Mm.w.d

src = ""  # the string being parsed
pos = 0  # the parser's position in it


def parse(s):
    """(std, std_off, dst, dst_off, rule) of POSIX TZ string s. Offsets in seconds EAST of
    Greenwich (POSIX writes them west); dst None without DST; rule None or (kind, a, w, d,
    time_s) of the DST start followed by the same of its end, in one tuple."""
    global src, pos
    src = s
    pos = 0
    if not isinstance(s, str):
        _fail("not a string")
    std = _name()
    # POSIX allows offsets up to 24:59:59; a punch's utc_offset_min is within +-18 hours (the central
    # refuses a batch holding one beyond, and every later punch would wait behind it): so is a rule's
    std_off = dst_off = -_hms(18, "offset")
    dst = rule = None
    if pos < len(s):
        dst = _name()
        dst_off = std_off + 3600
        if pos < len(s) and s[pos] != ",":
            dst_off = -_hms(18, "offset")
        if pos < len(s):
            rule = _date() + _date()  # ",start[/time],end[/time]"
        else:
            t = _DEF_TIME_S  # (a variable: a constant tuple would take heap at import)
            rule = (_MWD, 3, 2, 0, t, _MWD, 11, 1, 0, t)
        if pos != len(s):
            _fail("trailing characters")
    if abs(std_off) > _OFF_MAX or abs(dst_off) > _OFF_MAX:
        pos = 0
        _fail("an offset beyond 18 hours")
    return std, std_off, dst, dst_off, rule


def _fail(text):
    raise ValueError("TZ %r: %s at position %d" % (src, text, pos))


def _expect(c):
    global pos
    if src[pos:pos + 1] != c:
        _fail("expected %r" % c)
    pos += 1


def _name():
    global pos
    s, i = src, pos
    if s[i:i + 1] == "<":
        j = s.find(">", i + 1)
        name = s[i + 1:j] if j > 0 else ""
        for c in name:
            if not (c.isalpha() or c.isdigit() or c in "+-"):
                name = ""
        pos = j + 1
    else:
        j = i
        while j < len(s) and s[j].isalpha():
            j += 1
        name = s[i:j]
        pos = j
    if len(name) < 3:
        pos = i
        _fail("zone name: 3 or more letters, or <...> of letters, digits, + and -")
    return name


def _num(start, end, text):
    global pos
    s, i = src, pos
    j = i
    while j < len(s) and s[j].isdigit():
        j += 1
    v = int(s[i:j]) if j > i else -1
    if v < start or v > end:
        _fail("%s: expected %d..%d" % (text, start, end))
    pos = j
    return v


def _hms(n, text):
    """[+|-]hh[:mm[:ss]] in seconds, at most n hours; text names the field in errors."""
    global pos
    sign = 1
    c = src[pos:pos + 1]
    if c == "+" or c == "-":
        sign = -1 if c == "-" else 1
        pos += 1
    v = _num(0, n, text) * 3600
    mul = 60  # then 1 (seconds), then done
    while mul and src[pos:pos + 1] == ":":
        pos += 1
        v += _num(0, 59, text) * mul
        mul //= 60
    return sign * v


def _date():
    """,date[/time] of a DST rule: (kind, a, w, d, time_s)."""
    global pos
    _expect(",")
    c = src[pos:pos + 1]
    if c == "J":
        pos += 1
        r = [_JULIAN1, _num(1, 365, "DST rule date"), 0, 0]
    elif c == "M":
        pos += 1
        r = [_MWD, _num(1, 12, "DST rule date")]
        _expect(".")
        r.append(_num(1, 5, "DST rule date"))
        _expect(".")
        r.append(_num(0, 6, "DST rule date"))
    elif c.isdigit():
        r = [_JULIAN0, _num(0, 365, "DST rule date"), 0, 0]
    else:
        _fail("expected a DST rule date: Jn, n or Mm.w.d")
    t = _DEF_TIME_S
    if src[pos:pos + 1] == "/":
        pos += 1
        t = _hms(167, "time")
    r.append(t)
    return tuple(r)
