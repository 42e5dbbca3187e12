# The sim board's crystal: a `time` module whose tick counters run fast or slow by the sim's drift.
#
# On a board one crystal drives both the RTC and the tick counters, so both drift alike, and after
# an SNTP sync the Clock (which runs on ticks) drifts until it has measured and compensated the rate.
# The sim's RTC drifts by sim.rtc_drift_ppm; this module makes ticks_ms/ticks_us drift by the same
# rate, so the whole firmware (Clock, SNTP round trips, asyncio) lives on the drifting crystal.
# The host launcher imports it first, only on the sim board with a non-zero drift
# (CLOCKTERM_DRIFT_PPM), and it puts itself in place of `time` for every later import.
# time_ns() stays the host's true time: the sim RTC builds its own drift on it.

import os
import sys
import time as _t

_K = 1 + float(os.getenv("CLOCKTERM_DRIFT_PPM") or 0) / 1000000

# Everything else is the real module's.
gmtime = _t.gmtime
localtime = _t.localtime
mktime = _t.mktime
sleep = _t.sleep
sleep_ms = _t.sleep_ms
sleep_us = _t.sleep_us
time = _t.time
time_ns = _t.time_ns
ticks_add = _t.ticks_add
ticks_diff = _t.ticks_diff
ticks_cpu = _t.ticks_cpu


class _Counter:
    # A drifted counter: real increments scaled by _K, accumulated with their fractions, wrapping
    # like the real one (it must be read at least once per half period: asyncio reads it constantly).
    def __init__(self, read):
        self.read = read
        self.last = read()
        self.out = self.last
        self.frac = 0.0

    def __call__(self):
        real = self.read()
        x = _t.ticks_diff(real, self.last) * _K + self.frac
        self.last = real
        n = int(x)
        self.frac = x - n
        self.out = _t.ticks_add(self.out, n)
        return self.out


ticks_ms = _Counter(_t.ticks_ms)
ticks_us = _Counter(_t.ticks_us)

sys.modules["time"] = sys.modules[__name__]
