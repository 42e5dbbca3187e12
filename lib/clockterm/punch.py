# Punch record: one badge event, and its compact binary record format on flash (about 16 bytes).
#
# A record is framed as [len][tag][body...][crc16 LE]. len counts the whole record (4..254; 0xFF is
# erased flash, so a len byte of 0xFF ends a log). The tag's top three bits are the record type
# (type 1: a punch, format 1; types 2 and 3 are the journal's ack and correction records, see
# journal.py); a reader that does not know a type skips the record by its length. The CRC is the low
# 16 bits of CRC-32 over len..body; 0xFFFF is never stored (mapped to 0) so a record cut off by a
# power loss (its tail still erased) cannot pass.
#
# A punch record: tag = type, quality (2 bits), kind code (2 bits), employee flag (1 bit); then the
# form byte (badge form in its top three bits, _F_OFF), the seq and the time as varint deltas from
# the base of the segment (sector or file) that holds the record, the uncertainty, the UTC offset
# when it differs from the base's, the badge, the kind when its code is _KIND_OTHER, the employee.
# The journal passes the base, (seq, ms, utc offset), from the segment header. Badges in the usual
# shapes are stored as binary: 4- and 7-byte hex UIDs as 4 or 7 bytes, Wiegand "F:C" as two varints,
# decimal numbers as a varint; anything else as UTF-8 (at most 20 characters).

import binascii
from micropython import const

# The clock quality of a stamp (Punch.quality), defined here for the whole firmware: Clock.now()
# gives the first three, the journal sets the fourth on the punches it reads back corrected.
# QUALITY names them, by code, for STATUS, the central API and the display.
Q_UNSYNCED = const(0)  # no sync this boot yet: the RTC's time (or the last stored one), flagged
Q_SYNCED = const(1)
Q_STALE = const(2)  # the last sync is older than the clock's stale_after_s
Q_CORRECTED = const(3)  # stamped before the boot's first sync, corrected by the offset that sync found
QUALITY = ("unsynced", "synced", "stale", "corrected")

# kind codes (the tag's bits 1-2); a kind without a code of its own follows as a string. Compared one by
# one, not looked up in a tuple: a constant tuple is an object in the heap (docs/heap.md).
_KIND_IN = const(0)
_KIND_OUT = const(1)
_KIND_UNKNOWN = const(2)
_KIND_OTHER = const(3)
_MAX_BADGE = const(20)  # characters
_MAX_KIND = const(16)  # characters
_MAX_EMPLOYEE = const(32)  # characters
_MAX_RECORD = const(254)  # bytes, whole record (journal.py has a copy: tests/test_consts.py)

# record types (tag >> 5); 0 and 7 are never written (zeroed / erased flash)
_T_PUNCH = const(1)  # (journal.py has a copy)

# A record's fields at fixed places: its length at 0, its tag (type << 5 | ...) at _TAG_AT, and in a
# punch record the form byte and the seq (journal.py has copies of _TAG_AT and _SEQ_AT)
_TAG_AT = const(1)
_FORM_AT = const(2)
_SEQ_AT = const(3)

# A segment's base, the tuple encode() and decode() take (journal.py builds it: a copy)
_BASE_SEQ = const(0)
_BASE_MS = const(1)
_BASE_OFF = const(2)  # UTC offset, minutes

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
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint")


def get_zz(buf, pos):
    """Read a signed (zigzag) varint at buf[pos]: (value, next index)."""
    v, pos = get_uv(buf, pos)
    return (v >> 1) if not v & 1 else -((v + 1) >> 1), pos


# --- framing --------------------------------------------------------------------------------------

