# MicroPython side of the Wiegand driver tests: simulated pins that fire the driver's irq callbacks,
# a controllable microsecond clock, and an independent reference encoder/decoder (written from the
# Wiegand spec, not from the driver).
#
# tests/test_wiegand.py runs this under the unix port with the compiled bundle (linted with the
# firmware's rules, lib/ruff.toml). It prepends the settings CASE (the case below to run) and, for the
# fuzz case, N (frames) and SEED as assignments, and appends a call of main(), which prints what the
# case saw as one JSON document. Not collected by pytest (no test_ prefix).

import json
import micropython
import random
import time

from clockterm.drivers.wiegand import Wiegand

CASE = globals().get("CASE", "valid")
N = globals().get("N", 1500)
SEED = globals().get("SEED", 1)


class Clock:
    def __init__(self, start):
        self.t = start

    def us(self):
        return self.t

    def ms(self):
        return self.t // 1000

    def adv(self, dt):
        self.t = time.ticks_add(self.t, dt)


class SimPin:
    IRQ_FALLING = 2

    def __init__(self, clk):
        self.v = 1
        self.h = None
        self.clk = clk

    def irq(self, handler=None, trigger=0):
        self.h = handler

    def value(self):
        return self.v

    def fall(self):
        self.v = 0
        if self.h is not None:
            self.h(self)
        self.v = 1


def rig(start=0, **kw):
    clk = Clock(start)
    d0 = SimPin(clk)
    d1 = SimPin(clk)
    w = Wiegand(d0, d1, ticks_us=clk.us, ticks_ms=clk.ms, **kw)
    return clk, d0, d1, w


def send(clk, d0, d1, bits, dt=2000):
    for b in bits:
        clk.adv(dt)
        (d1 if b else d0).fall()


LAYOUT = {26: (8, 16), 34: (16, 16), 37: (16, 19)}
PAR = {26: (12, 13), 34: (16, 17), 37: (18, 18)}  # even over data[0:e], odd over data[o-1:]


def encode(n, fac, card):
    fb, cb = LAYOUT[n]
    data = [(fac >> (fb - 1 - i)) & 1 for i in range(fb)] + [(card >> (cb - 1 - i)) & 1 for i in range(cb)]
    e, o = PAR[n]
    pe = sum(data[:e]) & 1  # even parity bit makes the count even
    po = 1 - (sum(data[o - 1:]) & 1)  # odd parity bit makes the count odd
    return [pe] + data + [po]


def ref_decode(bits, allowed=(26, 34, 37)):
    n = len(bits)
    if n not in allowed:
        return None
    e, o = PAR[n]
    data = bits[1:-1]
    if (bits[0] + sum(data[:e])) & 1 != 0 or (bits[-1] + sum(data[o - 1:])) & 1 != 1:
        return None
    fb, cb = LAYOUT[n]
    fac = 0
    for b in data[:fb]:
        fac = fac * 2 + b
    card = 0
    for b in data[fb:]:
        card = card * 2 + b
    if n == 26:
        return "%03d:%05d" % (fac, card)
    if n == 34:
        return "%05d:%05d" % (fac, card)
    return "%05d:%06d" % (fac, card)


def valid():
    """Valid frames of every length, in every id format."""
    res = {}
    clk, d0, d1, w = rig()
    for n, fac, card in ((26, 123, 4567), (26, 255, 65535), (26, 0, 1), (34, 4660, 22136), (37, 65535, 524287),
                         (37, 12, 345678)):
        send(clk, d0, d1, encode(n, fac, card))
        r1 = w.poll()  # frame not ended yet: the gap has not elapsed
        clk.adv(30000)
        r2 = w.poll()
        r3 = w.poll()  # taken once only
        res["%d/%d/%d" % (n, fac, card)] = [r1, r2, r3]
    # other formats on fresh readers
    for fmt in ("hex", "dec"):
        clk, d0, d1, w = rig(id_format=fmt)
        got = []
        for n, fac, card in ((26, 0x12, 0x3456), (34, 0xDEAD, 0xBEEF), (37, 1, 2)):
            send(clk, d0, d1, encode(n, fac, card))
            clk.adv(30000)
            got.append(w.poll())
        res[fmt] = got
    res["ok"] = w.frames_ok
    res["bad"] = w.frames_bad
    return res


def malformed():
    """Malformed frames of every kind, then a good one."""
    clk, d0, d1, w = rig(bits=(26, 34))
    res = []

    def frame(bits, dt=2000):
        send(clk, d0, d1, bits, dt)
        clk.adv(30000)
        res.append(w.poll())

    good = encode(26, 10, 20)
    for i in range(26):  # every single-bit flip breaks a parity
        b = list(good)
        b[i] ^= 1
        frame(b)
    frame(good[:25])  # short
    frame(good + [0])  # long
    frame(encode(37, 1, 1))  # 37 not enabled on this reader
    frame([1] * 80, dt=1500)  # noise burst longer than the buffer
    frame(good, dt=50)  # bits far too close together: a glitch train
    # both lines low at once in the middle of a frame
    for j, b in enumerate(good):
        clk.adv(2000)
        other = d0 if b else d1
        if j == 5:
            other.v = 0
        (d1 if b else d0).fall()
        other.v = 1
    clk.adv(30000)
    res.append(w.poll())
    frame(good)  # a good one still works after all that
    return {"res": res, "st": w.status()}


