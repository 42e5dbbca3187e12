# MicroPython driver for the uplink tests and bench: a generated fake journal, a fake clock, taps
# arriving while the real Uplink runs against the real central. Config from the JSON file in argv[1].
# Not collected by pytest (no test_ prefix); linted with the firmware's rules.
import asyncio
import gc
import json
import sys
import time

from clockterm import uplink
from clockterm.punch import Punch

with open(sys.argv[1]) as f:
    cfg = json.load(f)
T0 = 1780000000000


class Journal:
    # Punches are generated from their seq (no RAM per punch), so a 10k backlog fits the 100K heap.
    def __init__(self, jid, acked=0):
        self.journal_id = jid
        self.last_seq = acked
        self.acked_seq = acked
        self.acks = 0
        self.bad_acks = 0
        self.reads = 0  # pending() calls

    def append(self):
        self.last_seq += 1
        return self.last_seq

    def pending(self, after_seq=None, limit=None):
        after = self.acked_seq if after_seq is None else after_seq
        n = 0
        seq = after + 1
        self.reads += 1
        corrected = self.reads >= cfg.get("correct_from_read", 1 << 30)  # a clock correction came
        while seq <= self.last_seq and (limit is None or n < limit):
            p = Punch(T0 + seq * 1000, f"B{seq:05d}", "in" if seq % 2 else "out", seq % 3, seq % 50,
                      f"E{seq % 7}" if seq % 5 else None, 60, seq, self.journal_id)
            if corrected:
                p.utc_ms += 7
                p.quality = 3
            yield p
            n += 1
            seq += 1

    def ack(self, through):
        if through > self.last_seq or through < self.acked_seq:
            self.bad_acks += 1
            raise ValueError("ack out of range")
        self.acked_seq = through
        self.acks += 1


class Clock:
    def __init__(self, unsynced_ms):
        self.t0 = time.ticks_ms()
        self.unsynced_ms = unsynced_ms

    def now(self):
        q = 0 if time.ticks_diff(time.ticks_ms(), self.t0) < self.unsynced_ms else 1
        return T0 + time.ticks_diff(time.ticks_ms(), self.t0), q, 5


def make():
    # The journal, the roster (or None), the lent buffer (or None) and the Uplink the config asks for.
    j = Journal(cfg.get("journal_id", "j1"), cfg.get("acked", 0))
    for _ in range(cfg.get("initial", 0)):
        j.append()
    clock = Clock(cfg.get("unsynced_ms", 0))
    roster = None
    if cfg.get("fs_root"):  # a roster kept current from central, on this folder
        from clockterm.roster import Roster

        roster = Roster(cfg["fs_root"] + "/roster.bin")
    buf = None
    if cfg.get("shared_buf"):  # a buffer lent by the creator, as the app lends its answer buffer
        from clockterm import OutBuf

        buf = OutBuf(cfg["shared_buf"])
    up = uplink.Uplink(j, clock, cfg["device"], cfg["url"], cfg["device"], cfg["secret"],
                       cafile=cfg.get("ca"), batch_max=cfg.get("batch_max"), roster=roster,
                       fs_root=cfg.get("fs_root"), config_path=cfg.get("local_config"), buf=buf)
    for k, v in cfg.get("tune", {}).items():
        setattr(up, k, v)
    for k, v in cfg.get("client", {}).items():
        setattr(up.client, k, v)
    return j, roster, buf, up


async def main():
    j, roster, buf, up = make()
    gc.collect()
    base = gc.mem_alloc()
    peak = 0
    states = []
    task = asyncio.create_task(up.run())
    clobbers = 0
    if buf is not None:
        async def other_user():
            # The buffer's other user, like the control port: fills it and writes it out without an
            # await in between, at every turn of the loop. The uplink must never hold its request in the
            # buffer across an await, or what it sends is this garbage.
            nonlocal clobbers
            while True:
                buf.reset().write(b"}" * len(buf.buf))
                clobbers += 1
                await asyncio.sleep_ms(0)

        other = asyncio.create_task(other_user())
    t0 = time.ticks_ms()
    taps = cfg.get("taps", 0)
    tap_ms = cfg.get("tap_every_ms", 50)
    next_tap = t0
    deadline = cfg.get("deadline_ms", 20000)
    done_ms = None
    loops = 0
    max_batch = 0
    while time.ticks_diff(time.ticks_ms(), t0) < deadline:
        now = time.ticks_ms()
        if taps and time.ticks_diff(now, next_tap) >= 0:
            j.append()
            taps -= 1
            up.kick()
            next_tap = time.ticks_add(next_tap, tap_ms)
        st = up.status()["state"]
        if not states or states[-1] != st:
            states.append(st)
        b = up._batch  # the batch last built: the largest one shows whether batches outgrew the buffer
        if b is not None and b[1] - b[0] + 1 > max_batch:
            max_batch = b[1] - b[0] + 1
        loops += 1
        if loops % 20 == 0:  # live heap (after a collection), sampled every ~100 ms
            gc.collect()
            a = gc.mem_alloc() - base
            if a > peak:
                peak = a
        if not taps and j.acked_seq == j.last_seq:
            done_ms = time.ticks_diff(time.ticks_ms(), t0)
            if not cfg.get("stay"):
                break
        await asyncio.sleep_ms(5)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    if buf is not None:
        other.cancel()
    st = up.status()
    st.update({"acked": j.acked_seq, "last": j.last_seq, "acks": j.acks, "bad_acks": j.bad_acks,
               "states": states, "done_ms": done_ms, "heap_peak": peak, "clobbers": clobbers,
               "max_batch": max_batch, "limit": up.limit})
    st["config_module_loaded"] = "clockterm.config" in sys.modules  # imported only for a check
    if roster is not None:
        st["roster"] = roster.status()
        st["lookups"] = {b: roster.lookup(b) for b in cfg.get("lookup", [])}
    print(json.dumps(st))


asyncio.run(main())
