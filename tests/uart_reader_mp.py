# MicroPython side of the RDM6300 and line reader tests: a simulated UART receive FIFO (bytes arriving
# in chunks of random size), and independent reference parsers of both formats (not the driver's).
#
# tests/test_uart_reader.py runs this under the unix port with the compiled bundle (linted with the
# firmware's rules, lib/ruff.toml). It prepends the settings CASE (the case below to run) and, for the
# fuzz case, N (streams) and SEED as assignments, and appends a call of main(), which prints what the
# case saw as one JSON document. Not collected by pytest (no test_ prefix).

import json
import random

from clockterm.drivers.uart_reader import RDM6300, LineReader

CASE = globals().get("CASE", "rdm6300")
N = globals().get("N", 600)
SEED = globals().get("SEED", 7)


class FakeUart:
    # A UART receive FIFO: bytes arrive in chunks of random size, readinto returns None when empty.
    def __init__(self, data=b"", maxchunk=7, fail_every=0):
        self.data = bytearray(data)
        self.pos = 0
        self.maxchunk = maxchunk
        self.fail_every = fail_every
        self.calls = 0

    def feed(self, b):
        self.data += b

    def readinto(self, buf):
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise OSError(5)
        left = len(self.data) - self.pos
        if left <= 0:
            return None
        n = min(len(buf), left, 1 + random.getrandbits(8) % self.maxchunk)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


class Ms:
    t = 0

    def __call__(self):
        return self.t


def rdm_frame(ver, data32):
    body = bytes([ver, (data32 >> 24) & 255, (data32 >> 16) & 255, (data32 >> 8) & 255, data32 & 255])
    x = 0
    for b in body:
        x ^= b
    return b"\x02" + ("%02X%08X%02X" % (ver, data32, x)).encode() + b"\x03"


def drain(r, limit=100000):
    out = []
    for _ in range(limit):
        got = r.poll()
        if got is not None:
            out.append(got)
        elif r._uart.pos >= len(r._uart.data) and r._i >= r._n:
            break
    return out


HEXD = b"0123456789ABCDEFabcdef"


def ref_rdm(data):
    out = []
    for i in range(len(data)):
        if data[i] != 2:
            continue
        f = data[i + 1:i + 14]
        if len(f) != 13 or f[12] != 3 or any(c not in HEXD for c in f[:12]):
            continue
        v = [int(bytes(f[j:j + 2]), 16) for j in range(0, 12, 2)]
        x = 0
        for b in v:
            x ^= b
        if x == 0:
            out.append(bytes(f[:10]).decode().upper())
    return out


def ref_lines(data, mode, lo, hi):
    ok, bad = [], 0
    allowed = b"0123456789" if mode == "dec" else HEXD
    cur = bytearray()
    for c in data:
        if c in (10, 13):
            s = bytes(cur).strip(b" \t")
            cur = bytearray()
            if not s:
                continue
            if lo <= len(s) <= hi and all(ch in allowed for ch in s):
                ok.append(s.decode().upper())
            else:
                bad += 1
        else:
            cur.append(c)
    return ok, bad


def rdm6300():
    """Every id format; bad checksum, non-hex, missing ETX, lower case, a double STX."""
    res = {}
    for fmt in ("hex", "dec", "fc"):
        u = FakeUart(rdm_frame(0x1A, 0x0012D687))
        r = RDM6300(u, id_format=fmt, hold_ms=0)
        res[fmt] = drain(r)
    good = rdm_frame(0x1A, 0x0012D687)
    bad_sum = good[:11] + (b"0" if good[11:12] != b"0" else b"1") + good[12:]
    lower = good.decode().lower().encode()
    u = FakeUart(bad_sum + b"\x02" + good[1:6] + b"Z" + good[7:] + good[:-1] + b"X" + lower + b"\x02" + good)
    r = RDM6300(u, hold_ms=0)
    res["mixed"] = drain(r)
    res["st"] = r.status()
    return res


