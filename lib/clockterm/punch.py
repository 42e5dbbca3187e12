# Punch record: one badge event, and its compact binary record format on flash (about 16 bytes).
#
# A record is framed as [len][tag][body...][crc16 LE]. len counts the whole record (4..254; 0xFF is
# erased flash, so a len byte of 0xFF ends a log). The tag's top three bits are the record type and
# format version (T_PUNCH = punch format 1, T_ACK, T_CORR); a reader that does not know a type skips
# the record by its length. The CRC is the low 16 bits of CRC-32 over len..body; 0xFFFF is never
# stored (mapped to 0) so a record cut off by a power loss (its tail still erased) cannot pass.
#
# Seq and time are stored as deltas from the base of the segment (sector or file) that holds the
# record: the journal passes that base, (seq, ms, utc offset), from the segment header. Badges in the
# usual shapes are stored as binary: 4- and 7-byte hex UIDs as 4 or 7 bytes, Wiegand "F:C" as two
# varints, decimal numbers as a varint; anything else as UTF-8 (at most 20 characters).

import binascii
from micropython import const

# Quality codes (clock.py has the public names): Q_SYNCED is a new punch's default; Q_CORRECTED is
# set by the journal on a punch whose pre-sync stamp was corrected.
_Q_SYNCED = const(1)

