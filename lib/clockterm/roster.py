# Roster: badge -> (employee id, name) on flash, looked up by binary search without loading it; and the
# badge id rule that the tap path and every roster check share.
#
# Badge ids are what the readers produce (docs/boards.md), upper-cased: 1..20 hex digits (a decimal id
# is hex digits too: MFRC522 UIDs of 8, 14 or 20 digits, Wiegand "dec"/"hex", RDM6300, line readers),
# or facility:card in decimal, zero padded as the readers print it: FFF:CCCCC (Wiegand 26, RDM6300
# "fc"), FFFFF:CCCCC (Wiegand 34) or FFFFF:CCCCCC (Wiegand 37). Nothing else is a badge: a tap of
# anything else is refused, and so is a roster row.
#
# File format (roster.bin): `count` fixed-size records sorted by badge: badge (20 bytes), employee
# id (12 bytes), name (16 bytes, what the display shows), each UTF-8 and NUL-padded; then a 16-byte
# trailer b"CTR2", count (u32), record size (u16), reserved (u16), CRC-32 of all records (u32). A
# trailer rather than a header because LittleFS rewrites a whole file to change its first block (twice
# the space). 10,000 badges take 480 KB of flash and a lookup reads at most 14 records into one
# preallocated buffer.
#
# A new roster is written beside the old one (roster.bin.new) by RosterWriter from badge-sorted
# rows, checked, and only then renamed over roster.bin: a power cut or a bad row leaves the old
# roster in force. A roster file that fails its check at open is not used (lookups find nobody) and
# reported. Writing, checking and the rules for a roster's rows live in clockterm.roster_file, loaded
# only for those rare jobs; `from clockterm.roster import RosterWriter` (and roster.check) still work,
# through __getattr__.

from micropython import const

_BADGE = const(20)  # bytes of a badge id: the longest a reader produces (a 10-byte UID in hex)
_EMP = const(12)
_REC = const(48)  # badge, employee id, name (16)

# Errors: ValueError with a message that says what is wrong (a bad row, a file that fails its check).


def normalize_badge(raw):
    """The badge id as stored and compared (trimmed, upper case), or None when it is not one (see the
    top of this file)."""
    b = raw.strip().upper()
    n = len(b)
    c = b.find(":")
    # The characters are checked as bytes: a str's characters are one-character strings, which
    # MicroPython interns for good (a first badge with a D or an F grew the pool at the tap).
    e = b.encode()
    if c < 0:
        if n < 1 or n > _BADGE:
            return None
        for ch in e:
            if ch not in b"0123456789ABCDEF":
                return None
        return b
    if not (c == 3 and n == 9 or c == 5 and (n == 11 or n == 12)):  # FFF:CCCCC, FFFFF:CCCCC, FFFFF:CCCCCC
        return None
    for i in range(n):
        if i != c and not 48 <= e[i] <= 57:  # a digit
            return None
    return b


def _file():
    # clockterm.roster_file for one job, not kept: forgotten at once (clockterm.forget), so the GC
    # takes its code when the job drops its last reference.
    from clockterm import forget, roster_file

    forget("clockterm.roster_file")
    return roster_file


def __getattr__(name):
    # RosterWriter and check, from clockterm.roster_file on demand.
    if name == "RosterWriter" or name == "check":
        return getattr(_file(), name)
    raise AttributeError(name)


class Roster:
    """Lookups in roster.bin. A missing or corrupt file means an empty roster (error kept)."""

    def __init__(self, path):
        self.path = path
        self._buf = bytearray(_REC)
        self._f = None
        self.opened = 0  # counts open(): a user of record indexes (the terminal's in/out state) sees a swap
        self.open()

    def open(self):
        """(Re)open roster.bin, after a new one was swapped in. The file is checked before the one in
        use is let go: a check that cannot run (MemoryError loading the checker) changes nothing."""
        f = None
        n = 0
        err = None  # a missing file: no roster installed yet
        try:
            n = _file().check(self.path)
            f = open(self.path, "rb")
        except OSError:
            pass
        except ValueError as e:
            err = str(e)
        if self._f is not None:
            self._f.close()
        self._f = f
        self.count = n if f is not None else 0
        self.error = err
        self.opened += 1

    def lookup(self, badge):
        """(employee id, name, index in the roster) for a badge (a normalized id), or None."""
        f = self._f
        b = badge.encode()
        if f is None or len(b) > _BADGE:
            return None
        key = b + bytes(_BADGE - len(b))
        buf = self._buf
        mv = memoryview(buf)
        lo, hi = 0, self.count - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            f.seek(mid * _REC)
            f.readinto(buf)
            rec_key = bytes(mv[:_BADGE])
            if rec_key == key:
                # Fields are NUL-padded.
                return (bytes(mv[_BADGE:_BADGE + _EMP]).split(b"\x00", 1)[0].decode(),
                        bytes(mv[_BADGE + _EMP:]).split(b"\x00", 1)[0].decode(), mid)
            if rec_key < key:
                lo = mid + 1
            else:
                hi = mid - 1
        return None

    def status(self):
        return {"badges": self.count, "error": self.error}
