# Punch record: one badge event, and its compact binary record format on flash (about 16 bytes).
#
# A record is framed as [len][tag][body...][crc16 LE]. len counts the whole record (4..254; 0xFF is
# erased flash, so a len byte of 0xFF ends a log). The tag's top three bits are the record type and
# format version (T_PUNCH = punch format 1, T_ACK, T_CORR); a reader that does not know a type skips
# the record by its length. The CRC is the low 16 bits of CRC-32 over len..body; 0xFFFF is never
# stored (mapped to 0) so a record cut off by a power loss (its tail still erased) cannot pass.
#
# Seq and time are stored as deltas from the base of the segment (sector or file) that holds the
# record: the journal passes base_seq / base_ms / base_off from the segment header. Badges in the
# usual shapes are stored as binary: 4- and 7-byte hex UIDs as 4 or 7 bytes, Wiegand "F:C" as two
# varints, decimal numbers as a varint; anything else as UTF-8 (at most 20 characters).

import binascii
from micropython import const

from clockterm.epoch import iso_ms

Q_UNSYNCED = const(0)
Q_SYNCED = const(1)
Q_STALE = const(2)
Q_CORRECTED = const(3)
QUALITY_NAMES = ("unsynced", "synced", "stale", "corrected")

KINDS = ("in", "out", "unknown")  # kind codes 0..2; code 3: the kind follows as a string
_MAX_BADGE = const(20)  # characters
_MAX_KIND = const(16)  # characters
_MAX_EMPLOYEE = const(32)  # characters
_MAX_RECORD = const(254)  # bytes, whole record

# record types (tag >> 5); 0 and 7 are never written (zeroed / erased flash). journal.py uses the same.
_T_PUNCH = const(1)

# badge forms (form byte >> 5)
_B_HEX4 = const(0)
_B_HEX7 = const(1)
_B_HEXN = const(2)
_B_WIEG = const(3)
_B_DEC = const(4)
_B_STR = const(5)
_B_HEXL = const(6)
_F_OFF = const(0x10)  # form flag: utc offset differs from the segment's and follows


class Punch:
    """One badge event. seq and journal_id are set by Journal.append()."""

    def __init__(self, utc_ms, badge, kind="in", quality=Q_SYNCED, uncertainty_ms=0, employee=None,
                 utc_offset_min=0, seq=None, journal_id=None):
        self.seq = seq
        self.journal_id = journal_id
        self.utc_ms = utc_ms
        self.quality = quality
        self.uncertainty_ms = uncertainty_ms
        self.badge = badge
        self.kind = kind
        self.employee = employee
        self.utc_offset_min = utc_offset_min

    def key(self):
        """All fields as a tuple (comparison in tests, de-duplication)."""
        return (self.seq, self.utc_ms, self.quality, self.uncertainty_ms, self.badge, self.kind,
                self.employee, self.utc_offset_min)

    def __eq__(self, other):
        return isinstance(other, Punch) and self.key() == other.key()

    def __repr__(self):
        return "Punch(%r)" % (self.key(),)

    def to_dict(self):
        """The punch as JSON-ready dict (UTC as ISO 8601 with ms)."""
        return {
            "seq": self.seq,
            "journal_id": self.journal_id,
            "utc": iso_ms(self.utc_ms),
            "utc_ms": self.utc_ms,
            "quality": QUALITY_NAMES[self.quality],
            "uncertainty_ms": self.uncertainty_ms,
            "badge": self.badge,
            "kind": self.kind,
            "employee": self.employee,
            "utc_offset_min": self.utc_offset_min,
        }


# --- varints --------------------------------------------------------------------------------------

def put_uv(buf, i, v):
    """Write unsigned varint v at buf[i]; return the next index."""
    while v >= 0x80:
        buf[i] = (v & 0x7F) | 0x80
        v >>= 7
        i += 1
    buf[i] = v
    return i + 1


def put_zz(buf, i, v):
    """Write signed varint (zigzag) v at buf[i]; return the next index."""
    return put_uv(buf, i, (v << 1) if v >= 0 else ((-v) << 1) - 1)


def get_uv(mv, i):
    """Read an unsigned varint at mv[i]: (value, next index)."""
    v = 0
    s = 0
    while True:
        b = mv[i]
        i += 1
        v |= (b & 0x7F) << s
        if b < 0x80:
            return v, i
        s += 7
        if s > 63:
            raise ValueError("varint")


def get_zz(mv, i):
    v, i = get_uv(mv, i)
    return (v >> 1) if not v & 1 else -((v + 1) >> 1), i


# --- framing --------------------------------------------------------------------------------------

def crc16(mv):
    c = binascii.crc32(mv) & 0xFFFF
    return 0 if c == 0xFFFF else c


def seal(buf, n):
    """Finish a record whose body ends at buf[n]: write len and CRC, return the record length."""
    n += 2
    if n > _MAX_RECORD:
        raise ValueError("record too long")
    buf[0] = n
    c = crc16(memoryview(buf)[:n - 2])
    buf[n - 2] = c & 0xFF
    buf[n - 1] = c >> 8
    return n


def check(mv, n):
    """True when the n-byte record at mv[0] has a good length and CRC."""
    if n < 4 or n > _MAX_RECORD or mv[0] != n:
        return False
    c = mv[n - 2] | (mv[n - 1] << 8)
    return c == crc16(mv[:n - 2])


