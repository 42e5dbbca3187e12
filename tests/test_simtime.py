"""The sim board's drifting crystal: ticks run fast by the configured ppm, everywhere time is imported."""

from __future__ import annotations

from mp import mp_json, script

SCRIPT = script("simtime_mp.py", tail="main()")


def test_ticks_drift_by_the_configured_ppm() -> None:
    # 20,000 ppm (2 %) so that the drift stands well above scheduling noise in two seconds.
    out = mp_json(SCRIPT, env={"CLOCKTERM_DRIFT_PPM": "20000"})
    assert out["same"] is True
    real = out["real_ms"]
    assert real >= 1900  # 1.5 s of drifting asyncio sleep (about 1.47 s real) and 0.5 s real
    assert abs(out["ticks_ms"] - real * 1.02) <= 3, out
    assert abs(out["ticks_us"] / 1000 - real * 1.02) <= 3, out


def test_no_drift_is_the_real_counter() -> None:
    out = mp_json(SCRIPT, env={"CLOCKTERM_DRIFT_PPM": "0"})
    assert abs(out["ticks_ms"] - out["real_ms"]) <= 2, out
