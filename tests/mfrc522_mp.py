# MicroPython side of the MFRC522 driver tests: an SPI peer emulating the chip's register file and the
# cards in its field, written from the MFRC522 datasheet and ISO 14443-3 (not from the driver): SPI
# address byte (bit 7 read, bits 6..1 register), FIFO, ComIrqReg set/clear semantics, soft reset
# defaults, Transceive started by BitFramingReg.StartSend, timer interrupt when no card answers.
#
# tests/test_mfrc522.py runs this under the unix port with the compiled bundle (linted with the
# firmware's rules, lib/ruff.toml). It prepends the settings CASE (the case below to run) and, for the
# fuzz case, N (cases) and SEED as assignments, and appends a call of main(), which prints what the
# case saw as one JSON document. Not collected by pytest (no test_ prefix).

import json
import random

from clockterm.drivers.mfrc522 import MFRC522

CASE = globals().get("CASE", "uids")
N = globals().get("N", 1500)
SEED = globals().get("SEED", 11)


def crc(data):
    c = 0x6363
    for b in data:
        b ^= c & 0xFF
        b = (b ^ (b << 4)) & 0xFF
        c = ((c >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)) & 0xFFFF
    return bytes([c & 0xFF, c >> 8])


class Card:
    def __init__(self, uid, sak=0x08):
        self.uid = bytes(uid)
        self.sak = sak
        self.state = "idle"
        self.level = 0
        self.seen = 0

    def levels(self):
        u = self.uid
        if len(u) == 4:
            return [u]
        if len(u) == 7:
            return [b"\x88" + u[:3], u[3:]]
        return [b"\x88" + u[:3], b"\x88" + u[3:6], u[6:]]

    def atqa(self):
        return bytes([{4: 0x04, 7: 0x44, 10: 0x84}[len(self.uid)], 0])

    def respond(self, f, lastbits):
        if lastbits == 7 and len(f) == 1:
            if f[0] == 0x26 and self.state == "idle" or f[0] == 0x52 and self.state in ("idle", "halt"):
                self.state = "ready"
                self.level = 0
                return self.atqa()
            if self.state in ("ready", "active"):
                self.state = "idle"   # ISO 14443-3: an unexpected command sends the card back to idle
            return None
        if self.state == "ready" and len(f) == 2 and f[0] == 0x93 + 2 * self.level and f[1] == 0x20:
            c = self.levels()[self.level]
            return c + bytes([c[0] ^ c[1] ^ c[2] ^ c[3]])
        if self.state == "ready" and len(f) == 9 and f[0] == 0x93 + 2 * self.level and f[1] == 0x70:
            c = self.levels()[self.level]
            if f[2:7] != c + bytes([c[0] ^ c[1] ^ c[2] ^ c[3]]) or crc(f[:7]) != f[7:9]:
                self.state = "idle"
                return None
            self.level += 1
            if self.level < len(self.levels()):
                return bytes([0x04]) + crc(b"\x04")
            self.state = "active"
            self.seen += 1
            return bytes([self.sak]) + crc(bytes([self.sak]))
        if self.state == "active" and f == b"\x50\x00" + crc(b"\x50\x00"):
            self.state = "halt"
            return None
        self.state = "idle"
        return None


class GarbageCard(Card):
    # Answers every request, but with noise: bad BCC, wrong lengths, bad CRC on SAK.
    def respond(self, f, lastbits):
        if lastbits == 7:
            return bytes([random.getrandbits(8) for _ in range(random.choice((1, 2, 2, 3)))])
        n = random.choice((0, 1, 3, 4, 5, 5, 5, 6, 12))
        if n == 0:
            return None
        return bytes([random.getrandbits(8) for _ in range(n)])


