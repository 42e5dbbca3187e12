# Punch journal: a crash-safe log-structured ring of punch records over a segment store.
#
# The store (ring_raw.RawRing on a flash partition, ring_lfs.LfsRing on LittleFS files) offers N
# equal slots ("segments") that can be erased whole and then programmed front to back; unwritten
# bytes read as 0xFF. Each segment starts with a 48-byte header (journal id, generation, base seq,
# base time, base UTC offset, acked seq, latest time correction, CRC) followed by records
# (clockterm.punch: punch, ack and correction records, each with its own CRC). Segments are used in
# slot order round the ring; a segment is erased only when the ring comes round to it.
#
# Why this is crash-safe: a record is programmed once into erased space; the write position after
# a restart is behind the last non-erased byte of the newest segment, so a torn record is skipped by
# its length and never written over. A segment is erased only when it holds nothing unacknowledged
# (policy "refuse") and its header is written after the erase, so a cut there leaves an invalid slot
# that is erased again on the next roll. Every new header carries the seq and the acked point, so
# neither goes back when old segments (with their ack records) are erased.
#
# Recovery reads every header (N small reads) and scans only the segments from the one holding the
# oldest unacknowledged punch to the newest: bounded by the ring size, short when the uplink keeps up.

import os
import struct
from array import array
from micropython import const

from clockterm import punch as _p

_HDR = const(48)  # header bytes reserved at the start of each segment
_HFMT = "<2sBBIIIIHhIIIq"  # magic ver flags jid gen base_seq ms_lo ms_hi off acked cfrom cthrough cdelta
_HLEN = const(44)  # packed size of _HFMT; CRC16 follows
_MAGIC = b"CJ"
_VER = const(1)
_WIN = const(256)  # read window: holds any record (<= 254 bytes)
_MAX_CORR = const(8)  # corrections kept in RAM (one per boot with pre-sync punches)
_MAX_BAD = const(64)  # distinct corrupt records remembered, so re-reads do not count twice
_ENOSPC = const(28)
_NOMINAL = const(16)  # bytes per punch record for the capacity estimate before any is written
# From clockterm.punch (its private constants; a const does not cross modules): record types and size.
_T_PUNCH = const(1)
_T_ACK = const(2)
_T_CORR = const(3)
_MAX_RECORD = const(254)
_Q_CORRECTED = const(3)

POLICIES = ("refuse", "overwrite")


class JournalError(Exception):
    """The journal cannot store or read: storage failure, bad argument."""


class JournalFull(JournalError):
    """No room for a new punch: the ring is full of unacknowledged punches (policy "refuse")."""


