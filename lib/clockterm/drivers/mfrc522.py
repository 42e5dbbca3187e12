# MFRC522 (RC522) ISO 14443A reader over SPI: wake, anticollision and select up to cascade level 3.
#
# Reader interface (shared by every driver in clockterm.drivers, see docs/boards.md):
#   poll() -> badge id str or None, never blocks long, never raises on bad input; call every poll_ms.
#   poll_ms: how often to poll (a class attribute; the board config's reader.poll_ms overrides it);
#   the app's reader task (app.poll_reader) polls and sends each badge down the tap path.
#   frames_ok, frames_bad: counters; status() -> dict of all counters; deinit().
#
# MFRC522(spi, cs, rst=None, hold_ms=800, check_ms=5000, ticks_ms=None)
#   spi: an SPI-like object with write(buf) and write_readinto(wbuf, rbuf) (machine.SPI, mode 0,
#        up to 10 MHz; an emulated register file in tests); cs: a Pin-like chip select with
#        value(v); rst: optional Pin-like reset line (NRSTPD), pulsed low on every re-init.
#   Badge id: the UID as uppercase hex, 8 digits for a 4-byte UID ("04A1B2C3"), 14 for 7 bytes,
#   20 for 10 bytes.
#   Each poll sends WUPA (which also wakes a card we halted), selects it and halts it again, so a card
#   left on the reader is seen on every poll; hold_ms turns that into one report per presentation: the
#   same UID seen again within hold_ms of its last sighting is not reported.
#
# Recovery: readers are known to lock up after hours or weeks (ESD, brown-outs, a stuck transceive).
# Every check_ms poll() reads VersionReg and two registers we configured; a wrong value (the chip
# reset itself, or the bus returns 0x00/0xFF) means re-init: reset pulse or soft reset, reconfigure,
# antenna on. A transceive that never raises any interrupt (not even the timeout timer) marks the
# chip hung and forces a re-init on the next poll. A chip that is absent is retried every check_ms.
#
# Limits: two cards in the field at once is counted (collisions) and read on a later poll, not
# resolved bit by bit; the CRC is computed in software (fewer SPI transfers than the coprocessor).

import time

from micropython import const

from clockterm.drivers import hold

# Registers (datasheet section 9).
_COMMAND = const(0x01)
_COMIRQ = const(0x04)
_ERROR = const(0x06)
_FIFODATA = const(0x09)
_FIFOLEVEL = const(0x0A)
_CONTROL = const(0x0C)
_BITFRAMING = const(0x0D)
_MODE = const(0x11)
_TXCONTROL = const(0x14)
_TXASK = const(0x15)
_TMODE = const(0x2A)
_TPRESCALER = const(0x2B)
_TRELOADH = const(0x2C)
_TRELOADL = const(0x2D)
_VERSION = const(0x37)
# Commands.
_IDLE = const(0x00)
_TRANSCEIVE = const(0x0C)
_SOFTRESET = const(0x0F)
# Configuration: timer at 13.56 MHz / (2 * 0xA9 + 1) = 40 kHz, reload 200 -> 5 ms receive timeout;
# every ISO 14443A answer used here comes within a fraction of a millisecond.
_TPRESCALER_V = const(0xA9)
_TRELOAD_V = const(200)
_SPINS = const(300)  # ComIrqReg reads before a transceive counts as hung (~10 ms on an ESP32)
# Transceive outcomes (besides a byte count >= 0).
_NOCARD = const(-1)
_ERR = const(-2)
_HUNG = const(-3)
_COLLISION = const(-4)
# Versions seen in the field: 0x91/0x92 NXP v1/v2, 0x88 FM17522, 0x12 and 0xB2 common clones.
_VERSIONS = b"\x88\x90\x91\x92\x12\xb2"


