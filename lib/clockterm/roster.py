# Roster: badge -> (employee id, name) on flash, looked up by binary search without loading it.
#
# File format (roster.bin): `count` fixed-size records sorted by badge: badge (16 bytes), employee
# id (12 bytes), name (20 bytes), each UTF-8 and NUL-padded; then a 16-byte trailer b"CTR1", count
# (u32), record size (u16), reserved (u16), CRC-32 of all records (u32). A trailer rather than a
# header because LittleFS rewrites a whole file to change its first block (twice the space). 10,000 badges take
# 480 KB of flash and a lookup reads at most 14 records into one preallocated buffer.
#
# A new roster is written beside the old one (roster.bin.new) by RosterWriter from badge-sorted
# rows, checked, and only then renamed over roster.bin: a power cut or a bad row leaves the old
# roster in force. A roster file that fails its check at open is not used (lookups find nobody) and
# reported. Writing and checking live in clockterm.roster_file, loaded only for those rare jobs;
# `from clockterm.roster import RosterWriter` (and roster.check) still work, through __getattr__.

from micropython import const

_BADGE = const(16)
_EMP = const(12)
_REC = const(48)  # badge, employee id, name (20)

# Errors: ValueError with a message that says what is wrong (a bad row, a file that fails its check).


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
        # Per boot and per file (indexes from lookup() mean other people in another file): the
        # terminal's in/out state, one bit per entry ("inside"), allocated at its first known badge.
        self.inside = None
        self.count = n if f is not None else 0
        self.error = err

    def lookup(self, badge):
        """(employee id, name, index in the roster) for a badge, or None."""
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
