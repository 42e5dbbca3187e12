# Roster file: the rules a roster's rows follow, writing a new roster.bin and checking one (the format
# is described in roster.py).
#
# The rules are written here once and used everywhere a roster is checked: by the terminal for every
# row it writes (a roster pulled from the central, or put by the device endpoint), and by the host
# side, which runs this module on the MicroPython unix port (clockterm_host.roster) before a roster
# leaves the CLI or is stored by the central. docs/integrator.md lists them for people.
#
# Needed only for rare jobs: checking the file when a roster is opened (at boot, after a new one
# arrived) and writing a new one. clockterm.roster loads this module for each such job and does not
# keep it (see roster._file), so its code is not resident in the heap while the terminal runs.

import binascii
import struct
from micropython import const

from clockterm.roster import normalize_badge

# The layout, as in roster.py (a const does not cross modules).
_MAGIC = const(b"CTR2")
_TRAILER = const("<IHHI")  # after the magic: count, record size, reserved, CRC-32
_HDR = const(16)
_BADGE = const(20)
_EMP = const(12)
_NAME = const(16)  # bytes of a name kept on the terminal (what the display shows)
_REC = const(48)  # _BADGE + _EMP + _NAME
_FIELDS = const("20s12s16s")  # a record's fields, as struct packs them

# The rules (each error message starts with the column it is about).
# The most badges in a roster: a new roster is written beside the one in force before it replaces it,
# so the filesystem must hold two of them (2 x 480 KB at 10,000) and the terminal's other files; the
# smallest boards have a 1 MB filesystem. Every terminal takes a roster that passes the rules.
_MAX_BADGES = const(10000)
_NAME_MAX = const(64)  # bytes of UTF-8 in a name (the terminal keeps the first 16, the central all)
_EMP_CHARS = const("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./")


def check_row(badge, employee, name):
    """One row by the roster rules: (badge, employee id, name) as stored (trimmed; the badge upper
    case), or ValueError naming the column and the rule."""
    b = normalize_badge(badge)
    if b is None:
        raise ValueError("badge \"%s\": not a badge id (1-20 hex digits, or facility:card as FFF:CCCCC, "
                         "FFFFF:CCCCC or FFFFF:CCCCCC)" % _shown(badge))
    e = employee.strip()
    if not 1 <= len(e) <= _EMP:
        raise ValueError("employee_id \"%s\": 1 to %d characters" % (_shown(e), _EMP))
    for c in e:
        if c not in _EMP_CHARS:
            raise ValueError("employee_id \"%s\": only letters A-Z a-z, digits and - _ . /" % _shown(e))
    n = name.strip()
    if not 1 <= len(n.encode()) <= _NAME_MAX:
        raise ValueError("name \"%s\": 1 to %d bytes of UTF-8" % (_shown(n), _NAME_MAX))
    for c in n:
        if c < " " or c == "\x7f":
            raise ValueError("name \"%s\": a control character" % _shown(n))
    return b, e, n


def _shown(s):
    # A value in a message: as it is, but control characters and quotes escaped (a tab shows as \t).
    for c in s:
        if c < " " or c == "\x7f" or c == '"':
            return repr(s)[1:-1]
    return s


class RosterWriter:
    """Streams badge-sorted rows into roster.bin.new; commit() checks and swaps it in atomically."""

    def __init__(self, path):
        self.path = path
        self.count = 0
        self.crc = 0
        self._last = b""
        self._rec = bytearray(_REC)
        self._f = open(path + ".new", "wb")

    def add(self, badge, employee, name):
        """One row, checked by the rules (check_row), after the previous one; raises ValueError
        ("row N: ...", N counting from 1 in the order given) and drops roster.bin.new."""
        try:
            badge, employee, name = check_row(badge, employee, name)
            b = badge.encode()
            if b == self._last:
                raise ValueError("badge %s: twice (badges are compared in upper case)" % badge)
            if b < self._last:
                raise ValueError("badge %s: not after %s (rows must be sorted by badge)" % (badge, self._last.decode()))
            if self.count >= _MAX_BADGES:
                raise ValueError("roster: more than %d badges" % _MAX_BADGES)
        except ValueError as e:
            self.abort()
            raise ValueError("row %d: %s" % (self.count + 1, e)) from None
        self._last = b
        e = employee.encode()
        n = name.encode()
        k = len(n)
        if k > _NAME:  # cut to fit the record, at a character boundary
            k = _NAME
            while n[k] & 0xC0 == 0x80:
                k -= 1
        rec = self._rec
        struct.pack_into(_FIELDS, rec, 0, b, e, n[:k])  # each NUL-padded
        self._f.write(rec)
        self.crc = binascii.crc32(rec, self.crc)
        self.count += 1

    def feed(self, line, n):
        """Line n (from 1) of a roster in CSV (bytes: badge,employee_id,name, fields in RFC 4180 quotes
        where needed), added; a blank line and a header line (badge first) are passed over. ValueError
        names the line."""
        line = line.decode()
        f = []
        i = 0
        while True:
            if line[i:i + 1] == '"':
                s = ""
                j = i + 1
                while True:
                    k = line.find('"', j)
                    if k < 0:
                        raise ValueError("line %d: a quote not closed" % n)
                    s += line[j:k]
                    if line[k + 1:k + 2] != '"':
                        break
                    s += '"'
                    j = k + 2
                i = k + 1
                if i < len(line) and line[i:i + 1] != ",":  # (a slice: an index would intern the character)
                    raise ValueError("line %d: text after a closing quote" % n)
            else:
                k = line.find(",", i)
                k = len(line) if k < 0 else k
                s = line[i:k]
                i = k
            f.append(s)
            if i >= len(line):
                break
            i += 1
        if f == [""] or (n == 1 and f[0].strip().lower() == "badge"):
            return
        if not 2 <= len(f) <= 3:
            raise ValueError("line %d: expected badge,employee_id,name" % n)
        self.add(f[0], f[1], f[2] if len(f) > 2 else "")

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


def rows(path):
    """The rows of a roster file, checked first: (badge, employee id, name) in badge order, names as
    the terminal keeps them. Raises OSError (no file) or ValueError (a file that fails its check)."""
    count = check(path)
    rec = bytearray(_REC)
    mv = memoryview(rec)
    with open(path, "rb") as f:
        for _ in range(count):
            f.readinto(rec)
            yield (_field(mv[:_BADGE]), _field(mv[_BADGE:_BADGE + _EMP]), _field(mv[_BADGE + _EMP:]))


def _field(mv):
    # A NUL-padded UTF-8 field of a record.
    return bytes(mv).split(b"\x00", 1)[0].decode()


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
            raise ValueError("roster: bad trailer (not a roster file of this firmware)")
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
