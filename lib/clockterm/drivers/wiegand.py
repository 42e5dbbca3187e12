# Wiegand 26/34/37 badge reader: D0/D1 falling-edge interrupts into a preallocated bit buffer.
#
# Reader interface (shared by every driver in clockterm.drivers, see docs/boards.md):
#   poll() -> badge id str or None, never blocks, never raises on bad input; call every poll_ms.
#   poll_ms: how often to poll (a class attribute; the board config's reader.poll_ms overrides it);
#   the app's reader task (app.poll_reader) polls and sends each badge down the tap path.
#   frames_ok, frames_bad: counters; status() -> dict of all counters; deinit().
#
# Wiegand(d0, d1, bits=(26, 34, 37), id_format="fc", gap_us=25000, hold_ms=0, ticks_us=None,
#         ticks_ms=None)
#   d0, d1: Pin-like objects (machine.Pin on the board, a simulated pin in tests) with
#           irq(handler=, trigger=), value() and the IRQ_FALLING constant.
#   id_format: "fc"  facility:card in decimal, zero padded: W26 "123:04567" (8+16 bits),
#                    W34 "00123:04567" (16+16 bits), W37 (HID H10304) "00123:045678" (16+19 bits);
#              "dec" all data bits (parity stripped) as one decimal number;
#              "hex" all data bits as uppercase hex (W26 6 digits, W34 8, W37 9): for W26/W34 this
#                    is the low bytes of what a 125 kHz UART reader shows for the same card.
#
# Why the hand-off looks like this: the interrupt handlers only write one byte into a fixed
# buffer and a few small ints (no allocation, safe as hard IRQs on the ESP32). A frame ends when no
# bit arrives for gap_us; poll() sees that, copies the bits into its own buffer and remembers the
# frame number it took. poll() never writes the handler's state, so no interrupt lock is needed:
# a handler that sees a gap, or finds its frame taken by poll(), starts a new frame (new number) at
# index 0 itself. The frame taken counts first: on an ESP32 ticks_us wraps at 2**30 us (17.9 min), so
# after a long silence the gap read from the ticks may come out negative or small, and the first tap
# after a quiet spell would be glued to the last one (never reported).

import time
from micropython import const

from clockterm.drivers import hold

_MAX_BITS = const(64)  # a longer burst is noise; frames past this are counted as overflow
_MIN_US = const(200)  # bits closer than this are a glitch (real readers: 1-2 ms apart)
_F_NOISE = const(1)
_F_OVERFLOW = const(2)

# Layouts: bits -> (facility bits, card bits, even parity covers data [0, e), odd covers [o, end)).
# Positions are in the data bits (frame without its two parity bits).
_LAYOUTS = {
    26: (8, 16, 12, 12),
    34: (16, 16, 16, 16),
    37: (16, 19, 18, 17),  # HID H10304: the two parity ranges share data bit 17
}


