# MicroPython side of the sim board's drifting crystal test (tests/test_simtime.py): asyncio, ticks_ms
# and ticks_us against the host's true time (time_ns) over two seconds, printed as JSON.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The drift comes from the environment (CLOCKTERM_DRIFT_PPM), as on the sim board; the test appends a
# call of main(). Not collected by pytest (no test_ prefix).

import json

import clockterm.boards.simtime  # noqa: F401 - imported for its effect: every later `time` is the drifting one

import asyncio  # after simtime: asyncio runs on the drifting counter too
import time  # the drifting one
from time import ticks_ms


async def wait():
    await asyncio.sleep_ms(1500)  # asyncio runs on the drifting counter too


def main():
    r0, d0, u0 = time.time_ns(), time.ticks_ms(), time.ticks_us()
    asyncio.run(wait())
    time.sleep_ms(500)
    real_ms = (time.time_ns() - r0) / 1e6
    print(json.dumps({"real_ms": real_ms, "ticks_ms": time.ticks_diff(ticks_ms(), d0),
                      "ticks_us": time.ticks_diff(time.ticks_us(), u0), "same": ticks_ms is time.ticks_ms}))