class Chip:
    DEFAULTS = {0x01: 0x20, 0x0A: 0, 0x0C: 0x10, 0x11: 0x3F, 0x14: 0x80, 0x2B: 0, 0x37: 0x92}

    def __init__(self, version=0x92):
        self.version = version
        self.cards = []
        self.hung = False       # commands never complete, no interrupt ever
        self.dead = False       # MISO floats: every read is 0xFF
        self.resets = 0
        self.soft_resets = 0
        self.err = 0            # ErrorReg bits to report on the next answer
        self.reset()

    def reset(self):
        self.regs = bytearray(64)
        for k, v in self.DEFAULTS.items():
            self.regs[k] = v
        self.regs[0x37] = self.version
        self.fifo = []
        self.field_off()

    def field_off(self):
        for c in self.cards:
            c.state = "idle"

    def read(self, a):
        if self.dead:
            return 0xFF
        if a == 0x09:
            return self.fifo.pop(0) if self.fifo else 0
        if a == 0x0A:
            return len(self.fifo)
        return self.regs[a]

    def write(self, a, v):
        if self.dead:
            return
        if a == 0x09:
            if len(self.fifo) < 64:
                self.fifo.append(v)
        elif a == 0x0A:
            if v & 0x80:
                self.fifo = []
        elif a == 0x04:
            if v & 0x80:
                self.regs[4] |= v & 0x7F
            else:
                self.regs[4] &= ~v & 0x7F
        elif a == 0x01:
            cmd = v & 0x0F
            if cmd == 0x0F:
                self.soft_resets += 1
                self.hung = False
                self.reset()
            else:
                self.regs[1] = v
        elif a == 0x0D:
            self.regs[0x0D] = v & 0x7F
            if v & 0x80 and self.regs[1] & 0x0F == 0x0C:
                self.transceive(v & 7)
        elif a == 0x14:
            old = self.regs[0x14]
            self.regs[0x14] = v
            if old & 3 and not v & 3:
                self.field_off()
        else:
            self.regs[a] = v

    def transceive(self, lastbits):
        if self.hung:
            return
        frame = bytes(self.fifo)
        self.fifo = []
        answers = []
        if self.regs[0x14] & 3 == 3:
            for c in self.cards:
                a = c.respond(frame, lastbits)
                if a is not None:
                    answers.append(a)
        self.regs[6] = 0
        self.regs[0x0C] = 0x10
        if not answers:
            self.regs[4] |= 0x01   # TimerIRq: nobody answered in time
            return
        if len(answers) > 1 and len(set(answers)) > 1:
            self.regs[6] = 0x08    # CollErr
        if self.err:
            self.regs[6] |= self.err
            self.err = 0
        self.fifo = list(answers[0])
        self.regs[4] |= 0x30       # RxIRq | IdleIRq
        self.regs[1] = 0


class Spi:
    def __init__(self, chip):
        self.chip = chip
        self.selected = False
        self.transfers = 0

    def _xfer(self, w, r):
        if not self.selected:
            raise AssertionError("SPI transfer without chip select")
        self.transfers += 1
        a = w[0]
        addr = (a >> 1) & 0x3F
        if a & 0x80:
            for i in range(1, len(w)):
                v = self.chip.read(addr)
                if r is not None:
                    r[i] = v
                addr = (w[i] >> 1) & 0x3F
            if r is not None:
                r[0] = 0
        else:
            for i in range(1, len(w)):
                self.chip.write(addr, w[i])

    def write(self, w):
        self._xfer(w, None)

    def write_readinto(self, w, r):
        self._xfer(w, r)


class Cs:
    def __init__(self, spi):
        self.spi = spi

    def value(self, v=None):
        if v is not None:
            self.spi.selected = not v


class Rst:
    def __init__(self, chip):
        self.chip = chip
        self.v = 1

    def value(self, v=None):
        if v is None:
            return self.v
        if self.v and not v:
            self.chip.resets += 1
            self.chip.hung = False
            self.chip.dead = False
            self.chip.reset()
        self.v = v


class Ms:
    t = 0

    def __call__(self):
        return self.t


def rig(rst=False, **kw):
    chip = Chip()
    spi = Spi(chip)
    ms = Ms()
    r = MFRC522(spi, Cs(spi), rst=Rst(chip) if rst else None, ticks_ms=ms, **kw)
    return chip, ms, r


def tick(r, ms, dt=100, n=1):
    out = []
    for _ in range(n):
        ms.t += dt
        x = r.poll()
        if x is not None:
            out.append(x)
    return out


def uids():
    """Init, then a card of each cascade level (4, 7 and 10 byte UIDs)."""
    chip, ms, r = rig(hold_ms=0)
    res = {"version": r.version, "ok": r.status()["ok"], "prescaler": chip.regs[0x2B],
           "antenna": chip.regs[0x14] & 3}
    res["empty"] = tick(r, ms, n=3)
    for uid in (b"\x04\xa1\xb2\xc3", b"\x04\x11\x22\x33\x44\x55\x66", bytes(range(1, 11))):
        chip.cards = [Card(uid)]
        res[uid.hex()] = tick(r, ms)
        res[uid.hex() + "/state"] = chip.cards[0].state
    res["st"] = r.status()
    return res


def held():
    """A card held, removed and presented again."""
    chip, ms, r = rig(hold_ms=800)
    card = Card(b"\xde\xad\xbe\xef")
    chip.cards = [card]
    a = tick(r, ms, n=30)  # held for 3 s: seen on every poll, reported once
    chip.cards = []
    b = tick(r, ms, n=10)  # removed for 1 s
    chip.cards = [card]
    c = tick(r, ms, n=5)
    return {"a": a, "b": b, "c": c, "seen": card.seen, "held": r.held}