def crc16(buf):
    """The record CRC of buf: CRC-32's low 16 bits, never 0xFFFF (erased flash)."""
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
    quality = punch.quality
    if quality < 0 or quality > Q_CORRECTED:
        raise ValueError("quality")
    if punch.uncertainty_ms < 0 or seq < base[_BASE_SEQ]:
        raise ValueError("uncertainty/seq")
    kind = punch.kind
    if kind == "in":
        kind_code = _KIND_IN
    elif kind == "out":
        kind_code = _KIND_OUT
    elif kind == "unknown":
        kind_code = _KIND_UNKNOWN
    else:
        kind_code = _KIND_OTHER
    employee = punch.employee
    buf[_TAG_AT] = (_T_PUNCH << 5) | (quality << 3) | (kind_code << 1) | (employee is not None)
    i = put_uv(buf, _SEQ_AT, seq - base[_BASE_SEQ])
    i = put_zz(buf, i, punch.utc_ms - base[_BASE_MS])
    i = put_uv(buf, i, punch.uncertainty_ms)
    buf[_FORM_AT] = 0
    if punch.utc_offset_min != base[_BASE_OFF]:
        buf[_FORM_AT] = _F_OFF
        i = put_zz(buf, i, punch.utc_offset_min)
    i = _put_badge(buf, i, punch.badge)
    if kind_code == _KIND_OTHER:
        i = _put_str(buf, i, kind, _MAX_KIND)
    if employee is not None:
        if _canon_dec(employee):
            i = put_uv(buf, i, (int(employee) << 1) | 1)
        else:
            e = employee.encode()
            if len(e) > _MAX_EMPLOYEE:
                raise ValueError("employee too long")
            i = put_uv(buf, i, len(e) << 1)
            buf[i:i + len(e)] = e
            i += len(e)
    return seal(buf, i)


def _put_badge(buf, pos, badge):
    # The badge at buf[pos], in the smallest form that gives back the same text; its form goes into
    # the form byte. Returns the next index.
    n = len(badge)
    if n == 0 or n > _MAX_BADGE:
        raise ValueError("badge length")
    raw = None
    if not n & 1:
        try:
            raw = binascii.unhexlify(badge)
        except ValueError:
            pass
    hexed = binascii.hexlify(raw).decode() if raw is not None else ""
    colon = badge.find(":")
    if hexed and hexed.upper() == badge and (len(raw) == 4 or len(raw) == 7):
        form = _B_HEX4 if len(raw) == 4 else _B_HEX7
        buf[pos:pos + len(raw)] = raw
        pos += len(raw)
    elif hexed and (hexed.upper() == badge or hexed == badge):
        form = _B_HEXN if hexed.upper() == badge else _B_HEXL
        buf[pos] = len(raw)
        buf[pos + 1:pos + 1 + len(raw)] = raw
        pos += 1 + len(raw)
    elif colon > 0 and _canon_dec(badge[:colon]) and _canon_dec(badge[colon + 1:]):
        form = _B_WIEG
        pos = put_uv(buf, put_uv(buf, pos, int(badge[:colon])), int(badge[colon + 1:]))
    elif _canon_dec(badge):
        form = _B_DEC
        pos = put_uv(buf, pos, int(badge))
    else:
        form = _B_STR
        pos = _put_str(buf, pos, badge, 4 * _MAX_BADGE)
    buf[_FORM_AT] |= form << 5
    return pos


def decode(buf, base):
    """Decode a checked punch record at buf[0] (see check()) into a Punch; base as for encode()."""
    tag = buf[_TAG_AT]
    form = buf[_FORM_AT]
    delta, i = get_uv(buf, _SEQ_AT)
    seq = base[_BASE_SEQ] + delta
    delta, i = get_zz(buf, i)
    ms = base[_BASE_MS] + delta
    uncertainty, i = get_uv(buf, i)
    offset = base[_BASE_OFF]
    if form & _F_OFF:
        offset, i = get_zz(buf, i)
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
        facility, i = get_uv(buf, i)
        card, i = get_uv(buf, i)
        badge = "%d:%d" % (facility, card)
    elif form == _B_DEC:
        number, i = get_uv(buf, i)
        badge = str(number)
    elif form == _B_STR:
        badge, i = _get_str(buf, i)
    else:
        raise ValueError("badge form")
    kind_code = (tag >> 1) & 3
    if kind_code == _KIND_IN:
        kind = "in"
    elif kind_code == _KIND_OUT:
        kind = "out"
    elif kind_code == _KIND_UNKNOWN:
        kind = "unknown"
    else:
        kind, i = _get_str(buf, i)
    employee = None
    if tag & 1:
        e, i = get_uv(buf, i)  # a number (odd), else the length of a string (even)
        if e & 1:
            employee = str(e >> 1)
        else:
            e >>= 1
            employee = str(bytes(buf[i:i + e]), "utf-8")
    quality = (tag >> 3) & 3
    # Positional, in the constructor's order: a keyword call matches each name, slower per punch read.
    return Punch(ms, badge, kind, quality, uncertainty, employee, offset, seq)
