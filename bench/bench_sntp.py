"""SNTP against real servers on loopback, each figure beside a same-run baseline.

Accuracy: error = |client's estimate of UTC - host UTC| at the moment of receipt, against chrony
(-x: it serves the host clock, which is also what the client reads with time.time_ns: a perfect
client has error 0), our client vs a whole-seconds (ntptime-like) one, interleaved in one process.

Hostile servers (tests/ntp_fixtures.py, the MicroPython side in tests/sntp_mp.py):
- falseticker_err_ms_max: the clock's stamp error after a sync with three servers, one of which lies
  by up to a second while claiming a root distance of ~0; two honest set-ups (a pair of chronyd,
  and a pair of scripted servers claiming ~23 ms as public servers do). Baseline: the previous
  selection (the tightest claimed bound in the largest group agreeing within 128 ms), fed the same
  answers.
- step_false_accepts: steps taken on single-server jumps that were never confirmed (spikes of one
  or two answers, 0.2 to 3 s), in 3 h of simulated time each. Baseline: the steps the previous
  discipline (step on any offset above 128 ms) takes on the same answers (there, and back).
- requests_24h: requests one server gets in 24 h of simulated time with the default config.
  Baseline: the previous policy, a burst of `samples` requests at every poll.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

from mp import mp_json, run_mp
from ntp_fixtures import BEHAVIOURS_EXTRA, HostileServer, chrony, jumper, tight_liar

N = 200  # measurements per client

_SCRIPT = """
import asyncio, json, os, random, socket, struct, time
from clockterm import sntp, clock as clk

PORT = @port@
N = @n@

def baseline_once(addr):
    # what micropython-lib's ntptime does: one request, whole seconds of the transmit timestamp
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(1)
        q = bytearray(48)
        q[0] = 0x1B
        s.sendto(q, addr)
        msg = s.recv(48)
        local_us = time.time_ns() // 1000
    finally:
        s.close()
    val = struct.unpack("!I", msg[40:44])[0]
    return (val - 2208988800) * 1000000 - local_us

class RTC:
    battery = True
    def __init__(self):
        self.off = 3600000
    def now_ms(self):
        return time.time_ns() // 1000000 + self.off
    def set_ms(self, ms):
        self.off = ms - time.time_ns() // 1000000

