# MicroPython side of the SNTP tests (tests/test_sntp.py): the cases, each a run of clockterm.sntp's
# Supervisor against the test's servers (chronyd, scripted hostile ones) or a socket module of its own.
# Each prints what it saw as JSON: one document on its last line, or a line "R <json>" per server case
# (result()), and the rounds that rounds() prints as "Q <tag> <json>".
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml),
# after the harness tests/sntp_mp.py (fresh_clock, host_ms, err_ms, ticker, result, rounds, sim_sleeps,
# SIM; its text comes first, with its own settings SIM_TIME, SIM_TICKS0 and SIM_CONTROL). The test
# prepends this file's settings as assignments (mp.script): CASE, the case to run (a key of CASES at the
# end), and the case's own: PORT (a server's port), PORTS (ports by name), SERVERS (the servers to
# configure), SERVER_CASES (a list of cases, each with its servers); then it appends a call of main().
# Not collected by pytest (no test_ prefix).

import asyncio
import json
import socket
import time  # the harness's: the simulated one under SIM_TIME

from clockterm import sntp

CASE = globals().get("CASE", "resolve")
PORT = globals().get("PORT", 123)
PORTS = globals().get("PORTS", {})
SERVERS = globals().get("SERVERS", [])
SERVER_CASES = globals().get("SERVER_CASES", [])

# The harness's names (tests/sntp_mp.py, whose text comes first)
fresh_clock = globals().get("fresh_clock")
host_ms = globals().get("host_ms")
err_ms = globals().get("err_ms")
ticker = globals().get("ticker")
result = globals().get("result")
rounds = globals().get("rounds")
sim_sleeps = globals().get("sim_sleeps")
SIM = globals().get("SIM")


# --- replies and servers ----------------------------------------------------------------------------

async def hostile():
    # SERVER_CASES: (name, port) of scripted servers, one sync each, on a clock whose RTC is 7 s slow
    for name, port in SERVER_CASES:
        c = fresh_clock(offset_ms=-7000)  # the RTC is 7 s slow: a wrong set would show
        sup = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": port, "samples": 1,
                                  "timeout_ms": 400, "min_poll_s": 0, "max_offset_ms": 1000})
        ok = await sup.sync_once()
        s = sup.status()["servers"][0]
        utc, q, unc = c.now()
        print("R " + json.dumps({"name": name, "ok": ok, "reject": s["last_reject"], "dropped": s["dropped"],
                                 "min_poll_s": s["min_poll_s"], "rejects": sup.rejects,
                                 "err_ms": utc - host_ms(), "quality": q, "rtc_sets": c.rtc.sets,
                                 "offset_ms": c.offset_ms}))


async def kod():
    # PORTS: "rate" and "deny", two rounds each, the second past min_poll_s
    out = {}
    for name in ("rate", "deny"):
        c = fresh_clock()
        sup = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": PORTS[name], "samples": 4,
                                  "burst_gap_ms": 10, "timeout_ms": 300, "min_poll_s": 1})
        r1 = await sup.sync_once()
        await asyncio.sleep_ms(1100)  # past min_poll_s, but RATE asked for longer / DENY is final
        r2 = await sup.sync_once()
        s = sup.status()["servers"][0]
        out[name] = [r1, r2, s["min_poll_s"], s["dropped"], sup.rejects, c.last_sync_ms]
    print(json.dumps(out))


async def replay():
    sup = sntp.Supervisor(fresh_clock(), {"servers": ["127.0.0.1"], "port": PORT, "samples": 1,
                                          "min_poll_s": 0})
    res = []
    for _ in range(3):
        ok = await sup.sync_once()
        res.append("ok" if ok else sup.status()["servers"][0]["last_reject"])
    print(json.dumps(res))


async def majority():
    # SERVERS: three "host:port", one sync on a clock whose RTC is 500 s fast
    c = fresh_clock(offset_ms=500000)
    sup = sntp.Supervisor(c, {"servers": SERVERS,
                              "samples": 2, "burst_gap_ms": 5, "timeout_ms": 400, "min_poll_s": 0})
    ok = await sup.sync_once()
    utc, q, unc = c.now()
    print(json.dumps([ok, utc - host_ms(), q, sup.last_error]))


