# LittleFS segment store for the journal: a block device whose blocks are files in a directory.
#
# For boards whose only flash is the filesystem (stock MicroPython images). Block <n> is the file
# <root>/<n>, with the extended block protocol the journal speaks to a raw partition: erasing a block
# removes its file, programming appends (and flushes, which LittleFS commits atomically), bytes past
# the end of a file read as 0xFF like erased flash. LittleFS copies the last block of a file on every
# flushed append, so this backend costs a block erase per punch; the raw backend is the one that
# saves flash.
#
# One file stays open: the newest segment's, which the tap path appends to and the uplink reads
# (reading an older segment, at recovery or with a long backlog, moves the handle there).

import os

from micropython import const

_ENOENT = const(2)
_EINVAL = const(22)
_SYNC = const(3)
_COUNT = const(4)
_SIZE = const(5)
_ERASE = const(6)


class LfsRing:
    """capacity_bytes // segment_bytes blocks of segment_bytes, as files under root."""

    name = "littlefs"  # the journal's status calls its backend so (a raw partition: "raw")

    def __init__(self, root, capacity_bytes, segment_bytes=4096):
        self.root = root
        self.block_size = segment_bytes
        self.block_count = capacity_bytes // segment_bytes
        try:
            os.mkdir(root)
        except OSError:
            pass  # exists
        self._b = -1  # block of the open file (or known to have none)
        self._f = None

    def _close(self):
        f = self._f
        self._f = None
        self._b = -1
        if f is not None:
            try:
                f.close()
            except OSError:
                pass  # every write was flushed (and a failed one reported) already

    def readblocks(self, block, buf, offset=0):
        if block != self._b:
            self._close()
            try:
                self._f = open("%s/%d" % (self.root, block), "r+b")
            except OSError:
                pass  # no file: an erased block
            self._b = block
        n = 0
        if self._f is not None:
            self._f.seek(offset)
            n = self._f.readinto(buf) or 0
        for i in range(n, len(buf)):
            buf[i] = 0xFF

    def writeblocks(self, block, buf, offset):
        if block != self._b or self._f is None:
            self._close()
            self._f = open("%s/%d" % (self.root, block), "w+b" if offset == 0 else "r+b")
            self._b = block
        f = self._f
        try:
            size = f.seek(0, 2)
            if offset < size:
                raise OSError(_EINVAL)  # the journal only appends
            while size < offset:  # behind a record that did not land whole
                f.write(b"\xff")
                size += 1
            f.write(buf)
            f.flush()
        except OSError:
            self._close()
            raise

    def ioctl(self, op, arg):
        if op == _COUNT:
            return self.block_count
        if op == _SIZE:
            return self.block_size
        if op == _ERASE:
            if arg == self._b:
                self._close()
            try:
                os.remove("%s/%d" % (self.root, arg))
            except OSError as e:
                if e.errno != _ENOENT:
                    raise
        elif op == _SYNC:
            self._close()
        return 0