# --- punch records --------------------------------------------------------------------------------

def _canon_dec(s):
    return 0 < len(s) <= 18 and s.isdigit() and (s == "0" or s[0] != "0")


def _put_str(buf, i, s, limit):
    b = s.encode()
    if len(b) > limit:
        raise ValueError("string too long: %r" % s)
    buf[i] = len(b)
    i += 1
    buf[i:i + len(b)] = b
    return i + len(b)


def _get_str(mv, i):
    n = mv[i]
    i += 1
    return str(bytes(mv[i:i + n]), "utf-8"), i + n


def _put_badge(buf, i, badge):
    # Returns (form, next index).
    n = len(badge)
    if n == 0 or n > _MAX_BADGE:
        raise ValueError("badge length")
    if not n & 1:
        try:
            raw = binascii.unhexlify(badge)
        except ValueError:
            raw = None
        if raw is not None:
            h = binascii.hexlify(raw).decode()
            if h.upper() == badge:
                if len(raw) == 4 or len(raw) == 7:
                    buf[i:i + len(raw)] = raw
                    return (_B_HEX4 if len(raw) == 4 else _B_HEX7), i + len(raw)
                form = _B_HEXN
            elif h == badge:
                form = _B_HEXL
            else:
                form = -1
            if form >= 0:
                buf[i] = len(raw)
                buf[i + 1:i + 1 + len(raw)] = raw
                return form, i + 1 + len(raw)
    c = badge.find(":")
    if c > 0 and _canon_dec(badge[:c]) and _canon_dec(badge[c + 1:]):
        i = put_uv(buf, i, int(badge[:c]))
        return _B_WIEG, put_uv(buf, i, int(badge[c + 1:]))
    if _canon_dec(badge):
        return _B_DEC, put_uv(buf, i, int(badge))
    return _B_STR, _put_str(buf, i, badge, 4 * _MAX_BADGE)


def _get_badge(mv, i, form):
    if form == _B_HEX4 or form == _B_HEX7:
        n = 4 if form == _B_HEX4 else 7
        return binascii.hexlify(mv[i:i + n]).decode().upper(), i + n
    if form == _B_HEXN or form == _B_HEXL:
        n = mv[i]
        h = binascii.hexlify(mv[i + 1:i + 1 + n]).decode()
        return (h.upper() if form == _B_HEXN else h), i + 1 + n
    if form == _B_WIEG:
        a, i = get_uv(mv, i)
        b, i = get_uv(mv, i)
        return "%d:%d" % (a, b), i
    if form == _B_DEC:
        a, i = get_uv(mv, i)
        return str(a), i
    if form == _B_STR:
        return _get_str(mv, i)
    raise ValueError("badge form")


def encode(buf, p, seq, base_seq, base_ms, base_off):
    """Encode punch p with sequence seq as a record into buf (>= 256 bytes); return its length."""
    q = p.quality
    if q < 0 or q > 3:
        raise ValueError("quality")
    if p.uncertainty_ms < 0 or seq < base_seq:
        raise ValueError("uncertainty/seq")
    try:
        kc = KINDS.index(p.kind)
    except ValueError:
        kc = 3
    emp = p.employee
    buf[1] = (_T_PUNCH << 5) | (q << 3) | (kc << 1) | (emp is not None)
    i = put_uv(buf, 3, seq - base_seq)
    i = put_zz(buf, i, p.utc_ms - base_ms)
    i = put_uv(buf, i, p.uncertainty_ms)
    off = p.utc_offset_min
    form = 0
    if off != base_off:
        form = _F_OFF
        i = put_zz(buf, i, off)
    b, i = _put_badge(buf, i, p.badge)
    buf[2] = form | (b << 5)
    if kc == 3:
        i = _put_str(buf, i, p.kind, _MAX_KIND)
    if emp is not None:
        if _canon_dec(emp):
            i = put_uv(buf, i, (int(emp) << 1) | 1)
        else:
            e = emp.encode()
            if len(e) > _MAX_EMPLOYEE:
                raise ValueError("employee too long")
            i = put_uv(buf, i, len(e) << 1)
            buf[i:i + len(e)] = e
            i += len(e)
    return seal(buf, i)


def decode(mv, base_seq, base_ms, base_off):
    """Decode a checked punch record at mv[0] (see check()) into a Punch."""
    tag = mv[1]
    form = mv[2]
    d, i = get_uv(mv, 3)
    seq = base_seq + d
    d, i = get_zz(mv, i)
    ms = base_ms + d
    unc, i = get_uv(mv, i)
    off = base_off
    if form & _F_OFF:
        off, i = get_zz(mv, i)
    badge, i = _get_badge(mv, i, form >> 5)
    kc = (tag >> 1) & 3
    if kc == 3:
        kind, i = _get_str(mv, i)
    else:
        kind = KINDS[kc]
    emp = None
    if tag & 1:
        e, i = get_uv(mv, i)
        if e & 1:
            emp = str(e >> 1)
        else:
            e >>= 1
            emp = str(bytes(mv[i:i + e]), "utf-8")
    return Punch(ms, badge, kind, (tag >> 3) & 3, unc, emp, off, seq)