class Y2KTime:  # an ESP32's time module: time_ns counts from 2000 (the firmware's PORT_TO_UNIX_S says so)
    def __getattr__(self, name):
        return getattr(_rt, name)  # noqa: F821 (tests/sntp_mp.py, in front of this script)

    def time_ns(self):
        return _rt.time_ns() - 946684800 * 1000000000  # noqa: F821


async def chrony():
    # PORT: chronyd on localhost; the RTC an hour off and drifting 50 ppm. EPOCH_2000: sntp's time
    # counts from 2000, as on an ESP32
    if globals().get("EPOCH_2000"):
        sntp.time = Y2KTime()
        sntp.PORT_TO_UNIX_S = 946684800
    c = fresh_clock(offset_ms=3600000, drift_ppm=50)
    t_pre = c.now()
    sup = sntp.Supervisor(c, {"servers": ["localhost"], "port": PORT, "samples": 4, "burst_gap_ms": 20,
                              "timeout_ms": 1000, "min_poll_s": 0, "max_offset_ms": 1000})
    gaps = []
    tk = asyncio.create_task(ticker(gaps))
    ok = await sup.sync_once()
    tk.cancel()
    errs = []
    for _ in range(50):
        utc, q, unc = c.now()
        errs.append(utc - host_ms())
        await asyncio.sleep_ms(7)
    st = c.status()
    sst = sup.status()
    print(json.dumps({"ok": ok, "pre_q": t_pre[1], "errs": errs, "q": q, "unc": unc, "status": st,
                      "sntp": sst, "max_gap": max(gaps), "rtc_err": c.rtc.now_ms() - host_ms()}))


async def min_poll():
    c = fresh_clock()
    sup = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": PORT, "samples": 1, "timeout_ms": 300,
                              "min_poll_s": 1})
    sup.interval_ms = 50  # asks for far more than the limit allows
    t = asyncio.create_task(sup.run())
    await asyncio.sleep_ms(3500)
    t.cancel()
    sup2 = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": PORT, "samples": 1, "timeout_ms": 300})
    first = await sup2.sync_once()  # no min_poll_s: the default limit, MIN_POLL_S
    again = await sup2.sync_once()  # no server may be polled yet
    second = await sup2.poll(sup2.servers[0])  # nor by calling poll directly
    print(json.dumps([sup.rounds, first, again, second if isinstance(second, str) else "polled",
                      sntp.MIN_POLL_S, sup2.status()["servers"][0]["min_poll_s"]]))


async def backoff():
    # PORT: a silent server; the delays before the retries of a supervisor that never syncs
    c = fresh_clock()
    sup = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": PORT, "samples": 1, "timeout_ms": 50,
                              "min_poll_s": 0, "stale_after_s": 1})
    sup.first_retry_ms = 100
    sup.first_retry_max_ms = 800
    delays = []
    t = asyncio.create_task(sup.run())
    last = 0
    for _ in range(400):
        await asyncio.sleep_ms(10)
        if sup.next_ms != last:
            last = sup.next_ms
            delays.append(last)
    t.cancel()
    print(json.dumps([delays, sup.status(), c.status()]))


async def resolve():
    c = fresh_clock()
    sup = sntp.Supervisor(c, {"servers": ["no-such-host.invalid"], "port": 123, "samples": 1,
                              "timeout_ms": 50})
    ok = await sup.sync_once()
    print(json.dumps([ok, sup.last_error]))


# --- selection: falsetickers, majorities ----------------------------------------------------------

async def select():
    # SERVER_CASES: (name, servers), one sync each on a clock whose RTC is 7 s slow
    for name, servers in SERVER_CASES:
        c = fresh_clock(offset_ms=-7000)
        sup = sntp.Supervisor(c, {"servers": servers, "samples": 2, "burst_gap_ms": 5, "timeout_ms": 400,
                                  "min_poll_s": 0})
        ok = await sup.sync_once()
        e, q, unc = err_ms(c)
        st = sup.status()
        result({"name": name, "ok": ok, "err": e, "q": q, "unc": unc, "alerts": sorted(c.alerts()),
                "false": [s["falseticker"] for s in st["servers"]], "server": c.status()["server"],
                "last_error": sup.last_error})