def gap():
    """The gap splits frames; a frame never polled is counted lost."""
    clk, d0, d1, w = rig()
    # Two frames back to back separated by more than the gap, poll only after both.
    send(clk, d0, d1, encode(26, 1, 2))
    clk.adv(40000)
    send(clk, d0, d1, encode(26, 3, 4))
    clk.adv(40000)
    a = w.poll()
    # Bits separated by less than the gap stay in one frame: two 26-bit frames glued = 52 bits, bad.
    send(clk, d0, d1, encode(26, 5, 6) + encode(26, 7, 8))
    clk.adv(40000)
    b = w.poll()
    return {"a": a, "b": b, "st": w.status()}


def wrap_and_hold():
    """A frame across the tick counter's wrap; a held card."""
    start = time.ticks_add(0, -30000)  # 30 ms before the tick counter wraps
    clk, d0, d1, w = rig(start=start, hold_ms=1000)
    res = []
    send(clk, d0, d1, encode(26, 9, 99))  # crosses the wrap in the middle of the frame
    clk.adv(30000)
    res.append(w.poll())
    send(clk, d0, d1, encode(26, 9, 99))  # held: same id soon after
    clk.adv(30000)
    res.append(w.poll())
    clk.adv(2000000)
    send(clk, d0, d1, encode(26, 9, 99))  # new presentation
    clk.adv(30000)
    res.append(w.poll())
    send(clk, d0, d1, encode(26, 9, 98))  # another card at once
    clk.adv(30000)
    res.append(w.poll())
    return {"res": res, "held": w.held}


def long_idle():
    """Taps after quiet spells of minutes to hours under an ESP32's ticks (tests/esp32time_mp.py, put in
    front of this script): ticks_us wraps at 2**30 us (17.9 min) there, so the gap since the last
    frame's last bit reads negative, or small when the silence is close to a whole period."""
    import sys

    period = ESP32Time.PERIOD  # noqa: F821 (tests/esp32time_mp.py, in front of this script)
    sys.modules["clockterm.drivers.wiegand"].time = ESP32Time()  # noqa: F821
    clk, d0, d1, w = rig(start=5000000)
    clk.adv = lambda dt: setattr(clk, "t", (clk.t + dt) % period)
    res = []
    minute = 60000000
    for idle in (0, minute, 8 * minute, 10 * minute, 15 * minute, 20 * minute, 30 * minute, 12 * minute,
                 period + 10000, 2 * period - 5000, 3 * period):
        clk.adv(idle)
        send(clk, d0, d1, encode(26, 123, 4567))
        clk.adv(30000)
        res.append(w.poll())
        clk.adv(3000000)  # the card taken away before the next spell
    return {"res": res, "st": w.status()}


def no_alloc():
    """The interrupt handlers under a locked heap: good bits, then the overflow and noise paths."""
    clk, d0, d1, w = rig()
    bits = encode(34, 4321, 8765)
    ok = True
    try:
        for _rep in range(3):
            for b in bits:
                clk.t += 2000  # small-int arithmetic only while the heap is locked
                p = d1 if b else d0
                micropython.heap_lock()
                try:
                    p.fall()
                finally:
                    micropython.heap_unlock()
            # overflow path and noise path also run under the lock
            for _k in range(70):
                clk.t += 100
                micropython.heap_lock()
                try:
                    d0.fall()
                finally:
                    micropython.heap_unlock()
            clk.t += 40000
    except MemoryError:
        ok = False
    return {"ok": ok, "overflow_seen": w._flags}


def fuzz():
    """N random frames (good, bit-flipped, noise) against the reference decoder, from SEED."""
    random.seed(SEED)
    clk, d0, d1, w = rig()
    mismatch = []
    expect_ok = 0
    for _case in range(N):
        kind = random.getrandbits(2)
        if kind == 0:
            n = (26, 34, 37)[random.getrandbits(8) % 3]
            fb, cb = LAYOUT[n]
            bits = encode(n, random.getrandbits(fb), random.getrandbits(cb))
        elif kind == 1:
            n = (26, 34, 37)[random.getrandbits(8) % 3]
            fb, cb = LAYOUT[n]
            bits = encode(n, random.getrandbits(fb), random.getrandbits(cb))
            for _ in range(1 + random.getrandbits(2)):
                bits[random.getrandbits(8) % n] ^= 1
        else:
            bits = [random.getrandbits(1) for _ in range(random.getrandbits(7) % 72)]
        if not bits:
            continue
        want = ref_decode(bits) if len(bits) <= 64 else None
        send(clk, d0, d1, bits, dt=600 + random.getrandbits(10))
        clk.adv(26000 + random.getrandbits(12))
        try:
            got = w.poll()
        except Exception as e:
            mismatch.append(["raise", repr(e), bits])
            break
        if got != want:
            mismatch.append([bits, want, got])
        if want is not None:
            expect_ok += 1
    return {"mismatch": mismatch[:5], "n_mismatch": len(mismatch), "ok": w.frames_ok, "expect_ok": expect_ok,
            "bad": w.frames_bad}


def main():
    cases = {"valid": valid, "malformed": malformed, "gap": gap, "wrap_and_hold": wrap_and_hold,
             "no_alloc": no_alloc, "fuzz": fuzz, "long_idle": long_idle}
    print(json.dumps(cases[CASE]()))