def garbage():
    """Noise answers, protocol error bits, a collision, then a good card."""
    random.seed(3)
    chip, ms, r = rig(hold_ms=0)
    chip.cards = [GarbageCard(b"\x01\x02\x03\x04")]
    got = tick(r, ms, n=400)
    # protocol error bits from the chip on an otherwise good card
    chip.cards = [Card(b"\x01\x02\x03\x04")]
    errs = []
    for bit in (0x01, 0x02, 0x10):
        chip.err = bit
        errs.append(tick(r, ms, dt=1000))
    # two different cards at once: collision, counted, not a badge
    chip.cards = [Card(b"\x01\x02\x03\x04"), Card(b"\x09\x08\x07\x06")]
    both = tick(r, ms, dt=1000, n=4)
    chip.cards = [Card(b"\x01\x02\x03\x04")]
    after = tick(r, ms, dt=1000)
    return {"got": got, "errs": errs, "both": both, "after": after, "st": r.status()}


def hung():
    """A stuck transceive, with and without a reset line."""
    res = {}
    for use_rst in (False, True):
        chip, ms, r = rig(rst=use_rst, hold_ms=0, check_ms=5000)
        card = Card(b"\x11\x22\x33\x44")
        chip.cards = [card]
        first = tick(r, ms, dt=1000)
        chip.hung = True  # a stuck transceive: no interrupt ever again until reset
        during = tick(r, ms, dt=1000)
        after = tick(r, ms, dt=1000)  # the re-init happens first thing in this poll
        res[str(use_rst)] = {"first": first, "during": during, "after": after, "st": r.status(),
                             "resets": chip.resets, "soft": chip.soft_resets}
    return res


def brownout():
    """The chip resets itself, then is unplugged and plugged back."""
    chip, ms, r = rig(hold_ms=1500, check_ms=5000)
    card = Card(b"\xaa\xbb\xcc\xdd")
    chip.cards = [card]
    a = tick(r, ms, dt=1000)
    chip.reset()  # the chip reset itself: antenna off, timer unconfigured
    b = tick(r, ms, dt=1000, n=2)  # no card visible with the antenna off, before the check
    c = tick(r, ms, dt=1000, n=5)  # the check at 5 s re-inits, the card is read again
    st1 = r.status()
    chip.dead = True  # unplugged: the bus reads 0xFF
    d = tick(r, ms, dt=1000, n=12)
    st2 = r.status()
    chip.dead = False
    e = tick(r, ms, dt=1000, n=6)
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "st1": st1, "st2": st2, "st3": r.status()}


def unknown_version():
    chip = Chip(version=0x00)
    spi = Spi(chip)
    r = MFRC522(spi, Cs(spi), ticks_ms=Ms())
    return {"ok": r.status()["ok"], "poll": r.poll(), "fail": r.init_failures}


def fuzz():
    """N random cases of cards and faults from SEED, each checked against what it must give."""
    random.seed(SEED)
    chip, ms, r = rig(hold_ms=0, check_ms=2000)
    bad = []
    got_ok = 0
    for _i in range(N):
        k = random.getrandbits(3)
        uid = bytearray([random.getrandbits(8) for _ in range(random.choice((4, 7, 10)))])
        for j in range(0, len(uid) - 1, 3):
            if uid[j] == 0x88:  # ISO 14443-3 reserves 0x88 (the cascade tag) where a level starts
                uid[j] = 0x89
        uid = bytes(uid)
        if k < 3:
            chip.cards = [Card(uid)]
            want = uid.hex().upper()
        elif k == 3:
            chip.cards = [GarbageCard(uid)]
            want = None
        elif k == 4:
            chip.cards = []
            want = None
        elif k == 5:
            chip.cards = [Card(uid)]
            chip.err = random.choice((1, 2, 0x10))
            want = None
        elif k == 6:
            chip.cards = [Card(uid)]
            chip.hung = True
            want = None
        else:
            chip.cards = [Card(uid)]
            chip.reset()
            want = None
        try:
            got = tick(r, ms, dt=100)
        except Exception as e:
            bad.append(["raise", repr(e)])
            break
        got = got[0] if got else None
        if want is not None and got != want:
            # A good card may be missed only right after a fault, while the re-init is pending.
            if r.status()["ok"]:
                bad.append([uid.hex(), want, got])
        if want is None and got is not None and k != 7:
            bad.append(["spurious", uid.hex(), got])
        if got is not None and got != uid.hex().upper():
            bad.append(["wrong", uid.hex(), got])
        if got is not None:
            got_ok += 1
        # let a pending re-init happen before the next case
        chip.cards = []
        tick(r, ms, dt=2100)
    return {"bad": bad[:5], "n": len(bad), "ok": got_ok, "st": r.status()}


def main():
    cases = {"uids": uids, "held": held, "garbage": garbage, "hung": hung, "brownout": brownout,
             "unknown_version": unknown_version, "fuzz": fuzz}
    print(json.dumps(cases[CASE]()))
