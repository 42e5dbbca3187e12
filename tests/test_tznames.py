"""Time zones by name (host side): IANA names become the POSIX rule the terminal runs on."""

from __future__ import annotations

import pytest
from clockterm_host import tznames


@pytest.mark.parametrize(("given", "rule"), [
    ("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ("America/New_York", "EST5EDT,M3.2.0,M11.1.0"),
    ("Asia/Kolkata", "IST-5:30"),
    ("UTC", "UTC0"),
    ("Etc/GMT+5", "<-05>5"),
    ("CET-1CEST,M3.5.0,M10.5.0/3", "CET-1CEST,M3.5.0,M10.5.0/3"),  # a rule passes unchanged
    ("EST5EDT", "EST5EDT"),
])
def test_names_become_rules(given: str, rule: str) -> None:
    assert tznames.resolve(given) == rule


@pytest.mark.parametrize("bad", ["Europe/Nowhere", "../etc/passwd", "Europe/../../etc/passwd", "Nowhere"])
def test_unknown_names_are_refused_with_what_the_field_takes(bad: str) -> None:
    with pytest.raises(tznames.TZNameError) as e:
        tznames.resolve(bad)
    assert bad in str(e.value)


def test_every_zone_runs_on_the_device_as_zoneinfo_has_it() -> None:
    # Each IANA zone's rule (tznames: the footer of its zoneinfo file) parsed by the device's own tz.py,
    # which must give the offset the host's zoneinfo gives: a minute before and after each transition of
    # 2101 (every zone follows its rule by then: Morocco's listed transitions run to 2087) and mid-winter
    # and mid-summer. The rules include quoted names, half-hour offsets and half-hour DST (<-05>5,
    # IST-5:30, <+1030>-10:30<+11>-11,M10.1.0,M4.1.0 of Lord Howe).
    import datetime as dt
    import json
    import tempfile
    import zoneinfo

    import mp

    start = int(dt.datetime(2101, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    names = sorted(n for n in zoneinfo.available_timezones() if not n.startswith(("posix/", "right/")))
    cases: dict[str, tuple[str, list[int], list[int]]] = {}  # rule -> (zone, instants, offsets there)
    for name in names:
        rule = tznames.posix_rule(name)
        if rule in cases:
            continue
        zone = zoneinfo.ZoneInfo(name)

        def off(t: int, zone: zoneinfo.ZoneInfo = zone) -> int:
            return int(dt.datetime.fromtimestamp(t, dt.timezone.utc).astimezone(zone).utcoffset().total_seconds())

        points = [start + 14 * 86400 + 43200, start + 195 * 86400 + 43200]
        for h in range(365 * 24):
            a, b = start + h * 3600, start + (h + 1) * 3600
            if off(a) != off(b):
                while b - a > 1:  # the transition's second
                    m = (a + b) // 2
                    a, b = (m, b) if off(m) == off(a) else (a, m)
                points += [b - 60, b + 60]
        cases[rule] = (name, points, [off(t) for t in points])
    assert len(cases) > 50 and "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0" in cases and "<-05>5" in cases
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
        for rule, (_, points, _) in cases.items():
            f.write(json.dumps([rule, points]) + "\n")
        f.flush()
        out = mp.run_mp(mp.script("tznames_mp.py", tail="main()"), args=[f.name]).stdout
    got = dict(json.loads(ln) for ln in out.splitlines() if ln.startswith("["))
    wrong = {r: (c[0], c[1], c[2], got[r]) for r, c in cases.items() if got[r] != c[2]}
    assert not wrong, wrong