_KINDS = const(("in", "out", "unknown"))  # kind codes 0..2; code 3: the kind follows as a string
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
    """One badge event: a plain record (fields as in the constructor). seq and journal_id are set
    by Journal.append() and by the journal's readers."""

    def __init__(self, utc_ms, badge, kind="in", quality=_Q_SYNCED, uncertainty_ms=0, employee=None,
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


# --- varints --------------------------------------------------------------------------------------

def put_uv(buf, pos, v):
    """Write unsigned varint v at buf[pos]; return the next index."""
    while v >= 0x80:
        buf[pos] = (v & 0x7F) | 0x80
        v >>= 7
        pos += 1
    buf[pos] = v
    return pos + 1


def put_zz(buf, pos, v):
    """Write signed varint (zigzag) v at buf[pos]; return the next index."""
    return put_uv(buf, pos, (v << 1) if v >= 0 else ((-v) << 1) - 1)


def get_uv(buf, pos):
    """Read an unsigned varint at buf[pos]: (value, next index)."""
    v = 0
    s = 0
    while True:
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << s
        if b < 0x80:
            return v, pos
        s += 7
        if s > 63:
            raise ValueError("varint")


def get_zz(buf, pos):
    v, pos = get_uv(buf, pos)
    return (v >> 1) if not v & 1 else -((v + 1) >> 1), pos


# --- framing --------------------------------------------------------------------------------------

def crc16(buf):
    c = binascii.crc32(buf) & 0xFFFF
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


def check(buf, n):
    """True when the n-byte record at buf[0] has a good length and CRC."""
    if n < 4 or n > _MAX_RECORD or buf[0] != n:
        return False
    c = buf[n - 2] | (buf[n - 1] << 8)
    return c == crc16(buf[:n - 2])


# --- punch records --------------------------------------------------------------------------------

def _canon_dec(s):
    return 0 < len(s) <= 18 and s.isdigit() and (s == "0" or s[0] != "0")


def _put_str(buf, pos, s, n):
    # At most n bytes of UTF-8, after their count.
    b = s.encode()
    if len(b) > n:
        raise ValueError("string too long: %r" % s)
    buf[pos] = len(b)
    pos += 1
    buf[pos:pos + len(b)] = b
    return pos + len(b)


def _get_str(buf, pos):
    n = buf[pos]
    pos += 1
    return str(bytes(buf[pos:pos + n]), "utf-8"), pos + n


def encode(buf, punch, seq, base):
    """Encode the punch with sequence seq as a record into buf (>= 256 bytes); return its length.
    base: (seq, ms, utc offset) of the segment that will hold it."""
    q = punch.quality
    if q < 0 or q > 3:
        raise ValueError("quality")
    if punch.uncertainty_ms < 0 or seq < base[0]:
        raise ValueError("uncertainty/seq")
    try:
        kc = _KINDS.index(punch.kind)
    except ValueError:
        kc = 3
    emp = punch.employee
    buf[1] = (_T_PUNCH << 5) | (q << 3) | (kc << 1) | (emp is not None)
    i = put_uv(buf, 3, seq - base[0])
    i = put_zz(buf, i, punch.utc_ms - base[1])
    i = put_uv(buf, i, punch.uncertainty_ms)
    off = punch.utc_offset_min
    form = 0
    if off != base[2]:
        form = _F_OFF
        i = put_zz(buf, i, off)
    # The badge, in the smallest form that gives back the same text.
    badge = punch.badge
    n = len(badge)
    if n == 0 or n > _MAX_BADGE:
        raise ValueError("badge length")
    raw = None
    if not n & 1:
        try:
            raw = binascii.unhexlify(badge)
        except ValueError:
            pass
    h = binascii.hexlify(raw).decode() if raw is not None else ""
    c = badge.find(":")
    if h and h.upper() == badge and (len(raw) == 4 or len(raw) == 7):
        form |= (_B_HEX4 if len(raw) == 4 else _B_HEX7) << 5
        buf[i:i + len(raw)] = raw
        i += len(raw)
    elif h and (h.upper() == badge or h == badge):
        form |= (_B_HEXN if h.upper() == badge else _B_HEXL) << 5
        buf[i] = len(raw)
        buf[i + 1:i + 1 + len(raw)] = raw
        i += 1 + len(raw)
    elif c > 0 and _canon_dec(badge[:c]) and _canon_dec(badge[c + 1:]):
        form |= _B_WIEG << 5
        i = put_uv(buf, put_uv(buf, i, int(badge[:c])), int(badge[c + 1:]))
    elif _canon_dec(badge):
        form |= _B_DEC << 5
        i = put_uv(buf, i, int(badge))
    else:
        form |= _B_STR << 5
        i = _put_str(buf, i, badge, 4 * _MAX_BADGE)
    buf[2] = form
    if kc == 3:
        i = _put_str(buf, i, punch.kind, _MAX_KIND)
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


def decode(buf, base):
    """Decode a checked punch record at buf[0] (see check()) into a Punch; base as for encode()."""
    tag = buf[1]
    form = buf[2]
    d, i = get_uv(buf, 3)
    seq = base[0] + d
    d, i = get_zz(buf, i)
    ms = base[1] + d
    unc, i = get_uv(buf, i)
    off = base[2]
    if form & _F_OFF:
        off, i = get_zz(buf, i)
    form >>= 5
    if form == _B_HEX4 or form == _B_HEX7:
        n = 4 if form == _B_HEX4 else 7
        badge = binascii.hexlify(buf[i:i + n]).decode().upper()
        i += n
    elif form == _B_HEXN or form == _B_HEXL:
        n = buf[i]
        badge = binascii.hexlify(buf[i + 1:i + 1 + n]).decode()
        if form == _B_HEXN:
            badge = badge.upper()
        i += 1 + n
    elif form == _B_WIEG:
        d, i = get_uv(buf, i)
        n, i = get_uv(buf, i)
        badge = "%d:%d" % (d, n)
    elif form == _B_DEC:
        d, i = get_uv(buf, i)
        badge = str(d)
    elif form == _B_STR:
        badge, i = _get_str(buf, i)
    else:
        raise ValueError("badge form")
    kc = (tag >> 1) & 3
    if kc == 3:
        kind, i = _get_str(buf, i)
    else:
        kind = _KINDS[kc]
    emp = None
    if tag & 1:
        e, i = get_uv(buf, i)
        if e & 1:
            emp = str(e >> 1)
        else:
            e >>= 1
            emp = str(bytes(buf[i:i + e]), "utf-8")
    return Punch(ms, badge, kind, (tag >> 3) & 3, unc, emp, off, seq)
