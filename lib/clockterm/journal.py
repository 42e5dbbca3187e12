# Punch journal: a crash-safe log-structured ring of punch records on a block device.
#
# The store is a block device with the extended block protocol (readblocks(block, buf, offset),
# writeblocks(block, buf, offset) that programs without erasing, ioctl 4/5 for geometry, 6 to erase
# a block, 3 to sync): the raw journal partition itself (esp32.Partition, boards.norflash.NorFlash),
# or ring_lfs.LfsRing, which keeps each block as a file on LittleFS. Each block ("segment") can be
# erased whole and then programmed front to back; unwritten bytes read as 0xFF. Each segment starts
# with a 48-byte header (journal id, generation, base seq, base time, base UTC offset, acked seq,
# latest time correction, CRC) followed by records (clockterm.punch: punch, ack and correction
# records, each with its own CRC). Segments are used in block order round the ring; a segment is
# erased only when the ring comes round to it.
#
# Why this is crash-safe: a record is programmed once into erased space; the write position after
# a restart is behind the last non-erased byte of the newest segment, so a torn record is skipped by
# its length and never written over. A segment is erased only when it holds nothing unacknowledged
# (policy "refuse") and its header is written after the erase, so a cut there leaves an invalid slot
# that is erased again on the next roll. Every new header carries the seq and the acked point, so
# neither goes back when old segments (with their ack records) are erased.
#
# RAM: no table per segment. The valid segments run in ring order from the oldest (self._t) to the
# head, base seqs rising; a segment's base is read from its header when needed (a binary search finds
# the one holding a seq). Recovery reads every header twice and scans only the segments from the one
# holding the oldest unacknowledged punch to the newest: bounded by the ring size, short when the
# uplink keeps up.

import os
import struct
from micropython import const

from clockterm import punch

_HDR = const(48)  # header bytes reserved at the start of each segment
_HFMT = const("<2sBBIIIIHhIIIq")  # magic ver flags jid gen base_seq ms_lo ms_hi off acked cfrom cthrough cdelta
_HLEN = const(44)  # packed size of _HFMT; CRC16 follows
_SEQ_LIMIT = const(0x7FFFFFFF)  # a seq floor read from its file must be under this (the header keeps u32 seqs)
_FLOOR_BYTES = const(12)  # read of the seq floor file (a few digits)
_MAGIC = const(b"CJ")
_VER = const(1)
_WIN = const(256)  # read window: holds any record (<= 254 bytes)
_MAX_CORR = const(8)  # corrections kept in RAM (one per boot with pre-sync punches)
_MAX_BAD = const(64)  # distinct corrupt records remembered, so re-reads do not count twice
_ENOSPC = const(28)
_NOMINAL = const(16)  # bytes per punch record for the capacity estimate before any is written
# block device ioctls
_SYNC = const(3)
_COUNT = const(4)
_SIZE = const(5)
_ERASE = const(6)
# From clockterm.punch (its private constants; a const does not cross modules): record types and size.
_T_PUNCH = const(1)
_T_ACK = const(2)
_T_CORR = const(3)
_MAX_RECORD = const(254)
_Q_CORRECTED = const(3)


class JournalFull(Exception):
    """No room for a new punch: the ring is full of unacknowledged punches (policy "refuse"), or the
    filesystem under a LittleFS journal is full. Other failures: OSError from the flash, ValueError
    for a bad argument."""