# --- step discipline and polling, over hours of simulated time (SIM_TIME) --------------------------

async def discipline():
    # SERVER_CASES: (name, servers, config changes, hours): the rounds of each, then its alerts and last step
    sim_sleeps(sntp)
    for name, servers, extra, hours in SERVER_CASES:
        c = fresh_clock()
        cfg = {"servers": servers, "timeout_ms": 300}
        cfg.update(extra)
        sup = sntp.Supervisor(c, cfg)
        await rounds(sup, hours * 3600, name)
        st = c.status()
        result({"name": name, "alerts": sorted(st["alerts"]), "last_step": st["last_step"],
                "false": [s["falseticker"] for s in sup.status()["servers"]]})


async def nulls():
    # PORT: a good server; the optional sntp fields given as null (SIM_TIME)
    sim_sleeps(sntp)
    c = fresh_clock()
    sup = sntp.Supervisor(c, {"servers": ["127.0.0.1:%d" % PORT], "samples": 2, "timeout_ms": 300,
                              "min_poll_s": None, "burst_gap_ms": None, "owned": None, "panic_ms": None,
                              "stepout_s": None})
    ok = await sup.sync_once()
    print(json.dumps([ok, sup.status()["servers"][0]["min_poll_s"], c.panic_ms, c.stepout_s, SIM.skipped]))


# --- the receive loop ----------------------------------------------------------------------------

async def timed_sync(sup, after_ms):
    # One sync_once with a ticker beside it: (its result, the ms it took, the ticker's gaps: how long the
    # loop was held), the ticker kept on after_ms more
    gaps = []
    tk = asyncio.create_task(ticker(gaps))
    await asyncio.sleep_ms(20)
    t0 = time.ticks_ms()
    ok = await sup.sync_once()
    took = time.ticks_diff(time.ticks_ms(), t0)
    await asyncio.sleep_ms(after_ms)
    tk.cancel()
    return ok, took, gaps


async def flood():
    # PORT: a server that answers each request with a stream of wrong-origin replies
    c = fresh_clock()
    sup = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": PORT, "samples": 1, "timeout_ms": 1000,
                              "min_poll_s": 0})
    ok, took, gaps = await timed_sync(sup, 50)
    print(json.dumps({"ok": ok, "took": took, "max_gap": max(gaps), "rejects": sup.rejects,
                      "reject": sup.status()["servers"][0]["last_reject"]}))


class Endless:  # a socket module whose socket always has one more wrong packet to read
    AF_INET = socket.AF_INET
    SOCK_DGRAM = socket.SOCK_DGRAM
    reads = 0

    def getaddrinfo(self, host, port, af, kind):
        return [(af, kind, 0, "", ("10.9.8.7", 123))]

    def socket(self, af, kind):
        return self

    def setblocking(self, flag):
        pass

    def sendto(self, data, addr):
        self.sent = bytes(data)

    def recvfrom(self, n):
        Endless.reads += 1
        if Endless.reads > 100000:
            raise RuntimeError("still reading after 100000 packets")
        junk = bytearray(48)
        junk[0] = 0x24  # version 4, mode 4: a server's answer, but not to our request
        return bytes(junk), ("10.9.8.7", 123)

    def close(self):
        pass


async def endless():
    c = fresh_clock()
    sup = sntp.Supervisor(c, {"servers": ["10.9.8.7"], "samples": 3, "burst_gap_ms": 10, "timeout_ms": 1000,
                              "min_poll_s": 0}, sock_mod=Endless())
    ok, took, gaps = await timed_sync(sup, 0)
    print(json.dumps({"ok": ok, "took": took, "max_gap": max(gaps), "reads": Endless.reads,
                      "rejects": sup.rejects, "turns": len(gaps)}))


CASES = {"hostile": hostile, "kod": kod, "replay": replay, "majority": majority, "chrony": chrony,
         "min_poll": min_poll, "backoff": backoff, "resolve": resolve, "select": select,
         "discipline": discipline, "nulls": nulls, "flood": flood, "endless": endless}


def main():
    asyncio.run(CASES[CASE]())
