"""SNTP accuracy against chrony on loopback: our client vs a whole-seconds (ntptime-like) baseline.

Error = |client's estimate of UTC - host UTC| at the moment of receipt. chronyd runs with -x, so it
serves the host clock, and the host clock is also what the client reads (time.time_ns) for its own
side of the comparison: a perfect client has error 0. Both clients run in one micropython process,
interleaved, with random spacing between queries (not back to back).
"""

from __future__ import annotations

import statistics

from mp import mp_json
from ntp_fixtures import chrony

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
    cl = sntp.Supervisor(clk.Clock(RTC(), "/tmp/ct-bench-sntp0.json"), {"servers": ["127.0.0.1"], "port": PORT,
                         "samples": 4, "burst_gap_ms": 10, "min_poll_s": 0})
    await cl.sync_once()
    srv = cl.servers[0]
    os.remove("/tmp/ct-bench-sntp0.json")
    ours, base = [], []
    for i in range(N):
        smp = await cl.poll(srv)  # (t_ms, utc_us, delay_us, err_us, offset_us, stratum, server) or a reason
        if isinstance(smp, str):
            raise RuntimeError("sntp poll refused: " + smp)
        ours.append(smp[4])
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


def run() -> dict[str, dict[str, float]]:
    with chrony() as port:
        got = mp_json(_SCRIPT.replace("@port@", str(port)).replace("@n@", str(N)), timeout=300)
    ours = [abs(x) / 1000 for x in got["ours"]]  # type: ignore[index]
    base = [abs(x) / 1000 for x in got["base"]]  # type: ignore[index]
    stamps = [abs(x) for x in got["stamps"]]  # type: ignore[index]
    p50, b50 = statistics.median(ours), statistics.median(base)
    return {"sntp": {
        "err_ms_p50": round(p50, 4),
        "err_ms_p95": round(_pct(ours, 95), 4),
        "err_ms_max": round(max(ours), 4),
        "baseline_err_ms_p50": round(b50, 3),
        "baseline_err_ms_p95": round(_pct(base, 95), 3),
        "baseline_err_ms_max": round(max(base), 3),
        "baseline_over_ours_p50": round(b50 / p50, 1) if p50 > 0 else float("inf"),
        "stamp_err_ms_max": max(stamps),
        "n": N,
    }}


if __name__ == "__main__":
    print(run())