class MFRC522:
    """RC522 card reader; see the module comment for the interface."""

    poll_ms = 100  # ms: how often app.poll_reader calls poll()

    def __init__(self, spi, cs, rst=None, hold_ms=800, check_ms=5000, ticks_ms=None):
        self._spi = spi
        self._cs = cs
        self._rst = rst
        self.hold_ms = hold_ms  # ms: the same UID again within this of its last sighting is held
        self.check_ms = check_ms  # ms between health checks (version and config registers)
        self._ticks_ms = ticks_ms or time.ticks_ms
        self._reg_out = bytearray(2)
        self._reg_in = bytearray(2)
        self._tx = bytearray(9)
        self._rx = bytearray(16)
        self._uid = bytearray(10)
        self._hold_id = None
        self._hold_t = 0
        self.version = 0
        self.frames_ok = 0
        self.frames_bad = 0  # answers with a wrong BCC, CRC, length or a protocol error
        self.collisions = 0
        self.timeouts = 0  # transceives that never completed: the chip was hung
        self.reinits = 0
        self.init_failures = 0
        self.held = 0
        cs.value(1)
        self._ok = False
        self._checked = self._ticks_ms()
        self._init()

    # --- register access ---------------------------------------------------------------------

    def _read_reg(self, reg):
        w = self._reg_out
        w[0] = 0x80 | (reg << 1)
        w[1] = 0
        self._cs.value(0)
        try:
            self._spi.write_readinto(w, self._reg_in)
        finally:
            self._cs.value(1)
        return self._reg_in[1]

    def _write_reg(self, reg, val):
        w = self._reg_out
        w[0] = (reg << 1) & 0x7E
        w[1] = val
        self._cs.value(0)
        try:
            self._spi.write(w)
        finally:
            self._cs.value(1)

    def _set(self, reg, mask):
        self._write_reg(reg, self._read_reg(reg) | mask)

    def _clr(self, reg, mask):
        self._write_reg(reg, self._read_reg(reg) & ~mask & 0xFF)

    # --- chip life cycle ---------------------------------------------------------------------

    def _init(self):
        """Reset and configure the chip; True when it answers as an MFRC522 afterwards."""
        self._ok = False
        try:
            if self._rst is not None:
                self._rst.value(0)
                time.sleep_us(10)
                self._rst.value(1)
            self._write_reg(_COMMAND, _SOFTRESET)
            for _ in range(_SPINS):  # PowerDown clears when the oscillator runs again
                if not self._read_reg(_COMMAND) & 0x10:
                    break
            self.version = v = self._read_reg(_VERSION)
            if v not in _VERSIONS:
                self.init_failures += 1
                return False
            self._write_reg(_TMODE, 0x80)  # timer starts at the end of each transmission
            self._write_reg(_TPRESCALER, _TPRESCALER_V)
            self._write_reg(_TRELOADH, _TRELOAD_V >> 8)
            self._write_reg(_TRELOADL, _TRELOAD_V & 0xFF)
            self._write_reg(_TXASK, 0x40)  # 100 % ASK modulation
            self._write_reg(_MODE, 0x3D)  # CRC preset 0x6363 (ISO 14443A)
            self._set(_TXCONTROL, 0x03)  # antenna drivers on
            self._ok = self._healthy()
            if not self._ok:
                self.init_failures += 1
            return self._ok
        except Exception:  # the SPI bus itself failed
            self.init_failures += 1
            return False

    def _healthy(self):
        return (self._read_reg(_VERSION) in _VERSIONS and self._read_reg(_TPRESCALER) == _TPRESCALER_V
                and self._read_reg(_TXCONTROL) & 0x03 == 0x03)

    def reinit(self):
        self.reinits += 1
        return self._init()

    def deinit(self):
        try:
            self._clr(_TXCONTROL, 0x03)
        except Exception:
            pass

    # --- ISO 14443A exchange -----------------------------------------------------------------

    def _transceive(self, n, last_bits=0):
        """Send self._tx[:n]; the answer lands in self._rx. Returns its byte count or an outcome."""
        wr = self._write_reg
        rd = self._read_reg
        wr(_COMMAND, _IDLE)
        wr(_COMIRQ, 0x7F)  # clear every interrupt request bit
        wr(_FIFOLEVEL, 0x80)  # flush the FIFO
        tx = self._tx
        for i in range(n):
            wr(_FIFODATA, tx[i])
        wr(_BITFRAMING, last_bits)
        wr(_COMMAND, _TRANSCEIVE)
        wr(_BITFRAMING, 0x80 | last_bits)  # StartSend
        irq = 0
        for _ in range(_SPINS):
            irq = rd(_COMIRQ)
            if irq & 0x31:  # RxIRq, IdleIRq or TimerIRq
                break
        wr(_BITFRAMING, 0)
        if not irq & 0x31:
            return _HUNG
        if not irq & 0x30:
            return _NOCARD
        err = rd(_ERROR)
        if err & 0x08:
            return _COLLISION
        if err & 0x13:  # BufferOvfl, ParityErr, ProtocolErr
            return _ERR
        k = rd(_FIFOLEVEL) & 0x7F
        if k > len(self._rx):
            wr(_FIFOLEVEL, 0x80)
            return _ERR
        rx = self._rx
        for i in range(k):
            rx[i] = rd(_FIFODATA)
        if rd(_CONTROL) & 0x07:
            return _ERR  # a partial last byte: no answer used here has one
        return k

    def _read_uid(self):
        """UID length in bytes (in self._uid) when a card was selected, else an outcome <= 0."""
        tx = self._tx
        rx = self._rx
        tx[0] = 0x52  # WUPA: wakes idle and halted cards
        r = self._transceive(1, 7)
        if r < 0:
            return r
        if r != 2:
            return _ERR
        uid = self._uid
        k = 0
        for level in range(3):
            tx[0] = 0x93 + 2 * level
            tx[1] = 0x20  # anticollision: NVB = 2 bytes sent, ask for the whole UID CLn
            r = self._transceive(2)
            if r < 0:
                return r
            if r != 5 or rx[0] ^ rx[1] ^ rx[2] ^ rx[3] ^ rx[4]:
                return _ERR  # wrong length or BCC
            tx[1] = 0x70  # select: NVB = 7 bytes
            for i in range(5):
                tx[2 + i] = rx[i]
            c = crc_a(tx, 7)
            tx[7] = c & 0xFF
            tx[8] = c >> 8
            cascade = rx[0] == 0x88  # cascade tag: 3 UID bytes here, more at the next level
            if cascade:
                if level == 2:
                    return _ERR
                uid[k:k + 3] = rx[1:4]
                k += 3
            else:
                uid[k:k + 4] = rx[0:4]
                k += 4
            r = self._transceive(9)
            if r < 0:
                return r
            if r != 3 or crc_a(rx, 1) != rx[1] | (rx[2] << 8):
                return _ERR
            sak = rx[0]
            if bool(sak & 0x04) != cascade:
                return _ERR  # SAK and cascade tag disagree
            if not cascade:
                return k
        return _ERR

    def _halt(self):
        tx = self._tx
        tx[0] = 0x50
        tx[1] = 0
        c = crc_a(tx, 2)
        tx[2] = c & 0xFF
        tx[3] = c >> 8
        self._transceive(4)  # a halted card does not answer: the timeout is the success

    # --- the reader interface ----------------------------------------------------------------

    def poll(self):
        """A badge id when a new card presentation was read, else None."""
        try:
            return self._poll()
        except Exception:  # a bus error or a bug: count it, keep the reader task alive
            self.frames_bad += 1
            self._ok = False
            return None

    def _poll(self):
        now = self._ticks_ms()
        if time.ticks_diff(now, self._checked) >= self.check_ms:
            self._checked = now
            if not (self._ok and self._healthy()):
                self.reinit()
        if not self._ok:
            return None
        r = self._read_uid()
        if r == _HUNG:
            self.timeouts += 1
            self._ok = False
            self._checked = time.ticks_add(now, -self.check_ms)  # re-init on the next poll
            return None
        if r == _NOCARD:
            return hold.check(self, None, now)  # (an old hold window forgotten)
        if r == _COLLISION:
            self.collisions += 1
            return None
        if r <= 0:
            self.frames_bad += 1
            return None
        self._halt()
        self.frames_ok += 1
        bid = "".join("%02X" % self._uid[i] for i in range(r))
        return hold.check(self, bid, now)

    def status(self):
        return {"frames_ok": self.frames_ok, "frames_bad": self.frames_bad, "collisions": self.collisions,
                "timeouts": self.timeouts, "reinits": self.reinits, "init_failures": self.init_failures,
                "held": self.held, "version": self.version, "ok": self._ok}


def crc_a(buf, n):
    """ISO 14443A CRC of buf[:n] (preset 0x6363, reflected polynomial 0x8408)."""
    crc = 0x6363
    for i in range(n):
        crc ^= buf[i]
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc
