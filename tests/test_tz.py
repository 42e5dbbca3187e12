"""clockterm.tz against CPython zoneinfo: every hour 2020-2040 in real zones, plus synthetic rules."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from mp import mp_json, run_mp, script

# (zone, POSIX TZ string as in the zone's TZif footer, first year its current rules hold)
ZONES: list[tuple[str, str, int]] = [
    ("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3", 2020),
    ("Europe/London", "GMT0BST,M3.5.0/1,M10.5.0", 2020),
    ("Europe/Dublin", "IST-1GMT0,M10.5.0,M3.5.0/1", 2020),  # "negative DST": winter is the DST
    ("Europe/Helsinki", "EET-2EEST,M3.5.0/3,M10.5.0/4", 2020),
    ("Europe/Moscow", "MSK-3", 2020),
    ("America/New_York", "EST5EDT,M3.2.0,M11.1.0", 2020),
    ("America/Chicago", "CST6CDT,M3.2.0,M11.1.0", 2020),
    ("America/Denver", "MST7MDT,M3.2.0,M11.1.0", 2020),
    ("America/Phoenix", "MST7", 2020),
    ("America/Los_Angeles", "PST8PDT,M3.2.0,M11.1.0", 2020),
    ("America/Anchorage", "AKST9AKDT,M3.2.0,M11.1.0", 2020),
    ("America/St_Johns", "NST3:30NDT,M3.2.0,M11.1.0", 2020),
    ("America/Havana", "CST5CDT,M3.2.0/0,M11.1.0/1", 2020),
    ("America/Sao_Paulo", "<-03>3", 2020),
    ("America/Santiago", "<-04>4<-03>,M9.1.6/24,M4.1.6/24", 2023),  # /24 transition times
    ("America/Nuuk", "<-02>2<-01>,M3.5.0/-1,M10.5.0/0", 2024),  # negative transition time
    ("Pacific/Honolulu", "HST10", 2020),
    ("Asia/Kolkata", "IST-5:30", 2020),
    ("Asia/Kathmandu", "<+0545>-5:45", 2020),
    ("Asia/Tokyo", "JST-9", 2020),
    ("Asia/Jerusalem", "IST-2IDT,M3.4.4/26,M10.5.0", 2020),  # transition time over 24 h
    ("Australia/Sydney", "AEST-10AEDT,M10.1.0,M4.1.0/3", 2020),
    ("Australia/Adelaide", "ACST-9:30ACDT,M10.1.0,M4.1.0/3", 2020),
    ("Australia/Brisbane", "AEST-10", 2020),
    ("Australia/Lord_Howe", "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 2020),  # 30-minute DST
    ("Pacific/Auckland", "NZST-12NZDT,M9.5.0,M4.1.0/3", 2020),
    ("Pacific/Chatham", "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45", 2020),
    ("Africa/Johannesburg", "SAST-2", 2020),
]

# Synthetic rules exercising the forms real zones do not use (Jn, n, odd times, no rule), checked
# against glibc's POSIX TZ implementation (time.localtime under TZ=...). CPython's zoneinfo is not
# the reference here: its footer parser puts the zero-based "n" day one day early and maps J59 to
# February 29 in leap years (CPython 3.11 _DayOffset.year_to_epoch). glibc in turn picks the rule
# year by the UTC year, so a transition whose UTC time falls in another year than its local time
# (e.g. "0/0" east of Greenwich) is checked by hand in test_year_edge_rules instead.
SYNTHETIC: list[str] = [
    "EST5EDT",  # DST name without a rule: the US default
    "EST5EDT,J60/-1,300/25",
    "XXX3YYY,J1/0,J365/22",
    "AAA-3BBB-4,1/0,59/12:30:15",
    "CCC-3DDD-4,J59/0,J61/0",
    "<-0330>3:30<-0230>,M1.2.0/-25,M12.1.6/167",
    "WAT-1WAST-2,M9.1.0,M4.1.0",  # southern hemisphere form with explicit DST offset
    "<+11>-11<+12>,M2.5.1/30,J200",
    "CET-1CEST-2:00:00,M3.5.0/2:00:00,M10.5.0/3:00:00",
    "UTC0",
    "<+0530>-5:30",
]

YEAR0, YEAR1 = 2020, 2041  # every hour from 2020-01-01 to 2040-12-31 23:00 UTC
T0 = int(dt.datetime(YEAR0, 1, 1, tzinfo=dt.UTC).timestamp())
HOURS = int(dt.datetime(YEAR1, 1, 1, tzinfo=dt.UTC).timestamp() - T0) // 3600
_MOD = (1 << 61) - 1

def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError as e:  # pragma: no cover - environment problem, not a skip
        raise AssertionError(f"zoneinfo has no {name}: install tzdata (Debian or PyPI)") from e


def _zoneinfo_at(z: ZoneInfo):
    def at(t: int) -> tuple[int, str, tuple]:
        loc = dt.datetime.fromtimestamp(t, dt.UTC).astimezone(z)
        off = loc.utcoffset()
        assert off is not None
        return int(off.total_seconds()), str(loc.tzname()), loc.timetuple()[:8]
    return at


def _glibc_at(spec: str):
    def at(t: int) -> tuple[int, str, tuple]:
        lt = time.localtime(t)
        return lt.tm_gmtoff, lt.tm_zone, tuple(lt)[:8]
    return at


def _expected(at, first_hour: int, step_s: int) -> dict:
    tr: list[list] = []
    ck: dict[str, int] = {}
    prev = None
    t = T0 + first_hour * 3600
    end = T0 + HOURS * 3600
    while t < end:
        o, a, (y, mo, d, h, mi, sec, wd, yd) = at(t)
        if prev != (o, a):
            tr.append([(t - T0) // 3600, o, a])
            prev = (o, a)
        v = ((((((y * 13 + mo) * 32 + d) * 24 + h) * 60 + mi) * 60 + sec) * 7 + wd) * 367 + yd
        v = v * 1000 + 999
        ck[str(y)] = (ck.get(str(y), 0) * 1000003 + v) % _MOD
        t += step_s
    return {"tr": tr, "ck": ck}


def _run_mp(specs: list[tuple[str, int]], first_hours: list[int]) -> list[dict]:
    # One micropython process for all zones (tests/tz_mp.py's sweep); each zone starts at its own first hour.
    out = []
    # Zones with a later start get their own offset of T0: run them in groups by start hour.
    groups: dict[int, list[int]] = {}
    for i, h in enumerate(first_hours):
        groups.setdefault(h, []).append(i)
    res: dict[int, dict] = {}
    for h, idx in groups.items():
        settings = {"CASE": "sweep", "SPECS": [list(specs[i]) for i in idx], "T0": T0 + h * 3600, "HOURS": HOURS - h}
        r = run_mp(script("tz_mp.py", settings, "main()"), timeout=600)
        got = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
        for i, g in zip(idx, got, strict=True):
            # re-base hour numbers on the common T0
            g["tr"] = [[n + h, o, a] for n, o, a in g["tr"]]
            res[i] = g
    for i in range(len(specs)):
        out.append(res[i])
    return out


def _first_hour(year: int) -> int:
    return int(dt.datetime(year, 1, 1, tzinfo=dt.UTC).timestamp() - T0) // 3600


def _compare(names: list[str], refs: list, specs: list[str], firsts: list[int], step_s: int) -> None:
    got = _run_mp([(s, step_s) for s in specs], firsts)
    bad = []
    for name, ref, g, h in zip(names, refs, got, firsts, strict=True):
        if isinstance(ref, str):  # glibc reference: one TZ setting at a time
            os.environ["TZ"] = ref
            time.tzset()
            want = _expected(_glibc_at(ref), h, step_s)
        else:
            want = _expected(_zoneinfo_at(ref), h, step_s)
        if g != want:
            tr_diff = ([x for x in want["tr"] if x not in g["tr"]][:3]
                       + [x for x in g["tr"] if x not in want["tr"]][:3])
            years = sorted(k for k in want["ck"] if want["ck"][k] != g["ck"].get(k))
            bad.append(f"{name}: transitions differ {tr_diff}, local time differs in years {years}")
    assert not bad, "\n".join(bad)


def test_real_zones_every_hour_2020_2040() -> None:
    assert len(ZONES) >= 20
    _compare([z for z, _, _ in ZONES], [_zone(z) for z, _, _ in ZONES], [p for _, p, _ in ZONES],
             [_first_hour(y) for _, _, y in ZONES], 3600)


def test_synthetic_rules_every_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC0")  # restored (and re-read by tzset) after the test
    try:
        _compare(SYNTHETIC, list(SYNTHETIC), SYNTHETIC, [0] * len(SYNTHETIC), 3600)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("name,posix", [(z, p) for z, p, _ in ZONES if "," in p][:4])
def test_transition_edges_to_the_second(name: str, posix: str) -> None:
    """Around each 2026 transition, every second from 2 s before to 2 s after agrees."""
    z = _zone(name)
    t, end = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()), int(
        dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp())
    edges = []
    prev = None
    while t < end:
        off = dt.datetime.fromtimestamp(t, dt.UTC).astimezone(z).utcoffset()
        if prev is not None and off != prev:
            edges.append(t)
        prev = off
        t += 900
    assert len(edges) == 2
    windows = [[e - 902, e + 3] for e in edges]  # the change happened within (e-900, e]: every second of it
    secs = [s for first, end in windows for s in range(first, end)]
    want = [int(dt.datetime.fromtimestamp(s, dt.UTC).astimezone(z).utcoffset().total_seconds()) for s in secs]
    got = mp_json(script("tz_mp.py", {"CASE": "offsets", "SPEC": posix, "WINDOWS": windows}, "main()"))
    assert got == want


BAD = ["", "C", "CET", "CET-", "CET-1CEST,", "CET-1CEST,M3.5.0", "CET-1CEST,M13.5.0,M10.5.0",
       "CET-1CEST,M3.6.0,M10.5.0", "CET-1CEST,M3.5.7,M10.5.0", "CET-1CEST,J0,J365", "CET-1CEST,J1,J366",
       "CET-1CEST,366,1", "CET-1CEST,M3.5.0/168,M10.5.0", "<+0530-5:30", "<+05 30>-5:30", "CET-25",
       "CET-1:60", "CET-1CEST,M3.5.0,M10.5.0/3x", "CET-1 CEST", "12-1",
       # beyond the +-18 hours of a punch's utc_offset_min (POSIX allows 24:59:59): the central would
       # refuse every batch holding such a punch, and the punches after it would wait behind it
       "XXX-19", "<+1830>-18:30", "XXX+24", "XXX-18:00:01", "AAA-18BBB", "AAA-17BBB-19,M3.5.0,M10.5.0"]


def test_invalid_strings_raise_value_error() -> None:
    got = mp_json(script("tz_mp.py", {"CASE": "invalid", "BAD": BAD}, "main()"))
    for s, msg in zip(BAD, got, strict=True):
        assert msg is not None, f"{s!r} was accepted"
        assert msg.startswith("TZ"), msg


def test_offsets_up_to_18_hours_are_taken() -> None:
    # Kiribati (+14), Baker Island (-12), and the edges of the range: 18 hours each way, the DST one too
    specs = ["<+14>-14", "<-12>12", "<+18>-18", "<-18>18", "AAA-17BBB,M3.5.0,M10.5.0"]
    got = [mp_json(script("tz_mp.py", {"CASE": "offsets", "SPEC": s, "WINDOWS": [[1783000000, 1783000001]]},
                          "main()")) for s in specs]
    assert got == [[50400], [-43200], [64800], [-64800], [64800]]  # (1783000000: July 2026, DST in force)


def test_local_fields_and_abbrev() -> None:
    got = mp_json(script("tz_mp.py", {"CASE": "local_fields"}, "main()"))
    # 2026-01-01T00:00:00.123Z is 05:30:00.123 in India, a Thursday (weekday 3), day 1
    assert got == [[2026, 1, 1, 5, 30, 0, 3, 1, 123], "+0530", "CEST", "CET", 7200, 19800]


def test_year_edge_rules() -> None:
    """Transitions whose UTC instant lies in the previous UTC year (POSIX: rules are local)."""
    got = mp_json(script("tz_mp.py", {"CASE": "year_edge"}, "main()"))
    assert got == ["AAA", "BBB", [2021, 1, 1, 1]]
