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
# RAM: no table per segment. The valid segments run in ring order from the oldest (self._oldest) to the
# head, base seqs rising; a segment's base is read from its header when needed (a binary search finds
# the one holding a seq). Recovery reads every header twice and scans only the segments from the one
# holding the oldest unacknowledged punch to the newest: bounded by the ring size, short when the
# uplink keeps up.

import os
import struct
from micropython import const

from clockterm import punch

# The segment header: _HFMT packed at the start of the segment, its CRC16 behind it. The tuple that
# _hdr() unpacks is indexed by the _H_* constants.
_HDR = const(48)  # header bytes reserved at the start of each segment
_HFMT = const("<2sBBIIIIHhIIIq")
_HLEN = const(44)  # packed size of _HFMT; CRC16 follows
_SEQ_LIMIT = const(0x7FFFFFFF)  # a seq floor read from its file must be under this (the header keeps u32 seqs)
_FLOOR_BYTES = const(12)  # read of the seq floor file (a few digits)
_MAGIC = const(b"CJ")
_VER = const(1)
#  (0: magic, 1: version, 2: flags, reserved: 0xFF)
_H_JID = const(3)  # journal id: random, new at each format
_H_GEN = const(4)  # generation: one more than the head's before it, so the newest segment has the highest
_H_SEQ = const(5)  # base seq: the segment's first punch has it
_H_MS_LO = const(6)  # base time, Unix ms: its low 32 bits,
_H_MS_HI = const(7)  # and the 16 bits above them
_H_OFF = const(8)  # base UTC offset, minutes
_H_ACKED = const(9)  # the journal's acked seq when the segment was opened
_H_CORR = const(10)  # the last three fields: the latest correction then (from seq, through seq, delta ms)
_H_DELTA = const(12)  # its delta: 0 when there was none

# A segment's base, the tuple punch.encode() and decode() take (punch.py defines it: a copy)
_BASE_SEQ = const(0)
_BASE_MS = const(1)
_BASE_OFF = const(2)
_BASE_JID = const(3)  # Journal._base, the head segment's, has a fourth field: the journal id

# Records (framing in punch.py). The journal's own: an ack record's body is the acked seq, a
# correction record's the first seq, the count after it and the delta in ms; seqs as zigzag deltas
# from the base of the head segment when written, the count a varint, the delta zigzag.
_T_PUNCH = const(1)  # (punch.py defines it: a copy)
_T_ACK = const(2)
_T_CORR = const(3)
_TAG_AT = const(1)  # a record's tag: its type in the top three bits (punch.py defines it: a copy)
_BODY_AT = const(2)  # an ack or correction record's body follows its length and tag bytes
_SEQ_AT = const(3)  # where a punch record has its seq (punch.py defines it: a copy)
_MAX_RECORD = const(254)  # (punch.py defines it: a copy)
# The copies are checked against punch.py by tests/test_consts.py: a const() does not cross modules.

_WIN = const(256)  # read window: holds any record (<= 254 bytes)
# A segment's end is kept for ack and correction records, so that they seldom need a new segment
# (which a full ring could refuse): _RESERVE bytes, or 1/32 of the segment when that is more.
_RESERVE = const(16)
_MAX_CORR = const(16)  # corrections kept in RAM (one per boot with pre-sync punches; see _remember)
_MAX_BAD = const(64)  # distinct corrupt records remembered, so re-reads do not count twice
_ENOSPC = const(28)
_NOMINAL = const(16)  # bytes per punch record for the capacity estimate before any is written
# block device ioctls (MicroPython's extended block protocol)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)


class JournalFull(Exception):
    """No room for a new punch: the ring is full of unacknowledged punches (policy "refuse"), or the
    filesystem under a LittleFS journal is full. Other failures: OSError from the flash, ValueError
    for a bad argument."""