class Wiegand:
    """Wiegand reader on two GPIO lines; see the module comment for the interface."""

    poll_ms = 20  # ms: how often app.poll_reader calls poll()

    def __init__(self, d0, d1, bits=(26, 34, 37), id_format="fc", gap_us=25000, hold_ms=0,
                 ticks_us=None, ticks_ms=None):
        if id_format not in ("fc", "dec", "hex"):
            raise ValueError("id_format")
        for b in bits:
            if b not in _LAYOUTS:
                raise ValueError("bits %d" % b)
        self._d0 = d0
        self._d1 = d1
        self.bits = tuple(bits)
        self.id_format = id_format
        self.gap_us = gap_us  # us of silence that ends a frame (readers send bits 1-2 ms apart)
        self.hold_ms = hold_ms  # same id again within this many ms is a held card, not reported
        self._ticks_us = ticks_us or time.ticks_us
        self._ticks_ms = ticks_ms or time.ticks_ms
        # Handler-owned state: written only by the interrupt handlers.
        self._buf = bytearray(_MAX_BITS)
        self._n = 0
        self._last = self._ticks_us()
        self._frame = 0
        self._flags = 0
        self._dropped = 0
        # poll()-owned state.
        self._work = bytearray(_MAX_BITS)
        self._taken = 0
        self._hold_id = None
        self._hold_t = 0
        self.frames_ok = 0
        self.frames_bad = 0
        self.bad_length = 0
        self.bad_parity = 0
        self.noise = 0
        self.overflow = 0
        self.lost = 0  # frames overwritten by a new one before poll() took them
        self.held = 0  # repeats suppressed by hold_ms
        # Bound methods made once: creating them in irq() is fine, in the handler it is not.
        self._h0 = self._isr0
        self._h1 = self._isr1
        d0.irq(handler=self._h0, trigger=d0.IRQ_FALLING)
        d1.irq(handler=self._h1, trigger=d1.IRQ_FALLING)

    def deinit(self):
        self._d0.irq(handler=None)
        self._d1.irq(handler=None)

    # --- interrupt side: no allocation below ------------------------------------------------

    def _isr0(self, pin):
        self._bit(0, self._d1)

    def _isr1(self, pin):
        self._bit(1, self._d0)

    def _bit(self, v, other):
        now = self._ticks_us()
        dt = time.ticks_diff(now, self._last)
        self._last = now
        n = self._n
        if n and (dt > self.gap_us or dt < 0 or self._frame == self._taken):
            n = 0
        if n == 0:
            if self._frame != self._taken and self._n:
                self._dropped += 1  # the previous frame was never taken by poll()
            self._frame = (self._frame + 1) & 0xFFFF
            self._flags = 0
        elif dt < _MIN_US:
            self._flags |= _F_NOISE
        if other.value() == 0:
            # Both lines low at once: a glitch on the cable, not a bit.
            self._flags |= _F_NOISE
        if n < _MAX_BITS:
            self._buf[n] = v
            self._n = n + 1
        else:
            self._flags |= _F_OVERFLOW

    # --- task side ---------------------------------------------------------------------------

    def poll(self):
        """A badge id when a complete valid frame has arrived since the last call, else None."""
        frame = self._frame
        n = self._n
        last = self._last
        if n == 0 or frame == self._taken:
            return self._hold(None)  # (an old hold window forgotten)
        if 0 <= time.ticks_diff(self._ticks_us(), last) <= self.gap_us:
            return None  # frame still arriving (a negative gap: its ticks wrapped, long ago)
        flags = self._flags
        self._work[:n] = memoryview(self._buf)[:n]
        if self._frame != frame:
            # A new frame began while we copied: the copy may be torn. Take neither half whole.
            self._taken = frame
            self.lost += 1
            self.frames_bad += 1
            return None
        self._taken = frame
        try:
            bid = self._decode(n, flags)
        except Exception:  # never let a bad frame reach the caller as an exception
            bid = None
            self.frames_bad += 1
        if bid is None:
            return None
        self.frames_ok += 1
        return self._hold(bid)

    def _hold(self, bid):
        return hold.check(self, bid, self._ticks_ms())

    def _decode(self, n, flags):
        if flags & _F_OVERFLOW:
            self.overflow += 1
            self.frames_bad += 1
            return None
        if flags & _F_NOISE:
            self.noise += 1
            self.frames_bad += 1
            return None
        if n not in self.bits:
            self.bad_length += 1
            self.frames_bad += 1
            return None
        fac_bits, card_bits, even_n, odd_from = _LAYOUTS[n]
        frame = self._work
        data_n = n - 2  # the data bits sit at frame[1 .. n-2], between the two parity bits
        even = frame[0]
        for i in range(1, even_n + 1):
            even ^= frame[i]
        odd = frame[n - 1]
        for i in range(odd_from + 1, data_n + 1):
            odd ^= frame[i]
        if even != 0 or odd != 1:
            self.bad_parity += 1
            self.frames_bad += 1
            return None
        fmt = self.id_format
        if fmt == "hex":
            return _hex(frame, 1, data_n)
        if fmt == "dec":
            v = 0
            for i in range(1, data_n + 1):
                v = (v << 1) | frame[i]
            return str(v)
        fac = 0
        for i in range(1, fac_bits + 1):
            fac = (fac << 1) | frame[i]
        card = 0
        for i in range(fac_bits + 1, fac_bits + card_bits + 1):
            card = (card << 1) | frame[i]
        if n == 26:
            return "%03d:%05d" % (fac, card)
        if n == 34:
            return "%05d:%05d" % (fac, card)
        return "%05d:%06d" % (fac, card)

    def status(self):
        return {"frames_ok": self.frames_ok, "frames_bad": self.frames_bad, "bad_length": self.bad_length,
                "bad_parity": self.bad_parity, "noise": self.noise, "overflow": self.overflow,
                "lost": self.lost + self._dropped, "held": self.held}


def _hex(w, start, nbits):
    # Uppercase hex of nbits bits from w[start:], right-aligned (leading partial nibble).
    out = ""
    lead = nbits % 4 or 4
    i = start
    k = lead
    while i < start + nbits:
        v = 0
        for _ in range(k):
            v = (v << 1) | w[i]
            i += 1
        out += "0123456789ABCDEF"[v]
        k = 4
    return out