class Journal:
    """The punch journal over a segment store (see ring_raw, ring_lfs)."""

    def __init__(self, store, policy="refuse", seq_floor=0, floor_path=None):
        if policy not in POLICIES:
            raise JournalError("unknown full policy %r" % policy)
        self.store = store
        self.policy = policy
        self.n = store.slots
        self.ss = store.slot_size
        if self.n < 3 or self.ss < 128:
            raise JournalError("store too small")
        self.reserve = max(16, self.ss // 32)  # bytes at each segment end kept for ack/correction records
        self._floor = seq_floor  # lowest seq a new format may start after (seq never reused)
        self._floor_path = floor_path  # optional file that keeps the seq floor across a reformat
        self._base = array("I", bytes(4 * self.n))  # base seq per slot; 0: slot holds no valid segment
        self._buf = bytearray(_WIN)  # record being written; also segment headers (a roll rewrites the record)
        self._win = bytearray(_WIN)  # read window for recovery and status
        self._bad = []  # (gen, offset) of corrupt records already counted
        self.corrupt_skipped = 0
        self.dropped = 0  # unacknowledged punches lost to policy "overwrite"
        self.ack_unsaved = False  # an ack that found no room waits for the next header
        self._full = False
        self._nb = 0  # bytes and punches appended this session (capacity estimate)
        self._np = 0
        self.recover()

    # --- headers --------------------------------------------------------------------------------

    def _read_hdr(self, s):
        # Parsed header tuple of a slot, or None when it holds no valid segment header.
        hb = memoryview(self._buf)[:_HDR]
        self.store.read(s, 0, hb)
        if hb[0:2] != _MAGIC or hb[2] != _VER:
            return None
        if (hb[_HLEN] | (hb[_HLEN + 1] << 8)) != _p.crc16(hb[:_HLEN]):
            return None
        return struct.unpack_from(_HFMT, hb)

    def _write_hdr(self, s, n, seq, ms, off):
        # Segment header of slot s: generation n, base seq, base time and UTC offset.
        hb = memoryview(self._buf)[:_HDR]
        c = self._corr[-1] if self._corr else (0, 0, 0)
        for i in range(_HDR):
            hb[i] = 0xFF
        struct.pack_into(_HFMT, hb, 0, _MAGIC, _VER, 0xFF, self._jid, n, seq, ms & 0xFFFFFFFF,
                         (ms >> 32) & 0xFFFF, off, self.acked_seq, c[0], c[1], c[2])
        crc = _p.crc16(hb[:_HLEN])
        hb[_HLEN] = crc & 0xFF
        hb[_HLEN + 1] = crc >> 8
        self.store.program(s, 0, hb)

    # --- recovery -------------------------------------------------------------------------------

    def recover(self):
        """Rebuild the in-RAM state from the store (at open, and after a failed write)."""
        self._dirty = True
        n = self.n
        head = -1
        hgen = 0
        for s in range(n):
            h = self._read_hdr(s)
            if h is not None and (head < 0 or h[4] > hgen):
                head, hgen, jid = s, h[4], h[3]
        self._corr = []
        if head < 0:
            self.format()
            return
        self._jid = jid
        self.journal_id = "%08x" % jid
        acked = 0
        for s in range(n):
            h = self._read_hdr(s)
            if h is None or h[3] != jid or h[4] > hgen or hgen - h[4] >= n:
                self._base[s] = 0
                continue
            self._base[s] = h[5]
            if h[9] > acked:
                acked = h[9]
            if h[12]:
                self._add_corr((h[10], h[11], h[12]))
            if s == head:
                hh = h
        self._h = head
        self._hgen = hgen
        self._hbase = hh[5]
        self._hms = hh[6] | (hh[7] << 32)
        self._hoff = hh[8]
        self.acked_seq = acked
        last = self._hbase - 1
        wp = _HDR
        # Scan from the segment holding the oldest unacknowledged punch to the newest.
        for s in self._slots_from(self._slot_of(acked + 1)):
            base, ms, off = self._seg_base(s)
            end = self._tail(s)
            p = _HDR
            for p, o, k in self._records(s, end):
                mv = memoryview(self._win)[o:o + k]
                t = mv[1] >> 5  # record type
                if t == _T_PUNCH:
                    q = base + _p.get_uv(mv, 3)[0]
                    if q > last:
                        last = q
                elif t == _T_ACK:
                    a = base + _p.get_zz(mv, 2)[0]
                    if a > self.acked_seq:
                        self.acked_seq = a
                elif t == _T_CORR:
                    self._add_corr(_corr_of(mv, base))
            if s == head:
                wp = self._wp  # where _records stopped
        self.last_seq = last
        if self.acked_seq > last:
            self.acked_seq = last
        self._wp = wp
        self._dirty = False

    def _seg_base(self, s):
        if s == self._h:
            return self._hbase, self._hms, self._hoff
        h = self._read_hdr(s)
        return h[5], h[6] | (h[7] << 32), h[8]

    def _tail(self, s):
        # Offset just past the last byte of slot s that is not 0xFF.
        if s == self._h and not self._dirty:
            return self._wp
        w = self._win
        end = self.ss
        while end > _HDR:
            k = min(_WIN, end - _HDR)
            mv = memoryview(w)[:k]
            self.store.read(s, end - k, mv)
            for i in range(k - 1, -1, -1):
                if w[i] != 0xFF:
                    return end - k + i + 1
            end -= k
        return _HDR

    def _records(self, s, end):
        # Yield (offset, window index, length) for each good record of slot s before `end`,
        # counting and skipping corrupt stretches. The record's bytes are self._win[index:index +
        # length] until the next step. After the loop, self._wp is where the next record may go
        # (recovery only: the journal is dirty meanwhile).
        w = self._win
        mv = memoryview(w)
        ss = self.ss
        w0 = -1
        wl = 0
        p = _HDR
        while p < end:
            if w0 < 0 or p + _WIN > w0 + wl and w0 + wl < ss:
                wl = min(_WIN, ss - p)
                self.store.read(s, p, mv[:wl])
                w0 = p
            o = p - w0
            k = w[o]
            if 4 <= k <= _MAX_RECORD and o + k <= wl and _p.check(mv[o:], k):
                yield p, o, k
                p += k
                continue
            p = self._skip(s, p, k, end)
            w0 = -1
        self._wp = p

    def _valid_at(self, s, pos):
        if pos + 4 > self.ss:
            return False
        t = self._buf  # not in use while scanning
        mv = memoryview(t)[:min(_WIN, self.ss - pos)]
        self.store.read(s, pos, mv)
        k = t[0]
        return k <= len(mv) and _p.check(mv, k)

    def _skip(self, s, p, k, end):
        # A corrupt record at p of slot s (length byte k): count it once, return where to go on.
        key = (self._base[s], p)
        if key not in self._bad:
            if len(self._bad) < _MAX_BAD:
                self._bad.append(key)
            self.corrupt_skipped += 1
        # Torn tail: its length lands, its rest is still erased; continue behind it.
        if 4 <= k <= _MAX_RECORD and (p + k >= end or self._valid_at(s, p + k)):
            return p + k
        # Else the first offset behind p where a valid record starts; `end` when there is none.
        p += 1
        while p < end:
            if self._valid_at(s, p):
                return p
            p += 1
        return end

    def _add_corr(self, c):
        # c: (from_seq, through_seq, delta_ms)
        if c in self._corr:
            return
        self._corr.append(c)
        if len(self._corr) > _MAX_CORR:
            self._corr.pop(0)

    # --- ring geometry --------------------------------------------------------------------------

    def _slots_from(self, s):
        # Valid slots from s round the ring to the head, in order.
        n = self.n
        while True:
            if self._base[s]:
                yield s
            if s == self._h:
                return
            s = (s + 1) % n

    def _oldest(self):
        n = self.n
        s = (self._h + 1) % n
        while not self._base[s]:
            s = (s + 1) % n
        return s

    def _slot_of(self, seq):
        # The segment that holds `seq` (the oldest one when seq is older than the ring).
        s = self._h
        n = self.n
        for _ in range(n):
            b = self._base[s]
            if b and b <= seq:
                return s
            s = (s - 1) % n
        return self._oldest()

    # --- writing --------------------------------------------------------------------------------

    def format(self, seq_floor=0):
        """Erase the store and start a new journal with a new random id; seqs continue upwards."""
        floor = max(seq_floor, self._floor, getattr(self, "last_seq", 0))
        if self._floor_path:
            try:
                with open(self._floor_path) as f:
                    floor = max(floor, int(f.read()))
            except (OSError, ValueError):
                pass
        self._jid = int.from_bytes(os.urandom(4), "little") or 1
        self.journal_id = "%08x" % self._jid
        for s in range(self.n):
            self.store.erase(s)
            self._base[s] = 0
        self._corr = []
        self.acked_seq = floor
        self.last_seq = floor
        self._h = 0
        self._hgen = 1
        self._hbase = floor + 1
        self._hms = 0
        self._hoff = 0
        self._write_hdr(0, 1, floor + 1, 0, 0)
        self._base[0] = floor + 1
        self._wp = _HDR
        self._dirty = False

    def _roll(self, ms, off):
        # Open the next segment. Returns False when it holds unacknowledged punches and they must stay.
        n = self.n
        nxt = (self._h + 1) % n
        if self._base[nxt]:
            # Highest seq it holds: one less than the base of the segment after it.
            t = (nxt + 1) % n
            while not self._base[t]:
                t = (t + 1) % n
            mx = self._base[t] - 1
            if mx > self.acked_seq:
                if self.policy == "refuse":
                    return False
                self.dropped += mx - max(self.acked_seq, self._base[nxt] - 1)
        self._dirty = True
        self._base[nxt] = 0
        self.store.erase(nxt)
        gen = self._hgen + 1
        self._write_hdr(nxt, gen, self.last_seq + 1, ms, off)
        self._base[nxt] = self.last_seq + 1
        self._h = nxt
        self._hgen = gen
        self._hbase = self.last_seq + 1
        self._hms = ms
        self._hoff = off
        self._wp = _HDR
        self.ack_unsaved = False
        self._dirty = False
        if self._floor_path:
            try:
                with open(self._floor_path, "w") as f:
                    f.write(str(self.last_seq))
            except OSError:
                pass  # the floor is a second line of defence; the journal header is the first
        return True

    def append(self, punch):
        """Store punch durably; set and return its seq. Raises JournalFull, JournalError."""
        if self._dirty:
            self.recover()
        seq = self.last_seq + 1
        try:
            k = _p.encode(self._buf, punch, seq, self._hbase, self._hms, self._hoff)
        except ValueError as e:
            raise JournalError("bad punch: %s" % e)
        try:
            if self._wp + k > self.ss - self.reserve:
                if not self._roll(punch.utc_ms, punch.utc_offset_min):
                    self._full = True
                    raise JournalFull("memory full")
                k = _p.encode(self._buf, punch, seq, self._hbase, self._hms, self._hoff)
            # Program the record at the write position; dirty until it is known how much landed.
            self._dirty = True
            self.store.program(self._h, self._wp, memoryview(self._buf)[:k])
            self._wp += k
            self._dirty = False
        except OSError as e:
            raise _write_error(e)
        self.last_seq = seq
        self._full = False
        self._nb += k
        self._np += 1
        punch.seq = seq
        punch.journal_id = self.journal_id
        return seq

    def _put_meta(self, k):
        # Program an ack/correction record, using the reserve; roll when even that is used up.
        try:
            if self._wp + k > self.ss:
                if self._roll(self._hms, self._hoff):
                    return True  # the new header carries the acked point and the latest correction
                self.ack_unsaved = True
                return False
            self._dirty = True
            self.store.program(self._h, self._wp, memoryview(self._buf)[:k])
            self._wp += k
            self._dirty = False
        except OSError as e:
            raise _write_error(e)
        return True

    def ack(self, through_seq):
        """Mark every punch up to through_seq as stored centrally; durable on return."""
        if self._dirty:
            self.recover()
        if through_seq > self.last_seq:
            through_seq = self.last_seq
        if through_seq <= self.acked_seq:
            return
        self.acked_seq = through_seq
        b = self._buf
        b[1] = _T_ACK << 5
        k = _p.seal(b, _p.put_zz(b, 2, through_seq - self._hbase))
        self._put_meta(k)

    def correct(self, from_seq, through_seq, delta_ms):
        """Record that punches from_seq..through_seq get delta_ms added (quality becomes corrected)."""
        if self._dirty:
            self.recover()
        if from_seq > through_seq or through_seq > self.last_seq or from_seq < 1:
            raise JournalError("bad correction range")
        if not delta_ms:
            return
        self._add_corr((from_seq, through_seq, delta_ms))
        b = self._buf
        b[1] = _T_CORR << 5
        i = _p.put_zz(b, 2, from_seq - self._hbase)
        i = _p.put_uv(b, i, through_seq - from_seq)
        i = _p.put_zz(b, i, delta_ms)
        if not self._put_meta(_p.seal(b, i)):
            raise JournalFull("memory full")

    # --- reading --------------------------------------------------------------------------------

    def pending(self, after_seq=None, limit=None):
        """Iterate punches with seq > after_seq (default: the acked point) in order, up to limit."""
        if self._dirty:
            self.recover()
        after = self.acked_seq if after_seq is None else after_seq
        win = bytearray(_WIN)  # own window: the caller may append while iterating
        mv = memoryview(win)
        count = 0
        for s in self._slots_from(self._slot_of(after + 1)):
            base, ms, off = self._seg_base(s)
            end = self._wp if s == self._h else self._tail(s)
            p = _HDR
            while p < end:
                self.store.read(s, p, mv[:min(_WIN, self.ss - p)])
                k = win[0]
                if not (4 <= k <= _MAX_RECORD and _p.check(mv, k)):
                    p = self._skip(s, p, k, end)
                    continue
                p += k
                if mv[1] >> 5 != _T_PUNCH or base + _p.get_uv(mv, 3)[0] <= after:
                    continue
                pu = _p.decode(mv, base, ms, off)
                for f, t, d in self._corr:
                    if f <= pu.seq <= t:
                        pu.utc_ms += d
                        pu.quality = _Q_CORRECTED
                        break
                pu.journal_id = self.journal_id
                yield pu
                count += 1
                if limit is not None and count >= limit:
                    return

    def status(self):
        """Counters and fill level for the endpoint."""
        if self._dirty:
            self.recover()
        usable = self.ss - _HDR - self.reserve
        avg = self._nb / self._np if self._np >= 16 else _NOMINAL
        oldest = self._oldest()
        oldest_seq = self._base[oldest]
        oldest_ms = None
        for pu in self.pending(oldest_seq - 1, 1):
            oldest_seq, oldest_ms = pu.seq, pu.utc_ms
        if self.last_seq <= self.acked_seq:
            fill = 0
        else:
            k = sum(1 for _ in self._slots_from(self._slot_of(self.acked_seq + 1)))
            fill = ((k - 1) * usable + self._wp - _HDR) * 100 // (self.n * usable)
        warnings = []
        if self._full:
            warnings.append("memory full")
        elif fill >= 90:
            warnings.append("memory 90%")
        elif fill >= 80:
            warnings.append("memory 80%")
        if self.ack_unsaved:
            warnings.append("ack not yet saved")
        return {
            "backend": self.store.name,
            "journal_id": self.journal_id,
            "capacity": int(self.n * usable / avg),
            "used": max(0, self.last_seq - oldest_seq + 1),
            "pending": self.last_seq - self.acked_seq,
            "fill_pct": fill,
            "last_seq": self.last_seq,
            "acked_seq": self.acked_seq,
            "oldest_seq": oldest_seq,
            "oldest_ms": oldest_ms,
            "corrupt_skipped": self.corrupt_skipped,
            "dropped": self.dropped,
            "full_policy": self.policy,
            "warnings": warnings,
            "segments": self.n,
            "segment_bytes": self.ss,
        }

    def close(self):
        self.store.close()


def _write_error(e):
    if e.args and e.args[0] == _ENOSPC:
        return JournalFull("memory full: no space left on the filesystem")
    return JournalError("flash write failed: %r" % (e,))


def _corr_of(mv, base):
    f, i = _p.get_zz(mv, 2)
    t, i = _p.get_uv(mv, i)
    d, i = _p.get_zz(mv, i)
    return base + f, base + f + t, d


def open_journal(kind, policy="refuse", seq_floor=0, floor_path=None, **params):
    """Build the journal for a board config: kind "raw" (bdev=partition) or "littlefs" (root=dir)."""
    if kind == "raw":
        from clockterm.ring_raw import RawRing

        store = RawRing(params["bdev"])
    elif kind == "littlefs":
        from clockterm.ring_lfs import LfsRing

        store = LfsRing(params.get("root", "/journal"), params.get("capacity_bytes", 2 * 1024 * 1024),
                        params.get("segment_bytes", 4096))
    else:
        raise JournalError("unknown journal backend %r" % kind)
    return Journal(store, policy, seq_floor, floor_path)
