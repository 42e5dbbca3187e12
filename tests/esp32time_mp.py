# ESP32 tick arithmetic for scripts run under the unix port: a test puts this file's text in front of
# its own module's (mp.script("esp32time_mp.py") + mp.script(...)), which puts an ESP32Time in place
# of a module's `time` (`uplink.time = ESP32Time(...)`). Linted with the firmware's rules (lib/ruff.toml).
#
# On an ESP32 the tick counters wrap at 2**30 ms (a small int) and time.ticks_add refuses a step of
# 2**29 ms (about 6.2 days) or more with OverflowError, and one that is not an int with TypeError;
# ticks_diff is right only for ticks less than 2**29 ms apart. The unix port's 64-bit ticks neither
# wrap nor refuse, so code that adds a server's or a config's value to a ticks value passes there
# and fails on a board. Not collected by pytest (no test_ prefix).

import time as _host_time


class ESP32Time:
    """ticks_ms/ticks_add/ticks_diff as an ESP32 has them. The ticks run `offset_ms` ahead of the
    host's (start a test just before a wrap); `manual`, when set, is the ticks_ms reading instead."""

    PERIOD = 1 << 30

    def __init__(self, offset_ms=0):
        self.offset = offset_ms
        self.manual = None

    def ticks_ms(self):
        ms = self.manual if self.manual is not None else _host_time.ticks_ms() + self.offset
        return ms % self.PERIOD

    def ticks_add(self, ticks, delta):
        if not isinstance(delta, int):
            raise TypeError("can't convert to int")
        if not -self.PERIOD // 2 < delta < self.PERIOD // 2:
            raise OverflowError("ticks interval overflow")
        return (ticks + delta) % self.PERIOD

    def ticks_diff(self, a, b):
        d = (a - b) % self.PERIOD
        return d - self.PERIOD if d >= self.PERIOD // 2 else d

    def sleep_ms(self, ms):
        _host_time.sleep_ms(ms)

    def time(self):
        return _host_time.time()


def esp32_offset(now_ms):
    # The offset that makes the ESP32 ticks read now_ms now (say 3 days of uptime, or just before a wrap)
    return now_ms - _host_time.ticks_ms() % ESP32Time.PERIOD
