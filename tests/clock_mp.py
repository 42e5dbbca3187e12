# MicroPython side of the clock discipline tests (tests/test_clock.py, and test_esp32_ticks.py's uptime):
# clockterm.clock on simulated time. The Clock takes an injected ticks_ms source, so days of drift run in
# a second; the tick source and the RTC are driven from one simulated true time (Sim, SimRTC). Each case
# prints what it saw as JSON.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): CASE, the case to run (a key of CASES at
# the end); then it appends a call of main(). The case mono_esp32 needs tests/esp32time_mp.py's text in
# front of this file's (its ESP32Time). Not collected by pytest (no test_ prefix).

import json
import os
import time

from clockterm import clock as clk

CASE = globals().get("CASE", "drift")
ESP32Time = globals().get("ESP32Time")  # tests/esp32time_mp.py's, when its text comes first


class Sim:
    # true UTC (ms, simulated) and a tick counter running (1 + tick_ppm/1e6) times as fast
    def __init__(self, t0_ms=1782864000000, tick_ppm=0):
        self.true_us = t0_ms * 1000
        self.t_us0 = self.true_us
        self.tick_ppm = tick_ppm

    def advance_ms(self, ms):
        self.true_us += ms * 1000

    def ticks(self):
        e = self.true_us - self.t_us0
        return time.ticks_add(0, (e + e * self.tick_ppm // 1000000) // 1000)

    def true_ms(self):
        return self.true_us // 1000

    def true_us_at_tick(self, t):
        # the true time at which the tick counter last read t (for exact sync samples)
        e_t = time.ticks_diff(t, 0) * 1000
        return self.t_us0 + e_t * 1000000 // (1000000 + self.tick_ppm)


class SimRTC:
    def __init__(self, sim, offset_ms=0, battery=True, dead=False):
        self.sim, self.off, self.battery, self.dead = sim, offset_ms, battery, dead
        self.sets = 0

    def now_ms(self):
        return 946684800000 if self.dead else self.sim.true_ms() + self.off

    def set_ms(self, ms):
        self.off = ms - self.sim.true_ms()
        self.dead = False
        self.sets += 1


def sync(c, sim, err_us=0):
    # an exact sample: true UTC at the tick reading of "now"
    t = sim.ticks()
    return c.correct(t, sim.true_us_at_tick(t) + err_us, 500, 300, "sim", 2)


def unique(name):
    # a path of its own for each run (the tests run side by side)
    return name % "".join("%02x" % b for b in os.urandom(4))


def drift():
    sim = Sim(tick_ppm=50)  # the tick crystal runs 50 ppm fast
    c = clk.Clock(SimRTC(sim, offset_ms=3600000), "/tmp/ct-clock-drift.json", ticks_ms=sim.ticks)
    worst = []
    drifts = []
    for _ in range(12):  # a sync every 1024 s for about 3.4 hours
        sync(c, sim)
        drifts.append(c.status()["drift_ppm"])
        w = 0
        for _ in range(16):
            sim.advance_ms(64000)
            e = abs(c.now()[0] - sim.true_ms())
            w = e if e > w else w
        worst.append(w)
    os.remove("/tmp/ct-clock-drift.json")
    print(json.dumps({"worst": worst, "drift": drifts, "status": c.status()}))


def slew():
    sim = Sim()
    c = clk.Clock(SimRTC(sim), "/tmp/ct-clock-slew.json", ticks_ms=sim.ticks)
    sync(c, sim)
    res = {}
    for name, err_ms in (("ahead", -50), ("behind", 40)):
        sync(c, sim, err_us=err_ms * 1000)  # the sample says true time differs by err_ms from ours
        # (we are at truth; the "server" claims otherwise: our clock must move by err_ms, slowly)
        prev = 0
        backwards = 0
        settle = None
        for i in range(20000):  # 20 s in 1 ms steps
            sim.advance_ms(1)
            ms = c.now()[0]
            if ms < prev:
                backwards += 1
            prev = ms
            if settle is None and ms - sim.true_ms() == err_ms:
                settle = i
        res[name] = [backwards, settle, c.now()[0] - sim.true_ms()]
    steps0 = c.steps
    # half a second: beyond step_ms, a step, but only once confirmed (three samples over stepout_s)
    held = []
    for _ in range(3):
        held.append([sync(c, sim, err_us=-500000), c.steps - steps0, c.now()[0] - sim.true_ms()])
        sim.advance_ms(150000)
    res["held"] = held
    res["step"] = [c.steps - steps0, c.now()[0] - sim.true_ms()]
    os.remove("/tmp/ct-clock-slew.json")
    print(json.dumps(res))


def quality():
    sim = Sim()
    c = clk.Clock(SimRTC(sim, offset_ms=3600000), "/tmp/ct-clock-q.json", ticks_ms=sim.ticks)
    c.max_offset_ms = 1000
    c.stale_after_s = 3600
    pre = []
    for _ in range(5):
        sim.advance_ms(7777)
        utc, q, unc = c.now()
        pre.append([utc, sim.true_ms(), q, unc])
    delta0 = c.presync_delta_ms
    unc_status = c.status()["uncertainty_ms"]
    sync(c, sim)
    fixed = [p[0] + c.presync_delta_ms - p[1] for p in pre]
    q1 = c.now()
    alerts1 = c.alerts()
    sim.advance_ms(1800000)
    q2 = c.now()
    sim.advance_ms(1900000)
    q3 = c.now()
    alerts3 = c.alerts()
    sync(c, sim)
    alerts4 = c.alerts()
    os.remove("/tmp/ct-clock-q.json")
    c.clear_alerts()
    alerts5 = c.alerts()
    print(json.dumps({"pre": pre, "delta0": delta0, "fixed": fixed, "q1": q1, "q2": q2, "q3": q3,
                      "alerts": [alerts1, alerts3, alerts4, alerts5], "delta": c.presync_delta_ms,
                      "unc_status": unc_status, "true": sim.true_ms()}))


def persistence():
    import vfs

    from clockterm.boards.norflash import NorFlash

    img = unique("/tmp/ct-clock-fs-%s.bin")
    fl = NorFlash(block_size=4096, block_count=32, path=img)  # file-backed: the image is not in RAM
    vfs.VfsLfs2.mkfs(fl)
    vfs.mount(vfs.VfsLfs2(fl), "/flash")
    p = "/flash/clock.json"
    sim = Sim(tick_ppm=-20)
    c = clk.Clock(SimRTC(sim), p, ticks_ms=sim.ticks)
    src0 = c.source
    sync(c, sim)
    sim.advance_ms(600000)
    sync(c, sim)
    stored_drift = c.status()["drift_ppm"]
    files = sorted(os.listdir("/flash"))
    sim.advance_ms(3600000)  # an hour without power; the RTC has no battery and comes up in 2000
    sim2 = Sim(t0_ms=sim.true_ms(), tick_ppm=-20)
    c2 = clk.Clock(SimRTC(sim2, dead=True, battery=False), p, ticks_ms=sim2.ticks)
    b2 = c2.now()
    # the same, but with a battery RTC that kept time
    c3 = clk.Clock(SimRTC(sim2, offset_ms=30), p, ticks_ms=sim2.ticks)
    b3 = c3.now()
    # a corrupt store is ignored
    with open(p, "w") as f:
        f.write("{not json")
    c4 = clk.Clock(SimRTC(sim2, offset_ms=30), p, ticks_ms=sim2.ticks)
    print(json.dumps({"src0": src0, "files": files, "drift": stored_drift,
                      "c2": [c2.source, b2, c2.status()["drift_ppm"]], "c3": [c3.source, b3],
                      "c4": [c4.source, c4.status()["drift_ppm"]], "true": sim2.true_ms()}))
    vfs.umount("/flash")
    os.remove(img)


def discipline():
    # After the first sync a step needs confirm_samples consistent samples over stepout_s; a change
    # beyond the clock's own bound by more than panic_ms is refused while the clock is trusted.
    p = unique("/tmp/ct-clock-disc-%s.json")
    sim = Sim()
    c = clk.Clock(SimRTC(sim), p, ticks_ms=sim.ticks)
    c.stale_after_s = 7200
    sync(c, sim)
    res = {}
    # a spike: one sample 300 ms off, then honest ones: held once, never stepped
    sim.advance_ms(60000)
    r1 = sync(c, sim, err_us=300000)
    pend = c.status()["pending"]
    sim.advance_ms(400000)
    r2 = sync(c, sim)
    res["spike"] = [r1, pend, r2 is not None, c.pending, c.steps, sorted(c.alerts())]
    # a server that changes its mind (+300 ms, -300 ms, ...) for 12 minutes: never consistent, never a step
    for i in range(6):
        sim.advance_ms(120000)
        sync(c, sim, err_us=300000 if i % 2 == 0 else -300000)
    res["flip"] = [c.steps, c.now()[0] - sim.true_ms()]
    sync(c, sim)
    # 5 s off, for good, while the clock is trusted: refused until the last sync is stale_after_s old;
    # then held and stepped once confirmed
    seen = []
    for i in range(16):
        sim.advance_ms(600000)
        r = sync(c, sim, err_us=5000000)
        seen.append({"t": (i + 1) * 600, "taken": r is not None, "steps": c.steps, "pending": c.status()["pending"],
                     "err": c.now()[0] - sim.true_ms(), "unc": c.now()[2]})
    res["panic"] = seen
    res["panic_alerts"] = sorted(c.alerts())
    res["last_step"] = c.status()["last_step"]
    # a battery RTC set from a sync an hour ago (bound ~1.7 s) is trusted at boot: a first sync 10 s
    # off is refused; one 300 ms off steps as first syncs do
    c.save()
    sim.advance_ms(3600000)
    b = clk.Clock(SimRTC(sim), p, ticks_ms=sim.ticks)
    unc0 = b.now()[2]
    rb1 = sync(b, sim, err_us=10000000)
    qb = b.now()[1]
    unc1 = b.now()[2]
    rb2 = sync(b, sim, err_us=300000)
    res["battery"] = [b.source, unc0, rb1, qb, rb2, b.steps, sorted(b.alerts()), unc1, b.now()[2]]
    # the same RTC after a power cut without a battery (it lost its time): nothing to trust, 10 s steps
    sim.advance_ms(60000)
    v = clk.Clock(SimRTC(sim, dead=True, battery=False), p, ticks_ms=sim.ticks)
    rv = sync(v, sim, err_us=10000000)
    res["volatile"] = [v.source, rv is None, v.steps, sorted(v.alerts())]
    os.remove(p)
    print(json.dumps(res))


def mono_esp32():
    # Clock.mono_ms for two weeks on an ESP32's ticks (a wrap at 12.4 days), an hour a step
    t = ESP32Time()
    t.manual = (1 << 30) - 3600000 * 24 * 3  # three days before the ticks wrap
    clk.time = t
    sim = Sim()
    c = clk.Clock(SimRTC(sim), "/tmp/ct-mono.json", ticks_ms=t.ticks_ms)
    seen = []
    for _ in range(24 * 14):  # an hour a step (the display asks every 10 s)
        sim.advance_ms(3600000)
        t.manual += 3600000
        seen.append(c.mono_ms())
    try:
        os.remove("/tmp/ct-mono.json")
    except OSError:
        pass
    print(json.dumps(seen))


CASES = {"drift": drift, "slew": slew, "quality": quality, "persistence": persistence, "discipline": discipline,
         "mono_esp32": mono_esp32}


def main():
    CASES[CASE]()
