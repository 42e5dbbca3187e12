"""clockterm.sntp against real chronyd instances on loopback and scripted hostile servers.

The MicroPython side (a fake RTC on the host clock, fresh Clocks, a loop-stall ticker, simulated time)
is tests/sntp_mp.py. Tests that need hours of polling run under its simulated time: the SNTP
module's long sleeps are skipped, the ticks wrap every 2**30 ms as an ESP32's do, and the scripted
servers learn each skip on their control port, so both sides agree on the time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from mp import run_mp
from ntp_fixtures import (
    BEHAVIOURS_EXTRA,
    HOSTILE,
    HostileServer,
    chrony,
    flooder,
    jumper,
    rate_after,
    silent_between,
    tight_liar,
)

HARNESS = (Path(__file__).parent / "sntp_mp.py").read_text()
TICKS_WRAP = 1 << 30  # an ESP32's ticks_ms period


def run(body: str, sim: bool = False, ticks0: int = 0, control: list[int] | None = None, **subs: object) -> object:
    """The harness + body under micropython; each @NAME@ in body is replaced by repr(subs[NAME]).

    sim: simulated time (ticks start at ticks0; control: the scripted servers' control ports).
    Returns the JSON of the last output line; lines starting with "R " are JSON results collected
    into a list instead when there are any (for sweeps that print one result per case)."""
    for k, v in subs.items():
        body = body.replace(f"@{k}@", repr(v))
    settings = f"SIM_TIME = {sim!r}\nSIM_TICKS0 = {ticks0!r}\nSIM_CONTROL = {control or []!r}\n"
    store = tempfile.mkdtemp(prefix="ct-sntp-")
    try:
        r = run_mp(settings + HARNESS + body, timeout=180, env={"CT_STORE": store})
    finally:
        shutil.rmtree(store, ignore_errors=True)
    res = [json.loads(ln[2:]) for ln in r.stdout.splitlines() if ln.startswith("R ")]
    if res:
        return res
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert lines, f"no output\n{r.stderr}"
    return json.loads(lines[-1])


def test_hostile_replies_are_all_rejected_and_the_clock_is_never_set_wrong() -> None:
    behaviours = {name: b for name, (b, _) in HOSTILE.items()}
    with HostileServer(behaviours) as hs:
        script = """
CASES = @cases@
async def main():
    for name, port in CASES:
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
asyncio.run(main())
"""
        res = run(script, cases=sorted(hs.ports.items()))
        got = {g["name"]: g for g in res}  # type: ignore[union-attr]
    bad = []
    for name, (_, want) in HOSTILE.items():
        g = got[name]
        if want == "ok":
            if not (g["ok"] is True and abs(g["err_ms"]) <= 5 and g["quality"] == 1):
                bad.append(f"{name}: expected a good sync, got {g}")
            continue
        if g["ok"] is not False or g["reject"] != want:
            bad.append(f"{name}: expected reject {want!r}, got {g}")
        # one request, one refusal, counted once (a refused packet, then the wait running out, is
        # the packet's reason once, not twice)
        if g["rejects"] != {want: 1}:
            bad.append(f"{name}: expected rejects {{{want!r}: 1}}, got {g['rejects']}")
        # never set: still on the (7 s slow) RTC time, unsynced, RTC untouched
        if not (g["quality"] == 0 and g["rtc_sets"] == 0 and -7100 < g["err_ms"] < -6900):
            bad.append(f"{name}: the clock moved: {g}")
    assert not bad, "\n".join(bad)
    assert got["kod_rate_ntpsec"]["min_poll_s"] >= 64 and got["kod_rate"]["min_poll_s"] >= 64
    assert got["kod_deny"]["dropped"] == "DENY" and got["kod_rstr"]["dropped"] == "RSTR"
    assert got["kod_other"]["dropped"] is None and got["kod_rate"]["dropped"] is None
    # the junk before the real reply is counted, packet by packet, and the reply still taken
    assert got["flood_then_good"]["rejects"] == {"origin": 5, "source": 1, "length": 1}


def test_kod_rate_lengthens_poll_and_deny_drops_for_good() -> None:
    behaviours = {"rate": HOSTILE["kod_rate_ntpsec"][0], "deny": HOSTILE["kod_deny"][0]}
    with HostileServer(behaviours) as hs:
        script = """
async def main():
    out = {}
    for name in ("rate", "deny"):
        c = fresh_clock()
        sup = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": @ports@[name], "samples": 4,
                                  "burst_gap_ms": 10, "timeout_ms": 300, "min_poll_s": 1})
        r1 = await sup.sync_once()
        await asyncio.sleep_ms(1100)  # past min_poll_s, but RATE asked for longer / DENY is final
        r2 = await sup.sync_once()
        s = sup.status()["servers"][0]
        out[name] = [r1, r2, s["min_poll_s"], s["dropped"], sup.rejects, c.last_sync_ms]
    print(json.dumps(out))
