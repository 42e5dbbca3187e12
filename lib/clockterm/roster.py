# Roster: badge -> (employee id, name) on flash, looked up by binary search without loading it.
#
# File format (roster.bin): `count` fixed-size records sorted by badge: badge (16 bytes), employee
# id (12 bytes), name (20 bytes), each UTF-8 and NUL-padded; then a 16-byte trailer b"CTR1", count
# (u32), record size (u16), reserved (u16), CRC-32 of all records (u32). A trailer rather than a
# header because LittleFS rewrites a whole file to change its first block (twice the space). 10,000 badges take
# 480 KB of flash and a lookup reads at most 14 records into one preallocated buffer.
#
# A new roster is written beside the old one (roster.new) by RosterWriter from badge-sorted rows,
# checked, and only then renamed over roster.bin: a power cut or a bad row leaves the old roster in
# force. A roster file that fails its check at open is not used (lookups find nobody) and reported.

import binascii
import struct
from micropython import const

_MAGIC = b"CTR1"
_HDR = const(16)
_BADGE = const(16)
_EMP = const(12)
_NAME = const(20)
REC = const(48)  # _BADGE + _EMP + _NAME


class RosterError(ValueError):
    pass


def _field(s, n, text):
    b = s.encode()
    if not b or len(b) > n or b"\x00" in b:
        raise RosterError("%s %r: 1..%d bytes" % (text, s, n))
    return b


def _name(s):
    # Names are cut to fit the record at a character boundary (the display shows short names).
    b = s.encode()
    while len(b) > _NAME:
        s = s[:-1]
        b = s.encode()
    return b


def _unpad(mv):
    b = bytes(mv)
    i = b.find(b"\x00")
    return (b if i < 0 else b[:i]).decode()


class RosterWriter:
    """Streams badge-sorted rows into roster.new; commit() checks and swaps it in atomically."""

    def __init__(self, path):
        self.path = path
        self.tmp = path + ".new"
        self.count = 0
        self.crc = 0
        self._last = b""
        self._rec = bytearray(REC)
        self._f = open(self.tmp, "wb")

    def add(self, badge, employee, name):
        b = _field(badge.strip().upper(), _BADGE, "badge")
        e = _field(employee, _EMP, "employee id")
        if b <= self._last:
            self.abort()
            raise RosterError("row %d: badge %s is not after %s (rows must be sorted, no duplicates)"
                              % (self.count + 1, b.decode(), self._last.decode()))
        self._last = b
        rec = self._rec
        for i in range(REC):
            rec[i] = 0
        rec[0:len(b)] = b
        rec[_BADGE:_BADGE + len(e)] = e
        n = _name(name)
        rec[_BADGE + _EMP:_BADGE + _EMP + len(n)] = n
        self._f.write(rec)
        self.crc = binascii.crc32(rec, self.crc)
        self.count += 1

    def commit(self):
        import os

        self._f.write(_MAGIC + struct.pack("<IHHI", self.count, REC, 0, self.crc))
        self._f.close()
        self._f = None
        check(self.tmp)  # read back what landed on flash before trusting it
        os.rename(self.tmp, self.path)

    def abort(self):
        import os

        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            os.remove(self.tmp)
        except OSError:
            pass


def check(path):
    """Verify a roster file's trailer and CRC; returns its record count or raises RosterError."""
    buf = bytearray(REC)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < _HDR:
            raise RosterError("roster: truncated")
        f.seek(size - _HDR)
        hdr = f.read(_HDR)
        if hdr[:4] != _MAGIC:
            raise RosterError("roster: bad trailer")
        count, rec, _, crc = struct.unpack("<IHHI", hdr[4:])
        if rec != REC or size != count * REC + _HDR:
            raise RosterError("roster: size does not match its trailer")
        f.seek(0)
        c = 0
        for _ in range(count):
            f.readinto(buf)
            c = binascii.crc32(buf, c)
    if c != crc:
        raise RosterError("roster: CRC mismatch")
    return count


class Roster:
    """Lookups in roster.bin. A missing or corrupt file means an empty roster (error kept)."""

    def __init__(self, path):
        self.path = path
        self._buf = bytearray(REC)
        self._f = None
        self.count = 0
        self.error = None
        self.lookups = 0
        self.generation = 0  # bumped by every open(): indexes from lookup() change with the file
        self.open()

    def open(self):
        self.close()
        self.generation += 1
        try:
            self.count = check(self.path)
            self._f = open(self.path, "rb")
            self.error = None
        except OSError:
            self.count = 0
            self.error = None  # no roster installed yet
        except RosterError as e:
            self.count = 0
            self.error = str(e)

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def lookup(self, badge):
        """(employee id, name, index in the roster) for a badge, or None."""
        f = self._f
        if f is None:
            return None
        self.lookups += 1
        b = badge.encode()
        if len(b) > _BADGE:
            return None
        key = b + bytes(_BADGE - len(b))
        buf = self._buf
        mv = memoryview(buf)
        lo, hi = 0, self.count - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            f.seek(mid * REC)
            f.readinto(buf)
            rec_key = bytes(mv[:_BADGE])
            if rec_key == key:
                return _unpad(mv[_BADGE:_BADGE + _EMP]), _unpad(mv[_BADGE + _EMP:]), mid
            if rec_key < key:
                lo = mid + 1
            else:
                hi = mid - 1
        return None

    def status(self):
        return {"badges": self.count, "error": self.error}