class Journal:
    """The punch journal over a block device (see the top of this file)."""

    def __init__(self, store, policy="refuse", seq_floor=0, floor_path=None):
        if policy != "refuse" and policy != "overwrite":
            raise ValueError("unknown full policy %r" % policy)
        self.store = store
        self.policy = policy
        self.n = store.ioctl(_COUNT, 0)
        self.ss = store.ioctl(_SIZE, 0)
        if self.n < 3 or self.ss < 256:
            raise ValueError("store too small")
        self.last_seq = seq_floor  # a store without a journal is formatted to start above it
        self._floor_path = floor_path  # optional file that keeps the seq floor across a reformat
        # Record being written, segment headers, corrupt-record probes. Readers have their own window.
        self._buf = bytearray(_WIN)
        self._bad = ()  # (base seq, offset) of corrupt records already counted
        self.corrupt_skipped = 0
        self.dropped = 0  # unacknowledged punches lost to policy "overwrite"
        self.ack_unsaved = False  # an ack that found no room waits for the next header
        self._full = False
        self._nb = 0  # bytes and punches appended this session (capacity estimate)
        self._np = 0
        self.recover()

    # --- headers --------------------------------------------------------------------------------

    def _hdr(self, s):
        # The parsed header of slot s, or None when the slot holds no segment of this journal (of
        # any journal while recovery looks for the newest: self._hd is None then).
        hb = memoryview(self._buf)[:_HDR]
        self.store.readblocks(s, hb, 0)
        if hb[0:2] != _MAGIC or hb[2] != _VER or (hb[_HLEN] | (hb[_HLEN + 1] << 8)) != punch.crc16(hb[:_HLEN]):
            return None
        h = struct.unpack_from(_HFMT, hb)
        if self._hd is None or h[3] == self._hd[3] and 0 <= self._hgen - h[4] < self.n:
            return h
        return None

    def _segs(self, seq):
        # (slot, base) of each valid segment from the one holding `seq` (the oldest one when seq is
        # older than the ring) round the ring to the head, in order; base is (seq, ms, utc offset)
        # as punch.encode/decode take it. The first is the newest segment whose base seq is <= seq:
        # a binary search over the ring from the oldest segment (position 0) to the head, stepping
        # over invalid slots.
        n = self.n
        t = self._t
        lo = 0
        hi = (self.head - t) % n
        if seq >= self._hd[0]:
            lo = hi
        while lo < hi:
            mid = m = (lo + hi + 1) // 2
            h = None
            while m <= hi:
                h = self._hdr((t + m) % n)
                if h:
                    break
                m += 1
            if h and h[5] <= seq:
                lo = m
            else:
                hi = mid - 1
        s = (t + lo) % n
        while True:
            h = self._hdr(s)
            if h:
                yield s, (h[5], h[6] | (h[7] << 32), h[8])
            if s == self.head:
                return
            s = (s + 1) % n

    # --- recovery -------------------------------------------------------------------------------

    def recover(self):
        """Rebuild the in-RAM state from the store (at open, and after a failed write)."""
        self._dirty = True
        n = self.n
        self._hd = None
        head = -1
        for s in range(n):
            h = self._hdr(s)
            if h and (head < 0 or h[4] > hh[4]):
                head, hh = s, h
        self._corr = ()
        if head < 0:
            self.format()
            return
        # The head segment: (base seq, base ms, base utc offset, journal id); slot and generation.
        self._hd = (hh[5], hh[6] | (hh[7] << 32), hh[8], hh[3])
        self.journal_id = "%08x" % hh[3]
        self.head = head
        self._hgen = hh[4]
        # Every valid header in ring order, oldest first: the oldest segment, the acked point, the
        # corrections they carry.
        self._t = -1
        acked = 0
        for s in range(head + 1, head + n + 1):
            h = self._hdr(s % n)
            if h:
                if self._t < 0:
                    self._t = s % n
                if h[9] > acked:
                    acked = h[9]
                if h[12] and h[10:] not in self._corr:
                    self._corr = (self._corr + (h[10:],))[-_MAX_CORR:]
        self.acked_seq = acked
        last = hh[5] - 1
        # Scan from the segment holding the oldest unacknowledged punch to the newest.
        w = bytearray(_WIN)
        for s, base in self._segs(acked + 1):
            for p, k in self._records(s, None, w, base[0]):
                mv = memoryview(w)[p:p + k]
                t = mv[1] >> 5  # record type
                if t == _T_PUNCH:
                    t = base[0] + punch.get_uv(mv, 3)[0]
                    if t > last:
                        last = t
                elif t == _T_ACK:
                    t = base[0] + punch.get_zz(mv, 2)[0]
                    if t > self.acked_seq:
                        self.acked_seq = t
                elif t == _T_CORR:
                    f, i = punch.get_zz(mv, 2)
                    t, i = punch.get_uv(mv, i)
                    t = (base[0] + f, base[0] + f + t, punch.get_zz(mv, i)[0])
                    if t not in self._corr:
                        self._corr = (self._corr + (t,))[-_MAX_CORR:]
        self.last_seq = last
        if self.acked_seq > last:
            self.acked_seq = last
        self._dirty = False  # self._wp: where the head's scan (the last one) stopped

    def _records(self, s, end, buf, base):
        # Yield (index, length) of each good record of slot s before `end` (None: up to its last byte
        # that is not 0xFF), read through the window buf (the record is buf[index:index + length]
        # until the next step); count and skip corrupt stretches (base: the segment's base seq, to
        # know them again). During recovery (dirty), the offset where the scan stopped becomes
        # self._wp: where the next record may go.
        mv = memoryview(buf)
        ss = self.ss
        if end is None:
            end = ss
            while end > _HDR:
                k = min(_WIN, end - _HDR)
                self.store.readblocks(s, mv[:k], end - k)
                while k and buf[k - 1] == 0xFF:
                    k -= 1
                    end -= 1
                if k:
                    break
        w0 = -1
        wl = 0
        p = _HDR
        while p < end:
            if w0 < 0 or p + _WIN > w0 + wl and w0 + wl < ss:
                wl = min(_WIN, ss - p)
                self.store.readblocks(s, mv[:wl], p)
                w0 = p
            o = p - w0
            k = buf[o]
            if 4 <= k <= _MAX_RECORD and o + k <= wl and punch.check(mv[o:], k):
                yield o, k
                p += k
                continue
            # A corrupt record at p (length byte k): count it once.
            if (base, p) not in self._bad:
                if len(self._bad) < _MAX_BAD:
                    self._bad += ((base, p),)
                self.corrupt_skipped += 1
            # Go on behind it if a record starts there, or at its end (a torn tail: its length landed,
            # its rest is still erased); else at the first offset behind p where a record starts.
            q = p + k if 4 <= k <= _MAX_RECORD else p + 1
            p += 1
            b = self._buf  # scratch: the window keeps its place
            while q < end:
                bm = memoryview(b)[:min(_WIN, ss - q)]
                self.store.readblocks(s, bm, q)
                if b[0] <= len(bm) and punch.check(bm, b[0]):
                    break
                q = p
                p += 1
            p = q
            w0 = -1
        if self._dirty:
            self._wp = p

    # --- writing --------------------------------------------------------------------------------

    def format(self, seq_floor=0):
        """Erase the store and start a new journal with a new random id; seqs continue upwards."""
        floor = max(seq_floor, self.last_seq)
        if self._floor_path:
            try:
                # A few digits, whatever the file's size; a floor the header cannot hold (a damaged
                # file) is no floor: the new journal id keeps the seqs apart from any before it
                with open(self._floor_path, "rb") as f:
                    n = int(f.read(_FLOOR_BYTES))
                if 0 <= n < _SEQ_LIMIT:
                    floor = max(floor, n)
            except (OSError, ValueError):
                pass
        self._dirty = True
        jid = int.from_bytes(os.urandom(4), "little") or 1
        self.journal_id = "%08x" % jid
        for s in range(1, self.n):
            self.store.ioctl(_ERASE, s)
        self._corr = ()
        self.acked_seq = floor
        self.last_seq = floor
        # The first segment in slot 0 as a roll from an empty ring whose head was the last slot.
        self.head = self.n - 1
        self._t = 0
        self._hgen = 0
        self._hd = (0, 0, 0, jid)
        self._roll(None)

    def _roll(self, p):
        # Open the next segment, based on punch p (None: the head's time and offset). Returns False
        # when it holds unacknowledged punches and they must stay.
        n = self.n
        nxt = (self.head + 1) % n
        h = self._hdr(nxt)
        if h:
            # The ring is full: nxt is the oldest segment. The highest seq it holds is one less than
            # the base of the segment after it, which becomes the oldest.
            t = nxt
            while True:
                t = (t + 1) % n
                ht = self._hdr(t)
                if ht:
                    break
            mx = ht[5] - 1
            if mx > self.acked_seq:
                if self.policy == "refuse":
                    return False
                self.dropped += mx - max(self.acked_seq, h[5] - 1)
            self._t = t
        self._dirty = True
        self.store.ioctl(_ERASE, nxt)
        hd = (self.last_seq + 1,) + ((p.utc_ms, p.utc_offset_min) if p else self._hd[1:3]) + self._hd[3:]
        gen = self._hgen + 1
        hb = memoryview(self._buf)[:_HDR]
        c = self._corr[-1] if self._corr else (0, 0, 0)
        for i in range(_HDR):
            hb[i] = 0xFF
        struct.pack_into(_HFMT, hb, 0, _MAGIC, _VER, 0xFF, hd[3], gen, hd[0], hd[1] & 0xFFFFFFFF, (hd[1] >> 32) & 0xFFFF,
                         hd[2], self.acked_seq, c[0], c[1], c[2])
        c = punch.crc16(hb[:_HLEN])
        hb[_HLEN] = c & 0xFF
        hb[_HLEN + 1] = c >> 8
        self.store.writeblocks(nxt, hb, 0)
        self.head = nxt
        self._hgen = gen
        self._hd = hd
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

    def _put(self, n, end, p):
        # Program the n-byte record in self._buf at the write position if it ends within `end` bytes
        # of the segment: True. Else open the next segment instead (based on punch p, see _roll) and
        # return False, without the record (the new header carries the acked point and the latest
        # correction; a punch must be encoded again against the new base), or None when the ring is
        # full. A full filesystem (LittleFS journal) raises JournalFull, other flash failures OSError.
        try:
            if self._wp + n > end:
                return False if self._roll(p) else None
            # Dirty until it is known how much landed.
            self._dirty = True
            self.store.writeblocks(self.head, memoryview(self._buf)[:n], self._wp)
            self._wp += n
            self._dirty = False
            return True
        except OSError as e:
            if e.errno == _ENOSPC:
                raise JournalFull("memory full: no space left on the filesystem")
            raise

    def append(self, p):
        """Store punch p durably; set and return its seq. Raises JournalFull, OSError (flash), ValueError
        (a punch that cannot be encoded)."""
        if self._dirty:
            self.recover()
        seq = self.last_seq + 1
        try:
            k = punch.encode(self._buf, p, seq, self._hd)
        except ValueError as e:
            raise ValueError("bad punch: %s" % e)
        # A punch leaves a reserve at each segment end for ack/correction records.
        r = self._put(k, self.ss - max(16, self.ss // 32), p)
        if r is None:
            self._full = True
            raise JournalFull("memory full")
        if not r:  # in a new segment: encoded against its base, it fits
            k = punch.encode(self._buf, p, seq, self._hd)
            self._put(k, self.ss, None)
        self.last_seq = seq
        self._full = False
        self._nb += k
        self._np += 1
        p.seq = seq
        p.journal_id = self.journal_id
        return seq

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
        if self._put(punch.seal(b, punch.put_zz(b, 2, through_seq - self._hd[0])), self.ss, None) is None:
            self.ack_unsaved = True

    def correct(self, from_seq, through_seq, delta_ms):
        """Record that punches from_seq..through_seq get delta_ms added (quality becomes corrected)."""
        if self._dirty:
            self.recover()
        if from_seq > through_seq or through_seq > self.last_seq or from_seq < 1:
            raise ValueError("bad correction range")
        if not delta_ms:
            return
        t = (from_seq, through_seq, delta_ms)
        if t not in self._corr:
            self._corr = (self._corr + (t,))[-_MAX_CORR:]
        b = self._buf
        b[1] = _T_CORR << 5
        i = punch.put_zz(b, 2, from_seq - self._hd[0])
        i = punch.put_uv(b, i, through_seq - from_seq)
        if self._put(punch.seal(b, punch.put_zz(b, i, delta_ms)), self.ss, None) is None:
            raise JournalFull("memory full")

    # --- reading --------------------------------------------------------------------------------

    def pending(self, after_seq=None, limit=None):
        """Iterate punches with seq > after_seq (default: the acked point) in order, up to limit."""
        if self._dirty:
            self.recover()
        after = self.acked_seq if after_seq is None else after_seq
        w = bytearray(_WIN)  # own window: the caller may append, or read status, while iterating
        count = 0
        for s, base in self._segs(after + 1):
            for p, k in self._records(s, self._wp if s == self.head else None, w, base[0]):
                mv = memoryview(w)[p:p + k]
                if mv[1] >> 5 != _T_PUNCH or base[0] + punch.get_uv(mv, 3)[0] <= after:
                    continue
                pu = punch.decode(mv, base)
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

    def recent(self, span_ms, now_ms):
        """(after_seq, since_ms) for the punches of the last span_ms: pending(after_seq) reaches every
        punch stamped at or after since_ms, and maybe some older ones (a segment is found by the time
        of its first punch, walking back from the newest). since_ms counts back from now_ms, or from
        the newest segment's first punch when that is later (a clock that lost its time)."""
        if self._dirty:
            self.recover()
        since = max(now_ms, self._hd[1]) - span_ms
        s = self.head
        base = self._hd[0]
        while True:
            h = self._hdr(s)
            if h:
                base = h[5]
                if (h[6] | (h[7] << 32)) <= since:
                    break
            if s == self._t:
                break
            s = (s - 1) % self.n
        return base - 1, since

    def status(self):
        """Counters and fill level for the endpoint."""
        if self._dirty:
            self.recover()
        usable = self.ss - _HDR - max(16, self.ss // 32)
        avg = self._nb / self._np if self._np >= 16 else _NOMINAL
        oldest_seq = self.last_seq + 1
        oldest_ms = None
        for pu in self.pending(0, 1):
            oldest_seq, oldest_ms = pu.seq, pu.utc_ms
        if self.last_seq <= self.acked_seq:
            fill = 0
        else:
            for k, _ in self._segs(self.acked_seq + 1):
                break  # the segment of the oldest pending punch
            # Segments from it to the head (one whose header rotted counts as used: its space is not
            # free before the ring comes round to it).
            k = (self.head - k) % self.n + 1
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
        return dict(
            backend=getattr(self.store, "name", "raw"),
            journal_id=self.journal_id,
            capacity=int(self.n * usable / avg),
            used=max(0, self.last_seq - oldest_seq + 1),
            pending=self.last_seq - self.acked_seq,
            fill_pct=fill,
            last_seq=self.last_seq,
            acked_seq=self.acked_seq,
            oldest_seq=oldest_seq,
            oldest_ms=oldest_ms,
            corrupt_skipped=self.corrupt_skipped,
            dropped=self.dropped,
            full_policy=self.policy,
            warnings=warnings,
            segments=self.n,
            segment_bytes=self.ss,
        )

    def close(self):
        self.store.ioctl(_SYNC, 0)


def open_journal(kind, policy="refuse", seq_floor=0, floor_path=None, **params):
    """Build the journal for a board config: kind "raw" (bdev=partition) or "littlefs" (root=dir)."""
    if kind == "raw":
        store = params["bdev"]
    elif kind == "littlefs":
        from clockterm.ring_lfs import LfsRing

        store = LfsRing(params.get("root", "/journal"), params.get("capacity_bytes", 2 * 1024 * 1024),
                        params.get("segment_bytes", 4096))
    else:
        raise ValueError("unknown journal backend %r" % kind)
    return Journal(store, policy, seq_floor, floor_path)