async def main():
    addr = socket.getaddrinfo("127.0.0.1", PORT)[0][-1]
    # (owned: a burst of 4 requests at every poll, the minimum-delay answer kept)
    cl = sntp.Supervisor(clk.Clock(RTC(), "/tmp/ct-bench-sntp0.json"), {"servers": ["127.0.0.1"], "port": PORT,
                         "samples": 4, "burst_gap_ms": 10, "min_poll_s": 0, "owned": ["127.0.0.1"]})
    await cl.sync_once()
    srv = cl.servers[0]
    os.remove("/tmp/ct-bench-sntp0.json")
    ours, base = [], []
    for i in range(N):
        smp = await cl.poll(srv)  # (t_ms, utc_us, delay_us, dist_us, offset_us, stratum) or a reason
        if isinstance(smp, str):
            raise RuntimeError("sntp poll refused: " + smp)
        ours.append(smp[4])  # offset_us: the sample's UTC against the host clock
        await asyncio.sleep_ms(random.randint(5, 40))
        base.append(baseline_once(addr))
        await asyncio.sleep_ms(random.randint(5, 40))
    # the Clock's millisecond stamps after one sync (RTC an hour off): what a tap would get
    c = clk.Clock(RTC(), "/tmp/ct-bench-sntp.json")
    sup = sntp.Supervisor(c, {"servers": ["127.0.0.1"], "port": PORT, "samples": 4, "burst_gap_ms": 10,
                              "min_poll_s": 0})
    await sup.sync_once()
    stamps = []
    for i in range(100):
        await asyncio.sleep_ms(random.randint(1, 30))
        stamps.append(c.now()[0] - time.time_ns() // 1000000)
    os.remove("/tmp/ct-bench-sntp.json")
    print(json.dumps({"ours": ours, "base": base, "stamps": stamps}))
asyncio.run(main())
"""


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


HARNESS = (Path(__file__).resolve().parents[1] / "tests" / "sntp_mp.py").read_text()
LIES_MS = [-900, -500, -200, -100, -50, -20, -10, -5, -2, 2, 5, 10, 20, 50, 100, 200, 500, 900]

_FALSETICKER = """
CASES = @cases@
def old_choice(smps):
    # the previous selection: the largest group agreeing within 128 ms plus their claimed bounds
    # (delay/2 + root distance, no floor), if a majority; its tightest claim
    t0 = smps[0][0]
    group = []
    for a in smps:
        ua = a[1] - time.ticks_diff(a[0], t0) * 1000
        g = [b for b in smps if abs(ua - b[1] + time.ticks_diff(b[0], t0) * 1000) <= 128000 + a[6] + b[6]]
        if len(g) > len(group):
            group = g
    if len(group) * 2 <= len(smps):
        return None
    return min(group, key=lambda s: s[6])

async def main():
    for lie, servers, claims in CASES:
        # the baseline, fed each server's answer (the classic offset: what following it would do)
        c = fresh_clock()
        sup = sntp.Supervisor(c, {"servers": servers, "samples": 1, "timeout_ms": 400, "min_poll_s": 0})
        await sup.sync_once()  # resolves, and syncs ours
        smps = []
        for s, claim in zip(sup.servers, claims):
            s[3] = None  # (_S_LAST_POLL: poll again at once)
            a = await sup.poll(s)
            smps.append(list(a) + [a[2] // 2 + claim])  # + the bound the old code read (delay/2 + root)
        pick = old_choice(smps)
        base = None if pick is None else abs(pick[4]) / 1000
        # ours: the stamps of a clock synced from the same three servers
        c = fresh_clock(offset_ms=3600000)
        sup = sntp.Supervisor(c, {"servers": servers, "samples": 2, "burst_gap_ms": 10, "timeout_ms": 400,
                                  "min_poll_s": 0})
        ok = await sup.sync_once()
        worst = 0
        for i in range(20):
            await asyncio.sleep_ms(3)
            worst = max(worst, abs(err_ms(c)[0]))
        result({"lie": lie, "ok": ok, "ours": worst, "base": base})
asyncio.run(main())
"""

_STEPS = """
sim_sleeps(sntp)
CASES = @cases@
ANSWER = 9  # in sntp's server record (_S_ANSWER): its last good answer, (t_ms, utc_us, ...)
async def main():
    for name, port in CASES:
        c = fresh_clock()
        sup = sntp.Supervisor(c, {"servers": ["127.0.0.1:%d" % port], "timeout_ms": 300})
        # the previous discipline, shadowed: a clock that steps on any offset above 128 ms (and
        # follows smaller ones); shadow is how far it would be from ours, in ms
        would = 0
        shadow = 0
        seen = None
        t0 = host_ms()
        while host_ms() - t0 < 3 * 3600 * 1000:
            ok = await sup.sync_once()
            a = sup.servers[0][ANSWER]
            if a is not None and a is not seen:
                t = time.ticks_ms()
                x = (a[1] + c.elapsed_us(a[0], t)[0]) // 1000 - c.now()[0]
                if seen is not None and abs(x - shadow) > 128:
                    would += 1
                shadow = x
                seen = a
            await sntp.asyncio.sleep_ms(sup._after(ok))
        result({"name": name, "false_steps": c.steps - 1, "would": would})
asyncio.run(main())
"""

_DAY = """
sim_sleeps(sntp)
CFG = @cfg@
async def main():
    c = fresh_clock()
    sup = sntp.Supervisor(c, CFG)
    t0 = host_ms()
    while host_ms() - t0 < 24 * 3600 * 1000:
        ok = await sup.sync_once()
        await sntp.asyncio.sleep_ms(sup._after(ok))
    result({"syncs": c.syncs, "state": sup.state})
asyncio.run(main())
"""


def _mp(body: str, sim: bool = False, control: list[int] | None = None, **subs: object) -> list[dict]:
    for k, v in subs.items():
        body = body.replace(f"@{k}@", repr(v))
    settings = f"SIM_TIME = {sim!r}\nSIM_TICKS0 = 0\nSIM_CONTROL = {control or []!r}\n"
    store = tempfile.mkdtemp(prefix="bench-sntp-")
    try:
        r = run_mp(settings + HARNESS + body, timeout=600, env={"CT_STORE": store})
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return [json.loads(ln[2:]) for ln in r.stdout.splitlines() if ln.startswith("R ")]


def falseticker() -> dict[str, float]:
    # claims: the root delay/2 + dispersion each server sends (the old code added it to delay/2)
    with ExitStack() as stack:
        c1 = stack.enter_context(chrony())
        c2 = stack.enter_context(chrony())
        hs = stack.enter_context(HostileServer({"a": BEHAVIOURS_EXTRA["good_b"], "b": BEHAVIOURS_EXTRA["good_c"],
                                                **{f"l{o}": tight_liar(o / 1000) for o in LIES_MS}}))
        wide = 1024 * 1000000 // 65536 // 2 + 1024 * 1000000 // 65536  # us: the scripted servers' claim
        p = {k: f"127.0.0.1:{v}" for k, v in hs.ports.items()}
        cases = [(o, [f"127.0.0.1:{c1}", p[f"l{o}"], f"127.0.0.1:{c2}"], [0, 0, 0]) for o in LIES_MS]
        cases += [(o, [p["a"], p[f"l{o}"], p["b"]], [wide, 0, wide]) for o in LIES_MS]
        got = _mp(_FALSETICKER, cases=cases)
    bad = [g for g in got if not g["ok"]]
    if bad:
        raise RuntimeError(f"no sync with a falseticker among three: {bad}")
    base = [g["base"] if g["base"] is not None else 0 for g in got]
    return {"falseticker_err_ms_max": max(g["ours"] for g in got),
            "baseline_falseticker_err_ms_max": round(max(base), 1), "falseticker_cases": len(got)}


def step_false_accepts() -> dict[str, float]:
    spikes = {"p500x1": (0.5, 1), "m500x1": (-0.5, 1), "p2000x1": (2.0, 1), "p200x2": (0.2, 2),
              "m3000x2": (-3.0, 2), "p800x2": (0.8, 2)}
    with HostileServer({k: jumper(6, o, count=n) for k, (o, n) in spikes.items()}) as hs:
        got = _mp(_STEPS, sim=True, control=[hs.control_port], cases=sorted(hs.ports.items()))
    return {"step_false_accepts": sum(g["false_steps"] for g in got),
            "baseline_step_false_accepts": sum(g["would"] for g in got), "step_jump_cases": len(got)}


def requests_24h() -> dict[str, float]:
    from clockterm_host.defaults import default_config

    out = {}
    for label, owned in (("requests_24h", False), ("baseline_requests_24h", True)):
        cfg = default_config("esp32-devkitc-rc522")["sntp"]
        with HostileServer({"pool": BEHAVIOURS_EXTRA["good_b"]}) as hs:
            cfg["servers"] = [f"127.0.0.1:{hs.ports['pool']}"]
            if owned:
                cfg["owned"] = cfg["servers"]  # the previous policy: a burst at every poll
            got = _mp(_DAY, sim=True, control=[hs.control_port], cfg=cfg)[0]
            if got["state"] != "synced":
                raise RuntimeError(f"not synced after a simulated day: {got}")
            out[label] = hs.requests["pool"]
    return out


def run() -> dict[str, dict[str, float]]:
    figures = accuracy()
    figures.update(falseticker())
    figures.update(step_false_accepts())
    figures.update(requests_24h())
    return {"sntp": figures}


def accuracy() -> dict[str, float]:
    with chrony() as port:
        got = mp_json(_SCRIPT.replace("@port@", str(port)).replace("@n@", str(N)), timeout=300)
    ours = [abs(x) / 1000 for x in got["ours"]]  # type: ignore[index]
    base = [abs(x) / 1000 for x in got["base"]]  # type: ignore[index]
    stamps = [abs(x) for x in got["stamps"]]  # type: ignore[index]
    p50, b50 = statistics.median(ours), statistics.median(base)
    return {
        "err_ms_p50": round(p50, 4),
        "err_ms_p95": round(_pct(ours, 95), 4),
        "err_ms_max": round(max(ours), 4),
        "baseline_err_ms_p50": round(b50, 3),
        "baseline_err_ms_p95": round(_pct(base, 95), 3),
        "baseline_err_ms_max": round(max(base), 3),
        "baseline_over_ours_p50": round(b50 / p50, 1) if p50 > 0 else float("inf"),
        "stamp_err_ms_max": max(stamps),
        "n": N,
    }


if __name__ == "__main__":
    print(run())
