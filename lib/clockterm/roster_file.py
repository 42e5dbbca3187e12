# Roster file: writing a new roster.bin and checking one (the format is described in roster.py).
#
# Needed only for rare jobs: checking the file when a roster is opened (at boot, after a new one
# arrived) and writing a new one. clockterm.roster loads this module for each such job and does not
# keep it (see roster._file), so its code is not resident in the heap while the terminal runs.

import binascii
import struct
from micropython import const

# The layout, as in roster.py (a const does not cross modules).
_MAGIC = const(b"CTR1")
_TRAILER = const("<IHHI")  # after the magic: count, record size, reserved, CRC-32
_HDR = const(16)
_BADGE = const(16)
_EMP = const(12)
_NAME = const(20)
_REC = const(48)  # _BADGE + _EMP + _NAME


class RosterWriter:
    """Streams badge-sorted rows into roster.new; commit() checks and swaps it in atomically."""

    def __init__(self, path):
        self.path = path
        self.count = 0
        self.crc = 0
        self._last = b""
        self._rec = bytearray(_REC)
        self._f = open(path + ".new", "wb")

    def add(self, badge, employee, name):
        """One row; raises ValueError (and drops roster.new) for a bad or out-of-order row."""
        b = badge.strip().upper().encode()
        e = employee.encode()
        for v, n, text in ((b, _BADGE, "badge"), (e, _EMP, "employee id")):
            if not v or len(v) > n or b"\x00" in v:
                raise ValueError("%s %r: 1..%d bytes" % (text, v.decode(), n))
        if b <= self._last:
            self.abort()
            raise ValueError("row %d: badge %s is not after %s (rows must be sorted, no duplicates)"
                             % (self.count + 1, b.decode(), self._last.decode()))
        self._last = b
        # Names are cut to fit the record at a character boundary (the display shows short names).
        while len(name.encode()) > _NAME:
            name = name[:-1]
        n = name.encode()
        rec = self._rec
        for i in range(_REC):
            rec[i] = 0
        rec[0:len(b)] = b
        rec[_BADGE:_BADGE + len(e)] = e
        rec[_BADGE + _EMP:_BADGE + _EMP + len(n)] = n
        self._f.write(rec)
        self.crc = binascii.crc32(rec, self.crc)
        self.count += 1

    def commit(self):
        import os

        self._f.write(_MAGIC + struct.pack(_TRAILER, self.count, _REC, 0, self.crc))
        self._f.close()
        self._f = None
        check(self.path + ".new")  # read back what landed on flash before trusting it
        os.rename(self.path + ".new", self.path)

    def abort(self):
        import os

        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            os.remove(self.path + ".new")
        except OSError:
            pass


def check(path):
    """Verify a roster file's trailer and CRC; returns its record count or raises ValueError."""
    buf = bytearray(_REC)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < _HDR:
            raise ValueError("roster: truncated")
        f.seek(size - _HDR)
        hdr = f.read(_HDR)
        if hdr[:4] != _MAGIC:
            raise ValueError("roster: bad trailer")
        count, rec, _, crc = struct.unpack(_TRAILER, hdr[4:])
        if rec != _REC or size != count * _REC + _HDR:
            raise ValueError("roster: size does not match its trailer")
        f.seek(0)
        c = 0
        for _ in range(count):
            f.readinto(buf)
            c = binascii.crc32(buf, c)
    if c != crc:
        raise ValueError("roster: CRC mismatch")
    return count