def hold():
    """A card held in the field, then taken away and presented again, then another card."""
    u = FakeUart()
    ms = Ms()
    r = RDM6300(u, hold_ms=800, ticks_ms=ms)
    seen = []
    card_a = rdm_frame(0x01, 0xAABBCCDD)
    card_b = rdm_frame(0x01, 0x11223344)
    schedule = [card_a] * 20 + [None] * 10 + [card_a] * 3 + [card_b] * 2
    for item in schedule:  # one frame per 100 ms while a card is in the field
        ms.t += 100
        if item:
            u.feed(item)
        for _ in range(10):
            got = r.poll()
            if got:
                seen.append([ms.t, got])
    return {"seen": seen, "held": r.held}


def uart_errors():
    """A UART whose every third read fails."""
    u = FakeUart(rdm_frame(2, 5) * 5, fail_every=3)
    r = RDM6300(u, hold_ms=0)
    got = []
    for _ in range(200):
        x = r.poll()
        if x:
            got.append(x)
    return {"got": got, "errors": r.uart_errors}


def lines():
    """The line reader, hex and dec, within length limits."""
    data = b"04a1b2c3\r\n\r\n  0012345678 \n12 34\nABC\n" + b"F" * 30 + b"\nxyz1\n00ff\r"
    res = {}
    u = FakeUart(data)
    r = LineReader(u, mode="hex", min_len=4, max_len=20)
    res["hex"] = drain(r)
    res["hex_bad"] = r.frames_bad
    u = FakeUart(b"0012345678\n0x12\n123\n99999\n")
    r = LineReader(u, mode="dec", min_len=4, max_len=10)
    res["dec"] = drain(r)
    res["dec_bad"] = r.frames_bad
    return res


def fuzz():
    """N random byte streams from SEED for each reader, against the reference parsers."""
    random.seed(SEED)
    mism = []
    total_ok = 0
    for case in range(N):
        parts = []
        for _ in range(1 + random.getrandbits(3)):
            k = random.getrandbits(2)
            if k == 0:
                parts.append(rdm_frame(random.getrandbits(8), random.getrandbits(32)))
            elif k == 1:
                f = bytearray(rdm_frame(random.getrandbits(8), random.getrandbits(32)))
                i = random.getrandbits(4) % len(f)
                if random.getrandbits(1):
                    f[i] = random.choice(b"\x02\x03019AFZ\xff")
                else:
                    f[i] ^= 1 << random.getrandbits(3)
                parts.append(bytes(f))
            elif k == 2:
                parts.append(bytes(random.getrandbits(8) for _ in range(random.getrandbits(5))))
            else:
                f = rdm_frame(random.getrandbits(8), random.getrandbits(32))
                parts.append(f[:random.getrandbits(4) % 14])
        data = b"".join(parts)
        r = RDM6300(FakeUart(data, maxchunk=1 + random.getrandbits(5)), hold_ms=0)
        try:
            got = drain(r)
        except Exception as e:
            mism.append(["raise", repr(e)])
            break
        want = ref_rdm(data)
        total_ok += len(want)
        if got != want or r.frames_ok != len(want):
            mism.append([data.hex(), want, got])
        mode = ("hex", "dec")[case & 1]
        lo = 1 + random.getrandbits(3)
        hi = min(20, lo + random.getrandbits(4))  # a badge id has at most 20 characters
        alphabet = b"0123456789abcdefXYZ \t\r\n\x00\xff"
        ldata = bytes(random.choice(alphabet) for _ in range(random.getrandbits(7)))
        lr = LineReader(FakeUart(ldata, maxchunk=1 + random.getrandbits(5)), mode=mode, min_len=lo, max_len=hi)
        try:
            lgot = drain(lr)
        except Exception as e:
            mism.append(["raise-line", repr(e)])
            break
        lwant, lbad = ref_lines(ldata, mode, lo, hi)
        if lgot != lwant or lr.frames_bad != lbad:
            mism.append([ldata.hex(), mode, lo, hi, lwant, lgot, lbad, lr.frames_bad])
    return {"n": len(mism), "mism": mism[:3], "total_ok": total_ok}


def main():
    cases = {"rdm6300": rdm6300, "hold": hold, "uart_errors": uart_errors, "lines": lines, "fuzz": fuzz}
    print(json.dumps(cases[CASE]()))
