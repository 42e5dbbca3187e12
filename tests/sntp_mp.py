# MicroPython side of the SNTP tests and bench: a fake RTC on the host clock, fresh Clocks, a loop-stall
# ticker and, when the caller sets SIM_TIME first, simulated time.
#
# The pytest files (and bench/bench_sntp.py) prepend settings and append their body, and run the whole
# under micropython with the compiled bundle. Not collected by pytest (no test_ prefix).
#
# Simulated time (SIM_TIME = True, optionally SIM_TICKS0 = the ticks_ms reading to start from):
# before any firmware module is imported, `time` is replaced by a module whose ticks wrap every 2**30
# as an ESP32's do (ticks_add refuses steps of 2**29 or more, as there), and `skip(ms)` moves every clock
# the firmware reads (ticks, time_ns, the fake RTC) forward at once. `sim_sleeps(sntp)` gives the SNTP
# module an asyncio whose long sleeps (its rounds, burst gaps) are skipped instead of waited for, so
# hours of polling run in seconds; short waits (a reply's timeout) stay real. asyncio itself keeps the
# real time. Scripted servers (tests/ntp_fixtures.HostileServer) learn each skip on their control port
# (SIM_CONTROL: a list of ports), so they serve the same simulated time.

import asyncio
import json
import os
import sys
import time as _rt

SIM_TIME = globals().get("SIM_TIME", False)
SIM_TICKS0 = globals().get("SIM_TICKS0", 0)
SIM_CONTROL = globals().get("SIM_CONTROL", [])

SKIP_MIN_MS = 1500  # sleeps this long or longer are skipped under simulated time


class SimTime:
    PERIOD = 1 << 30
    HALF = 1 << 29

    def __init__(self, ticks0):
        self.skipped = 0  # ms skipped so far
        self.base = ticks0 - _rt.ticks_ms()
        self.skips = 0

    def ticks_ms(self):
        return (_rt.ticks_ms() + self.base + self.skipped) % self.PERIOD

    def ticks_us(self):
        return (_rt.ticks_us() + (self.base + self.skipped) * 1000) % self.PERIOD

    def ticks_diff(self, a, b):
        return (a - b + self.HALF) % self.PERIOD - self.HALF

    def ticks_add(self, t, d):
        if not -self.HALF < d < self.HALF:
            raise OverflowError("ticks interval overflow")
        return (t + d) % self.PERIOD

    def time_ns(self):
        return _rt.time_ns() + self.skipped * 1000000

    def time(self):
        return _rt.time() + self.skipped // 1000

    def gmtime(self, *a):
        return _rt.gmtime(*a)

    def localtime(self, *a):
        return _rt.localtime(*a)

    def mktime(self, t):
        return _rt.mktime(t)

    def sleep_ms(self, ms):
        _rt.sleep_ms(ms)

    def skip(self, ms):
        self.skipped += ms
        self.skips += 1
        for port in SIM_CONTROL:
            tell_server(port, self.skipped)


def tell_server(port, skipped_ms):
    # A scripted server's control port: serve host time + skipped_ms from now on (answered "ok").
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(2)
        s.sendto(("T %d" % skipped_ms).encode(), socket.getaddrinfo("127.0.0.1", port)[0][-1])
        if s.recv(16) != b"ok":
            raise RuntimeError("control port %d did not answer ok" % port)
    finally:
        s.close()


SIM = None
if SIM_TIME:
    SIM = SimTime(SIM_TICKS0)
    sys.modules["time"] = SIM
import time  # noqa: E402 - the simulated one when SIM_TIME: the firmware imported below sees the same

from clockterm import clock as clk, sntp  # noqa: E402 - after time is replaced


class SimAsyncio:
    # asyncio as the SNTP module sees it under simulated time: long sleeps are skipped.
    def __init__(self):
        self.core = asyncio.core
        self.create_task = asyncio.create_task
        self.current_task = asyncio.current_task
        self.CancelledError = asyncio.CancelledError

    def sleep_ms(self, ms):
        if ms >= SKIP_MIN_MS:
            SIM.skip(ms)
            ms = 0
        return asyncio.sleep_ms(ms)


def sim_sleeps(mod):
    mod.asyncio = SimAsyncio()


class FakeRTC:
    # The host clock (simulated when SIM_TIME) + offset + drift; battery-backed unless told otherwise.
    def __init__(self, offset_ms=0, drift_ppm=0, battery=True):
        self.h0 = time.time_ns() // 1000000
        self.v0 = self.h0 + offset_ms
        self.drift_ppm = drift_ppm
        self.battery = battery
        self.sets = 0

    def now_ms(self):
        e = time.time_ns() // 1000000 - self.h0
        return self.v0 + e + e * self.drift_ppm // 1000000

    def set_ms(self, ms):
        self.h0 = time.time_ns() // 1000000
        self.v0 = ms
        self.sets += 1


def host_ms():
    return time.time_ns() // 1000000


def host_us():
    return time.time_ns() // 1000


_n = 0


def clock_path():
    global _n
    _n += 1
    return "%s/clock-%d.json" % (os.getenv("CT_STORE"), _n)


def fresh_clock(offset_ms=0, drift_ppm=0, battery=True):
    return clk.Clock(FakeRTC(offset_ms, drift_ppm, battery), clock_path())


def err_ms(c):
    # the clock's error now (ms, clock - host) and what it says its uncertainty is
    utc, q, unc = c.now()
    return utc - host_ms(), q, unc


async def ticker(gaps):
    # the longest gaps between 1 ms sleeps: how long the event loop was held
    last = _rt.ticks_ms()
    while True:
        await asyncio.sleep_ms(1)
        now = _rt.ticks_ms()
        gaps.append(_rt.ticks_diff(now, last))
        last = now


def result(d):
    print("R " + json.dumps(d))


async def rounds(sup, seconds, tag):
    """Run sup's rounds as its run() task does, for `seconds` of (simulated) time, printing one line
    per round: "Q <tag> [s since start, sync_once's answer, clock steps, the held step (ms) or None,
    clock error (ms, clock - host), its uncertainty, supervisor state]" (printed as they come: a
    day of rounds kept in a list would crowd the heap the firmware under test has)."""
    c = sup.clock
    t0 = host_ms()
    while host_ms() - t0 < seconds * 1000:
        ok = await sup.sync_once()
        delay = sup._after(ok)
        e, q, unc = err_ms(c)
        print("Q %s %s" % (tag, json.dumps([(host_ms() - t0) // 1000, ok, c.steps,
                                            c.pending and c.pending[1] // 1000, e, unc, sup.state])))
        await sntp.asyncio.sleep_ms(delay)
