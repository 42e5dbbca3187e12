"""The firmware's log under micropython: error lines kept for STATUS are bounded, the console gets them whole."""

from __future__ import annotations

from mp import run_mp, script


def test_error_lines_kept_for_status_are_bounded() -> None:
    import json

    r = run_mp(script("log_mp.py", tail="main()"))
    lines = r.stdout.splitlines()
    out = json.loads(lines[-1])
    assert len(out["kept"]) == 8 and all(len(e) == 150 for e in out["kept"]), out
    assert [e.split(" E t: ")[1].split()[0] for e in out["kept"]] == [str(i) for i in range(2, 10)]
    assert out["counts"]["error"] == 10
    # 8 kept lines as one JSON member fit the 1.5 KB answer buffer (STATUS streams member by member)
    assert len(json.dumps(out["kept"])) < 1536
    assert sum(1 for ln in lines[:-1] if len(ln) > 400) == 10  # the console has every line whole


def test_the_seconds_since_boot_run_on_past_the_wrap() -> None:
    """Each line starts with the seconds since boot, with their ms: on an ESP32 the ticks wrap at 2**30 ms
    (12.4 days) and a float keeps 7 digits; lines a day apart for two weeks count up by the day."""
    code = script("esp32time_mp.py") + """
from clockterm import log
t = ESP32Time()
log.time = t
t.manual = 1000
log._t0[:] = [1000, 0]
for day in range(15):
    t.manual = (1000 + day * 86400000 + 123) % ESP32Time.PERIOD
    log.info("t", "day %d" % day)
"""
    r = run_mp(code)
    got = [ln.split()[0] for ln in r.stdout.splitlines() if " I t: day " in ln]
    assert got == [f"{day * 86400}.123" for day in range(15)], got