asyncio.run(main())
"""
        got = run(script, ports=hs.ports)
        requests = dict(hs.requests)
    # RATE: the burst stops at the kiss; the next round finds the server not yet due
    assert got["rate"][:4] == [False, None, 64, None]
    assert got["deny"][:4] == [False, False, 1, "DENY"]
    assert got["rate"][5] is None and got["deny"][5] is None
    assert requests == {"rate": 1, "deny": 1}


def test_repeated_transmit_timestamp_is_a_replay() -> None:
    with HostileServer({"rep": BEHAVIOURS_EXTRA["repeat_xmt"]}) as hs:
        script = """
async def main():
    sup = sntp.Supervisor(fresh_clock(), {"servers": ["127.0.0.1"], "port": @port@, "samples": 1,
                                          "min_poll_s": 0})
    res = []
    for i in range(3):
        ok = await sup.sync_once()
        res.append("ok" if ok else sup.status()["servers"][0]["last_reject"])
    print(json.dumps(res))
asyncio.run(main())
"""
        assert run(script, port=hs.ports["rep"]) == ["ok", "xmt-repeat", "xmt-repeat"]


def test_falseticker_outvoted_and_host_port_syntax() -> None:
    b = {"good": HOSTILE["good"][0], "liar": BEHAVIOURS_EXTRA["liar_plus_hour"],
         "good_b": BEHAVIOURS_EXTRA["good_b"], "y2036": BEHAVIOURS_EXTRA["liar_2036"]}
    with HostileServer(b) as hs:
        p = hs.ports
        script = """
async def main():
    c = fresh_clock(offset_ms=500000)
    sup = sntp.Supervisor(c, {"servers": [@a@, @b@, @c@],
                              "samples": 2, "burst_gap_ms": 5, "timeout_ms": 400, "min_poll_s": 0})
    ok = await sup.sync_once()
    utc, q, unc = c.now()
    print(json.dumps([ok, utc - host_ms(), q, sup.last_error]))
asyncio.run(main())
"""
        ok, err, q, last_error = run(script, a=f"127.0.0.1:{p['liar']}", b=f"127.0.0.1:{p['good']}",
                                     c=f"127.0.0.1:{p['y2036']}")
        # three answers, no two agreeing (an hour ahead, honest, 2036): no majority, no sync
        assert (ok, q) == (False, 0)
        # which ones, in configured order
        assert last_error == f"no majority: 127.0.0.1:{p['liar']}, 127.0.0.1:{p['good']}, 127.0.0.1:{p['y2036']}"
        assert 499000 < err < 501000  # still the RTC's time
        ok2, err2, q2, _ = run(script, a=f"127.0.0.1:{p['liar']}", b=f"127.0.0.1:{p['good']}",
                               c=f"127.0.0.1:{p['good_b']}")
    # liar, honest, honest: the liar is outvoted
    assert ok2 is True and abs(err2) <= 5 and q2 == 1


def test_sync_against_chrony_with_rtc_an_hour_off() -> None:
    with chrony() as port:
        script = """
async def ticker(gaps):
    last = time.ticks_ms()
    while True:
        await asyncio.sleep_ms(1)
        now = time.ticks_ms()
        gaps.append(time.ticks_diff(now, last))
        last = now

async def main():
    c = fresh_clock(offset_ms=3600000, drift_ppm=50)
    t_pre = c.now()
    sup = sntp.Supervisor(c, {"servers": ["localhost"], "port": @port@, "samples": 4, "burst_gap_ms": 20,
                              "timeout_ms": 1000, "min_poll_s": 0, "max_offset_ms": 1000})
    gaps = []
    tk = asyncio.create_task(ticker(gaps))
    ok = await sup.sync_once()
    tk.cancel()
    errs = []
    for i in range(50):
        utc, q, unc = c.now()
        errs.append(utc - host_ms())
        await asyncio.sleep_ms(7)
    st = c.status()
    sst = sup.status()
    print(json.dumps({"ok": ok, "pre_q": t_pre[1], "errs": errs, "q": q, "unc": unc, "status": st,
                      "sntp": sst, "max_gap": max(gaps), "rtc_err": c.rtc.now_ms() - host_ms()}))
