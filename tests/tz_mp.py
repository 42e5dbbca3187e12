# MicroPython side of the time zone tests (tests/test_tz.py): clockterm.tz and clock.gmtime_ms on the
# device, their answers printed as JSON for the test to compare with CPython's zoneinfo and glibc.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): CASE, the case to run (a key of CASES at
# the end), and the case's own: SPECS, T0 and HOURS (sweep), SPEC and WINDOWS (offsets), BAD (invalid);
# then it appends a call of main(). Not collected by pytest (no test_ prefix).

import json

from clockterm.clock import gmtime_ms
from clockterm.tz import TZ

CASE = globals().get("CASE", "sweep")
SPECS = globals().get("SPECS", [])  # sweep: [POSIX TZ string, step in s] per zone
T0 = globals().get("T0", 0)  # sweep: the first hour (UTC s)
HOURS = globals().get("HOURS", 0)  # sweep: how many hours from T0
SPEC = globals().get("SPEC", "UTC0")  # offsets: the zone
WINDOWS = globals().get("WINDOWS", [])  # offsets: [first, end) ranges of the UTC seconds to give it at
BAD = globals().get("BAD", [])  # invalid: TZ strings that TZ() must refuse


def sweep():
    # For each zone, the hours where (offset, abbreviation) change and a checksum per year of every
    # local time (so both offset_s/is_dst and the broken-down time are compared). The local time is
    # what the firmware shows and stamps: clock.gmtime_ms of UTC ms + offset_s.
    m = (1 << 61) - 1
    for spec, step_s in SPECS:
        z = TZ(spec)
        tr = []
        ck = {}
        prev = None
        t = T0
        end = T0 + HOURS * 3600
        while t < end:
            o = z.offset_s(t)
            a = z.dst if z.is_dst(t) else z.std  # the abbreviation in effect
            if prev is None or prev[0] != o or prev[1] != a:
                tr.append([(t - T0) // 3600, o, a])
                prev = (o, a)
            u = t * 1000 + 999
            y, mo, d, h, mi, s, wd, yd = gmtime_ms(u + o * 1000)[:8]
            ms = u % 1000
            v = ((((((y * 13 + mo) * 32 + d) * 24 + h) * 60 + mi) * 60 + s) * 7 + wd) * 367 + yd
            v = v * 1000 + ms
            key = str(y)
            ck[key] = (ck.get(key, 0) * 1000003 + v) % m
            t += step_s
        print(json.dumps({"tr": tr, "ck": ck}))  # one line per zone: the heap holds one zone at a time
        tr = ck = None


def offsets():
    z = TZ(SPEC)
    print(json.dumps([z.offset_s(s) for first, end in WINDOWS for s in range(first, end)]))


def invalid():
    out = []
    for s in BAD:
        try:
            TZ(s)
            out.append(None)
        except ValueError as e:
            out.append(str(e))
    print(json.dumps(out))


def abbrev(z, t):
    return z.dst if z.is_dst(t) else z.std


def local_fields():
    z = TZ("<+0530>-5:30")
    b = TZ("CET-1CEST,M3.5.0,M10.5.0/3")
    u = 1767225600123
    loc = list(gmtime_ms(u + z.offset_s(u // 1000) * 1000)[:8]) + [u % 1000]
    print(json.dumps([loc, abbrev(z, 0), abbrev(b, 1782864000), abbrev(b, 1767225600),
                      b.offset_s(1782864000), z.offset_s(0)]))


def year_edge():
    z = TZ("AAA-3BBB-4,0/0,59/12")
    # DST starts 2021-01-01 00:00 local standard time = 2020-12-31 21:00 UTC
    u = 1609448400000
    loc = gmtime_ms(u + z.offset_s(u // 1000) * 1000)
    print(json.dumps([abbrev(z, 1609448400 - 1), abbrev(z, 1609448400), loc[:4]]))


CASES = {"sweep": sweep, "offsets": offsets, "invalid": invalid, "local_fields": local_fields,
         "year_edge": year_edge}


def main():
    CASES[CASE]()
