# UART badge readers: RDM6300 125 kHz frames with checksum, and a generic one-id-per-line reader.
#
# Reader interface (shared by every driver in clockterm.drivers, see docs/boards.md):
#   poll() -> badge id str or None, never blocks, never raises on bad input; call every poll_ms.
#   poll_ms: how often to poll (a class attribute; the board config's reader.poll_ms overrides it);
#   the app's reader task (app.poll_reader) polls and sends each badge down the tap path.
#   frames_ok, frames_bad: counters; status() -> dict of all counters; deinit().
#
# Both take a UART-like object with readinto(buf) -> int or None (machine.UART on the board, a byte
# stream in tests), read through one preallocated buffer.
#
# RDM6300(uart, id_format="hex", hold_ms=800)
#   Frame: 0x02, 10 ASCII hex (version byte + 4 data bytes), 2 ASCII hex checksum (XOR of the 5
#   bytes), 0x03. The reader repeats the frame while a card is in the field, so the same id seen again
#   within hold_ms of its last sighting is the same presentation and not reported again.
#   id_format: "hex" the 10 hex digits, uppercase ("1A0012D687");
#              "dec" the 4 data bytes as a 10-digit decimal (the number printed on EM4100 cards);
#              "fc"  the low 24 bits as facility:card "018:54919", what a Wiegand 26 reader shows
#                    for the same card, so one roster serves both kinds of reader.
#   A stray 0x02 inside a frame restarts the frame there (resync); bytes outside frames are skipped.
#
# LineReader(uart, mode="hex", min_len=4, max_len=20, hold_ms=0)
#   One id per line (CR or LF ends a line, empty lines ignored, surrounding spaces ignored); "hex"
#   accepts [0-9A-Fa-f] and reports uppercase, "dec" accepts digits. A line with any other byte,
#   shorter than min_len or longer than max_len (at most 20, the longest badge id) is counted bad and
#   dropped whole.

import time

from micropython import const

from clockterm.drivers import hold

_STX = const(2)
_ETX = const(3)
_RX = const(32)  # bytes read from the UART per readinto
_READS = const(4)  # at most this many readinto per poll, so a babbling line cannot hold the loop
_ID_MAX = const(20)  # characters of a line's id at most: the longest badge id (clockterm.roster)


def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    c |= 0x20  # lower case
    if 97 <= c <= 102:
        return c - 87
    return -1


class _UartReader:
    poll_ms = 20  # ms: how often app.poll_reader calls poll()

    def __init__(self, uart, hold_ms, ticks_ms):
        self._uart = uart
        self.hold_ms = hold_ms  # ms: the same id again within this of its last sighting is held
        self._ticks_ms = ticks_ms or time.ticks_ms
        self._rx = bytearray(_RX)
        self._i = 0
        self._n = 0
        self._hold_id = None
        self._hold_t = 0
        self.frames_ok = 0
        self.frames_bad = 0
        self.held = 0
        self.skipped = 0  # bytes outside any frame
        self.uart_errors = 0

    def poll(self):
        """A badge id when a complete valid frame or line has arrived, else None."""
        rx = self._rx
        for _ in range(_READS):
            while self._i < self._n:
                c = rx[self._i]
                self._i += 1
                try:
                    bid = self._feed(c)
                except Exception:  # a decoder bug must not take the reader task down
                    self._reset()
                    self.frames_bad += 1
                    bid = None
                if bid is not None:
                    self.frames_ok += 1
                    bid = self._hold(bid)
                    if bid is not None:
                        return bid
            try:
                n = self._uart.readinto(rx)
            except Exception:
                self.uart_errors += 1
                n = None
            if not n:
                return self._hold(None)  # (an old hold window forgotten)
            self._i = 0
            self._n = n
        return None

    def _hold(self, bid):
        return hold.check(self, bid, self._ticks_ms())

    def status(self):
        return {"frames_ok": self.frames_ok, "frames_bad": self.frames_bad, "held": self.held,
                "skipped": self.skipped, "uart_errors": self.uart_errors}

    def deinit(self):
        d = getattr(self._uart, "deinit", None)
        if d:
            d()


class RDM6300(_UartReader):
    """RDM6300 (EM4100 125 kHz) reader frames; see the module comment."""

    def __init__(self, uart, id_format="hex", hold_ms=800, ticks_ms=None):
        if id_format not in ("hex", "dec", "fc"):
            raise ValueError("id_format")
        super().__init__(uart, hold_ms, ticks_ms)
        self.id_format = id_format
        self._f = bytearray(12)  # the 12 hex digits between STX and ETX, as nibble values
        self._k = -1  # digits collected; -1: outside a frame

    def _reset(self):
        self._k = -1

    def _feed(self, c):
        k = self._k
        if c == _STX:
            if k >= 0:
                self.frames_bad += 1  # a frame cut short by the next one: resync here
            self._k = 0
            return None
        if k < 0:
            self.skipped += 1
            return None
        if k < 12:
            v = _hexval(c)
            if v < 0:
                self.frames_bad += 1
                self._k = -1
                return None
            self._f[k] = v
            self._k = k + 1
            return None
        # k == 12: expect ETX
        self._k = -1
        if c != _ETX:
            self.frames_bad += 1
            return None
        f = self._f
        x = 0
        for i in range(0, 12, 2):
            x ^= (f[i] << 4) | f[i + 1]
        if x != 0:  # XOR of the 5 data bytes and the checksum byte is zero when intact
            self.frames_bad += 1
            return None
        fmt = self.id_format
        if fmt == "hex":
            return "".join("0123456789ABCDEF"[f[i]] for i in range(10))
        v = 0
        for i in range(2, 10):
            v = (v << 4) | f[i]
        if fmt == "dec":
            return "%010d" % v
        return "%03d:%05d" % ((v >> 16) & 0xFF, v & 0xFFFF)


class LineReader(_UartReader):
    """One badge id per text line; see the module comment."""

    def __init__(self, uart, mode="hex", min_len=4, max_len=20, hold_ms=0, ticks_ms=None):
        if mode not in ("hex", "dec"):
            raise ValueError("mode")
        if not 1 <= min_len <= max_len <= _ID_MAX:
            raise ValueError("min_len/max_len")
        super().__init__(uart, hold_ms, ticks_ms)
        self.mode = mode
        self.min_len = min_len  # characters
        self.max_len = max_len  # characters, at most _ID_MAX
        self._line = bytearray(max_len)
        self._k = 0
        self._bad = False
        self._trail = False  # a space was seen after the id: only spaces may follow

    def _reset(self):
        self._k = 0
        self._bad = False
        self._trail = False

    def _feed(self, c):
        if c == 10 or c == 13:
            k, bad = self._k, self._bad
            self._reset()
            if k == 0 and not bad:
                return None  # empty line, or the LF of a CRLF
            if bad or k < self.min_len:
                self.frames_bad += 1
                return None
            s = bytes(memoryview(self._line)[:k]).decode()
            return s.upper() if self.mode == "hex" else s
        if self._bad:
            return None
        if c == 32 or c == 9:
            if self._k:
                self._trail = True
            return None
        ok = (48 <= c <= 57) if self.mode == "dec" else _hexval(c) >= 0
        if not ok or self._trail or self._k >= self.max_len:
            self._bad = True
            return None
        self._line[self._k] = c
        self._k += 1
        return None