asyncio.run(main())
"""
        got = run(script, port=port)
    assert got["ok"] is True and got["pre_q"] == 0 and got["q"] == 1
    assert max(abs(e) for e in got["errs"]) <= 2, got["errs"]
    st = got["status"]
    assert st["synced"] is True and st["stratum"] == 8 and st["server"] == "localhost"
    assert abs(st["presync_delta_ms"] + 3600000) <= 5
    assert set(st["alerts"]) == {"rtc"}  # the first sync corrected the boot time by more than max_offset_ms
    assert st["last_step"]["servers"] == "localhost" and abs(st["last_step"]["offset_ms"] + 3600000) <= 5
    assert 1 <= got["unc"] < 50
    assert abs(got["rtc_err"]) <= 5  # the RTC was set to the corrected time
    assert got["max_gap"] < 50, "the event loop was blocked during the sync"
    assert got["sntp"]["servers"][0]["good"] == 1 and got["sntp"]["servers"][0]["polls"] == 4


def test_min_poll_holds_whatever_the_interval() -> None:
    with HostileServer({"good": HOSTILE["good"][0]}) as hs:
        script = """
async def main():
    c = fresh_clock()
    sup = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": @port@, "samples": 1, "timeout_ms": 300,
                              "min_poll_s": 1})
    sup.interval_ms = 50  # asks for far more than the limit allows
    t = asyncio.create_task(sup.run())
    await asyncio.sleep_ms(3500)
    t.cancel()
    sup2 = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": @port@, "samples": 1, "timeout_ms": 300})
    first = await sup2.sync_once()  # no min_poll_s: the default limit, MIN_POLL_S
    again = await sup2.sync_once()  # no server may be polled yet
    second = await sup2.poll(sup2.servers[0])  # nor by calling poll directly
    print(json.dumps([sup.rounds, first, again, second if isinstance(second, str) else "polled",
                      sntp.MIN_POLL_S, sup2.status()["servers"][0]["min_poll_s"]]))
asyncio.run(main())
"""
        rounds, first, again, second, min_poll, srv_poll = run(script, port=hs.ports["good"])
        n = hs.requests["good"]
    assert min_poll == 16 and srv_poll == 16
    assert first is True and again is None and second == "too-soon"
    assert rounds == 4 and n == 5  # t = 0, 1, 2, 3 s, plus sup2's one sync (not the refused poll)


def test_backoff_before_first_sync_and_alerts() -> None:
    with HostileServer({"silent": HOSTILE["silent"][0]}) as hs:
        script = """
async def main():
    c = fresh_clock()
    sup = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": @port@, "samples": 1, "timeout_ms": 50,
                              "min_poll_s": 0, "stale_after_s": 1})
    sup.first_retry_ms = 100
    sup.first_retry_max_ms = 800
    delays = []
    t = asyncio.create_task(sup.run())
    last = 0
    for i in range(400):
        await asyncio.sleep_ms(10)
        if sup.next_ms != last:
            last = sup.next_ms
            delays.append(last)
    t.cancel()
    print(json.dumps([delays, sup.status(), c.status()]))
asyncio.run(main())
"""
        delays, sst, cst = run(script, port=hs.ports["silent"])
    # 100, 200, 400, 800, 800 ... each within +-25 % jitter
    bases = [100, 200, 400, 800]
    assert len(delays) >= 4
    for d, b in zip(delays, bases, strict=False):
        assert 0.75 * b <= d <= 1.25 * b, (delays, b)
    assert sst["state"] == "retrying" and sst["failures"] >= 4
    assert set(cst["alerts"]) == {"stale", "servers"} and cst["quality"] == "unsynced"


@pytest.mark.parametrize("n", [1])
def test_resolve_failure_is_reported_not_raised(n: int) -> None:
    script = """
async def main():
    c = fresh_clock()
    sup = sntp.Supervisor(c, {"servers": ["no-such-host.invalid"], "port": 123, "samples": 1,
                              "timeout_ms": 50})
    ok = await sup.sync_once()
    print(json.dumps([ok, sup.last_error]))
asyncio.run(main())
"""
    t0 = time.monotonic()
    ok, err = run(script)
    assert ok is False and "no server" in err
    assert time.monotonic() - t0 < 30
