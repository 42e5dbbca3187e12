"""The sim board's drifting crystal: ticks run fast by the configured ppm, everywhere time is imported."""

from __future__ import annotations

from mp import mp_json

SCRIPT = """
import json
import clockterm.boards.simtime
import time, asyncio
from time import ticks_ms
r0, d0, u0 = time.time_ns(), time.ticks_ms(), time.ticks_us()
async def wait():
    await asyncio.sleep_ms(1500)     # asyncio runs on the drifting counter too
asyncio.run(wait())
time.sleep_ms(500)
real_ms = (time.time_ns() - r0) / 1e6
print(json.dumps({"real_ms": real_ms, "ticks_ms": time.ticks_diff(ticks_ms(), d0),
                  "ticks_us": time.ticks_diff(time.ticks_us(), u0), "same": ticks_ms is time.ticks_ms}))
"""


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