class Journal:
    """The punch journal over a block device (see the top of this file)."""

    # The terminal's time zone (clockterm.tz.TZ; the app sets it): a corrected punch gets the UTC offset
    # of its corrected time. The one it was stamped with is the offset at the wrong time before the
    # first sync (an RTC that lost power says 2000-01-01: winter time for a punch made in summer).
    tz = None

    def __init__(self, store, policy="refuse", seq_floor=0, floor_path=None):
        if policy != "refuse" and policy != "overwrite":
            raise ValueError("unknown full policy %r" % policy)
        self.store = store
        self.policy = policy
        self.segments = store.ioctl(_IOCTL_BLOCK_COUNT, 0)
        self.segment_bytes = store.ioctl(_IOCTL_BLOCK_SIZE, 0)
        if self.segments < 3 or self.segment_bytes < 256:
            raise ValueError("store too small")
        self.last_seq = seq_floor  # a store without a journal is formatted to start above it
        self.floor_path = floor_path  # optional file that keeps the seq floor across a reformat
        # Record being written, segment headers, corrupt-record probes. Readers have their own window.
        self._buf = bytearray(_WIN)
        self._bad = ()  # (base seq, offset) of corrupt records already counted
        self.corrupt_skipped = 0
        self.dropped = 0  # unacknowledged punches lost to policy "overwrite"
        self.ack_unsaved = False  # an ack that found no room waits for the next header
        self._full = False
        self._count = 0  # punches appended since the journal was opened, and their bytes: the
        self._bytes = 0  # capacity estimate
        self.recover()

    # --- headers --------------------------------------------------------------------------------

    def _hdr(self, index):
        # The parsed header of the slot at index (_H_* fields), or None when it holds no segment of this
        # journal (of any journal while recovery looks for the newest: self._base is None then).
        hb = memoryview(self._buf)[:_HDR]
        self.store.readblocks(index, hb, 0)
        if hb[0:2] != _MAGIC or hb[2] != _VER or (hb[_HLEN] | (hb[_HLEN + 1] << 8)) != punch.crc16(hb[:_HLEN]):
            return None
        h = struct.unpack_from(_HFMT, hb)
        if self._base is None or h[_H_JID] == self._base[_BASE_JID] and 0 <= self._head_gen - h[_H_GEN] < self.segments:
            return h
        return None

    def _segs(self, seq):
        # (slot, base) of each valid segment from the one holding `seq` (the oldest one when seq is
        # older than the ring) round the ring to the head, in order; base as punch.encode/decode take
        # it (_BASE_* fields). The first is the newest segment whose base seq is <= seq: a binary
        # search over the ring positions from the oldest segment (position 0) to the head, stepping
        # over invalid slots.
        n = self.segments
        oldest = self._oldest
        lo = 0
        hi = (self.head - oldest) % n
        if seq >= self._base[_BASE_SEQ]:
            lo = hi  # in the head segment
        while lo < hi:
            mid = pos = (lo + hi + 1) // 2
            h = None
            while pos <= hi:
                h = self._hdr((oldest + pos) % n)
                if h:
                    break
                pos += 1
            if h and h[_H_SEQ] <= seq:
                lo = pos
            else:
                hi = mid - 1
        slot = (oldest + lo) % n
        while True:
            h = self._hdr(slot)
            if h:
                yield slot, (h[_H_SEQ], h[_H_MS_LO] | (h[_H_MS_HI] << 32), h[_H_OFF])
            if slot == self.head:
                return
            slot = (slot + 1) % n

    # --- recovery -------------------------------------------------------------------------------

    def recover(self):
        """Rebuild the in-RAM state from the store (at open, and after a failed write)."""
        self._dirty = True
        self._corr = ()
        self._base = None
        head = newest = None
        for slot in range(self.segments):
            h = self._hdr(slot)
            if h and (newest is None or h[_H_GEN] > newest[_H_GEN]):
                head, newest = slot, h
        if newest is None:
            self.format()
            return
        self.head = head
        self._head_gen = newest[_H_GEN]
        self.journal_id = "%08x" % newest[_H_JID]
        self._base = (newest[_H_SEQ], newest[_H_MS_LO] | (newest[_H_MS_HI] << 32), newest[_H_OFF], newest[_H_JID])
        # Every valid header in ring order, from the slot after the head round to it: the oldest
        # segment, the acked point and the corrections they carry.
        n = self.segments
        self._oldest = -1
        self.acked_seq = 0
        for i in range(head + 1, head + n + 1):
            h = self._hdr(i % n)
            if h:
                if self._oldest < 0:
                    self._oldest = i % n
                if h[_H_ACKED] > self.acked_seq:
                    self.acked_seq = h[_H_ACKED]
                if h[_H_DELTA]:
                    self._remember(h[_H_CORR:])
        self._replay()
        self._dirty = False  # self._write_pos: where the head's scan (the last one) stopped

    def _replay(self):
        # Replay the records from the segment holding the oldest unacknowledged punch to the head: the
        # last seq, and the acks and corrections newer than the headers that carry them.
        last = self._base[_BASE_SEQ] - 1
        window = bytearray(_WIN)
        for slot, base in self._segs(self.acked_seq + 1):
            base_seq = base[_BASE_SEQ]
            for at, length in self._records(slot, None, window, base):
                rec = memoryview(window)[at:at + length]
                rtype = rec[_TAG_AT] >> 5
                if rtype == _T_PUNCH:
                    seq = base_seq + punch.get_uv(rec, _SEQ_AT)[0]
                    if seq > last:
                        last = seq
                elif rtype == _T_ACK:
                    seq = base_seq + punch.get_zz(rec, _BODY_AT)[0]
                    if seq > self.acked_seq:
                        self.acked_seq = seq
                elif rtype == _T_CORR:
                    first, i = punch.get_zz(rec, _BODY_AT)
                    count, i = punch.get_uv(rec, i)
                    delta = punch.get_zz(rec, i)[0]
                    self._remember((base_seq + first, base_seq + first + count, delta))
        self.last_seq = last
        if self.acked_seq > last:
            self.acked_seq = last

    def _remember(self, value):
        # Remember the correction value, (from seq, through seq, delta ms), for pending() to apply: each
        # once, at most _MAX_CORR. Past that, the one that covers the lowest seqs makes room: the first
        # the central acks, and the recovery meets them in no seq order (the headers' first, then the
        # records') while it does not know the acked point yet. Only after _MAX_CORR boots offline, each
        # with punches before its first sync, would punches still to send lose theirs. (Keeping the
        # newest remembered lost those of punches to send after 8 such boots.)
        if value in self._corr:
            return
        c = self._corr + (value,)
        if len(c) > _MAX_CORR:
            drop = 0
            for i in range(len(c)):
                if c[i][1] < c[drop][1]:
                    drop = i
            c = c[:drop] + c[drop + 1:]
        self._corr = c

    def _records(self, index, end, buf, base):
        # Yield (at, length) of each good record in the slot at index before `end` (None: up to its last
        # byte that is not 0xFF), read through the window buf (the record is buf[at:at + length] until
        # the next step); count and skip corrupt stretches (base: the segment's, to know them again).
        # During recovery (dirty), the offset where the scan stopped becomes self._write_pos: where
        # the next record may go.
        mv = memoryview(buf)
        size = self.segment_bytes
        if end is None:
            end = size
            while end > _HDR:
                k = min(_WIN, end - _HDR)
                self.store.readblocks(index, mv[:k], end - k)
                while k and buf[k - 1] == 0xFF:
                    k -= 1
                    end -= 1
                if k:
                    break
        win_at = -1  # segment offset of the window's first byte (-1: nothing read)
        win_len = 0
        pos = _HDR
        while pos < end:
            if win_at < 0 or pos + _WIN > win_at + win_len and win_at + win_len < size:
                win_len = min(_WIN, size - pos)
                self.store.readblocks(index, mv[:win_len], pos)
                win_at = pos
            at = pos - win_at
            length = buf[at]
            if 4 <= length <= _MAX_RECORD and at + length <= win_len and punch.check(mv[at:], length):
                yield at, length
                pos += length
                continue
            # A corrupt record at pos: count it once.
            if (base[_BASE_SEQ], pos) not in self._bad:
                if len(self._bad) < _MAX_BAD:
                    self._bad += ((base[_BASE_SEQ], pos),)
                self.corrupt_skipped += 1
            # Go on behind it if a record starts there, or at its end (a torn tail: its length landed,
            # its rest is still erased); else at the first offset behind pos where a record starts.
            nxt = pos + length if 4 <= length <= _MAX_RECORD else pos + 1
            pos += 1
            probe = self._buf  # scratch: the window keeps its place
            while nxt < end:
                pm = memoryview(probe)[:min(_WIN, size - nxt)]
                self.store.readblocks(index, pm, nxt)
                if probe[0] <= len(pm) and punch.check(pm, probe[0]):
                    break
                nxt = pos
                pos += 1
            pos = nxt
            win_at = -1
        if self._dirty:
            self._write_pos = pos

    # --- writing --------------------------------------------------------------------------------

    def format(self, seq_floor=0):
        """Erase the store and start a new journal with a new random id; seqs continue upwards."""
        floor = max(seq_floor, self.last_seq)
        if self.floor_path:
            try:
                # A few digits, whatever the file's size; a floor the header cannot hold (a damaged
                # file) is no floor: the new journal id keeps the seqs apart from any before it
                with open(self.floor_path, "rb") as f:
                    n = int(f.read(_FLOOR_BYTES))
                if 0 <= n < _SEQ_LIMIT:
                    floor = max(floor, n)
            except (OSError, ValueError):
                pass
        self._dirty = True
        jid = int.from_bytes(os.urandom(4), "little") or 1
        self.journal_id = "%08x" % jid
        for slot in range(1, self.segments):
            self.store.ioctl(_IOCTL_BLOCK_ERASE, slot)
        self._corr = ()
        self.acked_seq = floor
        self.last_seq = floor
        # The first segment, in slot 0, opened as a roll from an empty ring whose head was the last slot.
        self.head = self.segments - 1
        self._oldest = 0
        self._head_gen = 0
        self._base = (0, 0, 0, jid)
        self._roll(None)

    def _roll(self, p):
        # Open the next segment, based on punch p (None: the head's base time and offset carry over).
        # Returns False when the ring is full and the oldest segment holds unacknowledged punches that
        # must stay (policy "refuse").
        n = self.segments
        nxt = (self.head + 1) % n
        h = self._hdr(nxt)
        if h:
            # The ring is full: nxt is the oldest segment. The highest seq it holds is one less than
            # the base of the valid segment after it, which becomes the oldest.
            after = nxt
            while True:
                after = (after + 1) % n
                h_after = self._hdr(after)
                if h_after:
                    break
            highest = h_after[_H_SEQ] - 1
            if highest > self.acked_seq:
                if self.policy == "refuse":
                    return False
                self.dropped += highest - max(self.acked_seq, h[_H_SEQ] - 1)
            self._oldest = after
        self._dirty = True
        self.store.ioctl(_IOCTL_BLOCK_ERASE, nxt)
        seq = self.last_seq + 1
        if p is None:
            ms, offset = self._base[_BASE_MS], self._base[_BASE_OFF]
        else:
            ms, offset = p.utc_ms, p.utc_offset_min
        gen = self._head_gen + 1
        if self._corr:  # the latest correction, so that it outlives the segment of its record
            first, through, delta = self._corr[-1]
        else:
            first = through = delta = 0
        hb = memoryview(self._buf)[:_HDR]
        for i in range(_HDR):
            hb[i] = 0xFF
        jid = self._base[_BASE_JID]
        struct.pack_into(_HFMT, hb, 0, _MAGIC, _VER, 0xFF, jid, gen, seq, ms & 0xFFFFFFFF,
                         (ms >> 32) & 0xFFFF, offset, self.acked_seq, first, through, delta)
        crc = punch.crc16(hb[:_HLEN])
        hb[_HLEN] = crc & 0xFF
        hb[_HLEN + 1] = crc >> 8
        self.store.writeblocks(nxt, hb, 0)
        self.head = nxt
        self._head_gen = gen
        self._base = (seq, ms, offset, jid)
        self._write_pos = _HDR
        self.ack_unsaved = False
        self._dirty = False
        if self.floor_path:
            try:
                with open(self.floor_path, "w") as f:
                    f.write(str(self.last_seq))
            except OSError:
                pass  # the floor is a second line of defence; the journal header is the first
        return True

    def _put(self, length, end, p):
        # Program the record of `length` bytes in self._buf at the write position if it ends within
        # `end` bytes of the segment: True. Else open the next segment instead (based on punch p, see
        # _roll) and return False, without the record (the new header carries the acked point and the
        # latest correction; a punch must be encoded again against the new base), or None when the
        # ring is full. A full filesystem (LittleFS journal) raises JournalFull, other flash failures
        # OSError.
        try:
            if self._write_pos + length > end:
                return False if self._roll(p) else None
            # Dirty until it is known how much landed.
            self._dirty = True
            self.store.writeblocks(self.head, memoryview(self._buf)[:length], self._write_pos)
            self._write_pos += length
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
            length = punch.encode(self._buf, p, seq, self._base)
        except ValueError as e:
            raise ValueError("bad punch: %s" % e)
        # A punch ends before the segment's reserve for ack and correction records (_RESERVE).
        put = self._put(length, self.segment_bytes - max(_RESERVE, self.segment_bytes // 32), p)
        if put is None:
            self._full = True
            raise JournalFull("memory full")
        if not put:  # in a new segment: encoded against its base, it fits
            length = punch.encode(self._buf, p, seq, self._base)
            self._put(length, self.segment_bytes, None)
        self.last_seq = seq
        self._full = False
        self._bytes += length
        self._count += 1
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
        self.acked_seq = through_seq  # a new header carries it, should the record need a new segment
        b = self._buf
        b[_TAG_AT] = _T_ACK << 5
        length = punch.seal(b, punch.put_zz(b, _BODY_AT, through_seq - self._base[_BASE_SEQ]))
        if self._put(length, self.segment_bytes, None) is None:
            self.ack_unsaved = True

    def correct(self, from_seq, through_seq, delta_ms):
        """Record that punches from_seq..through_seq get delta_ms added (quality becomes corrected)."""
        if self._dirty:
            self.recover()
        if from_seq > through_seq or through_seq > self.last_seq or from_seq < 1:
            raise ValueError("bad correction range")
        if not delta_ms:
            return
        self._remember((from_seq, through_seq, delta_ms))  # a new header carries the latest
        b = self._buf
        b[_TAG_AT] = _T_CORR << 5
        i = punch.put_zz(b, _BODY_AT, from_seq - self._base[_BASE_SEQ])
        i = punch.put_uv(b, i, through_seq - from_seq)
        if self._put(punch.seal(b, punch.put_zz(b, i, delta_ms)), self.segment_bytes, None) is None:
            raise JournalFull("memory full")

    # --- reading --------------------------------------------------------------------------------

    def pending(self, after_seq=None, limit=None):
        """Iterate punches with seq > after_seq (default: the acked point) in order, up to limit."""
        if self._dirty:
            self.recover()
        after = self.acked_seq if after_seq is None else after_seq
        window = bytearray(_WIN)  # its own: the caller may append, or read status, while iterating
        count = 0
        for slot, base in self._segs(after + 1):
            end = self._write_pos if slot == self.head else None
            for at, length in self._records(slot, end, window, base):
                rec = memoryview(window)[at:at + length]
                if rec[_TAG_AT] >> 5 != _T_PUNCH or base[_BASE_SEQ] + punch.get_uv(rec, _SEQ_AT)[0] <= after:
                    continue
                p = punch.decode(rec, base)
                for first, through, delta in self._corr:
                    if first <= p.seq <= through:
                        p.utc_ms += delta
                        p.quality = punch.Q_CORRECTED
                        if self.tz is not None:
                            p.utc_offset_min = self.tz.offset_s(p.utc_ms // 1000) // 60
                        break
                p.journal_id = self.journal_id
                yield p
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
        since = max(now_ms, self._base[_BASE_MS]) - span_ms
        slot = self.head
        base_seq = self._base[_BASE_SEQ]
        while True:
            h = self._hdr(slot)
            if h:
                base_seq = h[_H_SEQ]
                if (h[_H_MS_LO] | (h[_H_MS_HI] << 32)) <= since:
                    break
            if slot == self._oldest:
                break
            slot = (slot - 1) % self.segments
        return base_seq - 1, since

    def status(self):
        """Counters and fill level for the endpoint."""
        if self._dirty:
            self.recover()
        usable = self.segment_bytes - max(_RESERVE, self.segment_bytes // 32) - _HDR  # for punches
        if self._count >= 16:
            avg = self._bytes / self._count
        else:
            avg = _NOMINAL
        oldest_seq = self.last_seq + 1
        oldest_ms = None
        for p in self.pending(0, 1):
            oldest_seq, oldest_ms = p.seq, p.utc_ms
        if self.last_seq <= self.acked_seq:
            fill = 0
        else:
            # Segments from the one of the oldest pending punch to the head (one whose header rotted
            # counts as used: its space is not free before the ring comes round to it).
            oldest_slot, _ = next(self._segs(self.acked_seq + 1))
            used = (self.head - oldest_slot) % self.segments + 1
            fill = ((used - 1) * usable + self._write_pos - _HDR) * 100 // (self.segments * usable)
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
            capacity=int(self.segments * usable / avg),
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
            segments=self.segments,
            segment_bytes=self.segment_bytes,
        )

    def close(self):
        """Sync the store (a LittleFS journal closes its files)."""
        self.store.ioctl(_IOCTL_SYNC, 0)


def open_journal(kind, policy="refuse", seq_floor=0, floor_path=None, **params):
    """Build the journal for a board config: kind "raw" (bdev=partition) or "littlefs" (root=dir)."""
    if kind == "raw":
        store = params["bdev"]
    elif kind == "littlefs":
        from clockterm.ring_lfs import LfsRing

        store = LfsRing(params.get("root", "/journal"), params.get("capacity_bytes", 2 * 1024 * 1024),
                        segment_bytes=params.get("segment_bytes", 4096))
    else:
        raise ValueError("unknown journal backend %r" % kind)
    return Journal(store, policy, seq_floor=seq_floor, floor_path=floor_path)
