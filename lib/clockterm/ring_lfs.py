# LittleFS segment store for the journal: a block device whose blocks are files in a directory.
#
# For boards whose only flash is the filesystem (stock MicroPython images). Block <n> is the file
# <root>/<n>, with the extended block protocol the journal speaks to a raw partition: erasing a block
# removes its file, programming appends (and flushes, which LittleFS commits atomically), bytes past
# the end of a file read as 0xFF like erased flash. LittleFS copies the last block of a file on every
# flushed append, so this backend costs a block erase per punch; the raw backend is the one that
# saves flash.

import os

from micropython import const

_ENOENT = const(2)
_EINVAL = const(22)
# block device ioctls (MicroPython's extended block protocol)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)


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
        # Two cached handles: a read-only one for older segments (recovery, the uplink), and the
        # newest segment's, which the tap path appends to, so that neither reopens after the other.
        self._read_block = -1  # block of the read handle
        self._read_file = None
        self._write_block = -1  # block of the write handle
        self._write_file = None

    def _close(self, write):
        # Close the read or the write handle. A read handle has nothing to lose; a failed flush of
        # the write handle was reported by writeblocks() already.
        if write:
            f, self._write_file, self._write_block = self._write_file, None, -1
        else:
            f, self._read_file, self._read_block = self._read_file, None, -1
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def readblocks(self, block, buf, offset=0):
        if block == self._write_block:
            f = self._write_file
        else:
            if block != self._read_block:
                self._close(False)
                try:
                    self._read_file = open("%s/%d" % (self.root, block), "rb")
                    self._read_block = block
                except OSError:
                    pass  # no file: an erased block
            f = self._read_file if block == self._read_block else None
        n = 0
        if f is not None:
            f.seek(offset)
            n = f.readinto(buf) or 0
        for i in range(n, len(buf)):
            buf[i] = 0xFF

    def writeblocks(self, block, buf, offset):
        if block != self._write_block:
            self._close(True)
            if block == self._read_block:
                self._close(False)
            self._write_file = open("%s/%d" % (self.root, block), "w+b" if offset == 0 else "r+b")
            self._write_block = block
        f = self._write_file
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
            self._close(True)
            raise

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_BLOCK_ERASE:
            if arg == self._write_block:
                self._close(True)
            if arg == self._read_block:
                self._close(False)
            try:
                os.remove("%s/%d" % (self.root, arg))
            except OSError as e:
                if e.errno != _ENOENT:
                    raise
        elif op == _IOCTL_SYNC:
            self._close(False)
            self._close(True)
        return 0
