"""The app's housekeeping loop under micropython (App.main with fakes around it): it is the
supervisor, restarting a task that crashed or returned with backoff, its crash logged once; it feeds
the watchdog from the first turn whatever its other duties (display, a failing restart) throw, and
stops feeding once a critical task has crash-looped 20 times (a non-critical one does not count)."""

from __future__ import annotations

import json

from mp import run_mp, script


def test_housekeeping_supervises_and_feeds_the_watchdog() -> None:
    r = run_mp(script("app_housekeeping_mp.py", {"CASE": "supervise"}, "main()"))
    lines = r.stdout.splitlines()
    out = json.loads(lines[-1])
    # The watchdog: armed at the first turn, then fed every 50 ms, the display failing all along.
    assert out["first"] >= 1, out
    assert out["expired"] >= 1, out
    assert out["healthy"] >= out["healthy_ms"] // 100, out  # due every 50 ms, looked at every 20
    assert any(" E housekeeping: OSError" in ln for ln in lines), r.stdout  # said, not swallowed
    # A crashing task: restarted after 500 ms, then 1000 ms; not alive while it waits.
    assert out["at_250"]["sntp"] == {"restarts": 1, "alive": False, "critical": True, "starts": 1}, out
    assert out["at_1000"]["sntp"] == {"restarts": 2, "alive": False, "critical": True, "starts": 2}, out
    assert out["at_1900"]["sntp"]["starts"] == 3, out
    # Each crash logged once, under the task's name, with its type and message.
    crashes = [ln for ln in lines if "RuntimeError: boom" in ln and " E " in ln]
    assert len(crashes) == 3 and all(" E sntp: RuntimeError: boom" in ln for ln in crashes), crashes
    # A task that returns: said, and restarted with the same backoff.
    assert out["at_250"]["uplink"] == {"restarts": 1, "alive": False, "critical": True, "starts": 1}, out
    assert out["at_1000"]["uplink"]["starts"] == 2, out
    assert out["at_1900"]["uplink"]["starts"] == 3, out
    assert sum(" W uplink: task ended; restarting" in ln for ln in lines) == 3, r.stdout
    # A restart that fails in the supervision step: logged, backed off like an end, feeding goes on.
    assert any(" E housekeeping: ValueError: no start" in ln for ln in lines), r.stdout
    assert out["at_1900"]["flaky"]["restarts"] >= 2, out
    # Crash loops past 20 restarts: a non-critical one is no reason to stop feeding, a critical one is.
    assert out["optional"]["restarts"] >= 20 and out["optional"]["fed"] >= 6, out
    assert out["bad"]["restarts"] == 20 and out["bad"]["fed"] == 0, out


def test_restart_backoff_doubles_and_resets_after_a_long_run_across_a_ticks_wrap() -> None:
    from mp import mp_json

    out = mp_json(script("app_housekeeping_mp.py", {"CASE": "backoff"}, "main()"))
    assert out["restarts"] == 5 and out["wrapped"], out
    # An end is seen at the next turn (20 ms), the restart follows the backoff: 500 ms, doubled at each
    # restart; after a run longer than _RESTART_MAX_MS (60 s) it is 500 ms again.
    assert out["waits"] == [520, 1020, 2020, 520, 1020], out


def test_boot_goes_on_when_a_module_loaded_later_cannot_be_imported() -> None:
    """app.load_modules interns the names of the modules loaded only now and then by importing them at
    boot: a head start, so one that cannot be imported (a MemoryError, a damaged file) is said in the log
    and the boot goes on (its own user says what fails when it needs it)."""
    from mp import mp_json

    out = mp_json(script("app_housekeeping_mp.py", {"CASE": "warm_up"}, "main()"))
    assert out["journal"] and not out["pulls_kept"], out
    (error,) = out["errors"]
    assert "endpoint" in error and "MemoryError" in error, out
