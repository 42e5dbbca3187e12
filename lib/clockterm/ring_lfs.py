# LittleFS segment store for the journal: one file per segment in a directory of the filesystem.
#
# For boards whose only flash is the filesystem (stock MicroPython images). A slot is the file
# <root>/<slot>; erasing it removes the file, programming appends (and flushes, which LittleFS
# commits atomically), bytes past the end of a file read as 0xFF like erased flash. LittleFS copies
# the last block of a file on every flushed append, so this backend costs a block erase per punch;
# the raw backend is the one that saves flash.

import os

from micropython import const

_ENOENT = const(2)


class LfsRing:
    """Slots = capacity_bytes // segment_bytes files under root."""

    name = "littlefs"

    def __init__(self, root, capacity_bytes, segment_bytes=4096):
        self.root = root
        self.slot_size = segment_bytes
        self.slots = capacity_bytes // segment_bytes
        try:
            os.mkdir(root)
        except OSError:
            pass  # exists
        self._rs = -1  # slot of the cached read handle
        self._rf = None
        self._ws = -1  # slot of the write handle (the newest segment)
        self._wf = None

    def _path(self, slot):
        return "%s/%d" % (self.root, slot)

    def _close_r(self):
        if self._rf is not None:
            f, self._rf, self._rs = self._rf, None, -1
            try:
                f.close()
            except OSError:
                pass  # nothing to lose on a read handle

    def _close_w(self):
        if self._wf is not None:
            f, self._wf, self._ws = self._wf, None, -1
            try:
                f.close()
            except OSError:
                pass  # a failed flush was already reported by program()

    def read(self, slot, off, buf):
        if slot == self._ws:
            f = self._wf
        else:
            if slot != self._rs:
                self._close_r()
                try:
                    self._rf = open(self._path(slot), "rb")
                    self._rs = slot
                except OSError:
                    pass
            f = self._rf if slot == self._rs else None
        n = 0
        if f is not None:
            f.seek(off)
            n = f.readinto(buf) or 0
        for i in range(n, len(buf)):
            buf[i] = 0xFF

    def program(self, slot, off, data):
        if slot != self._ws:
            self._close_w()
            if slot == self._rs:
                self._close_r()
            self._wf = open(self._path(slot), "w+b" if off == 0 else "r+b")
            self._ws = slot
        f = self._wf
        try:
            size = f.seek(0, 2)
            if off < size:
                raise OSError(22)  # the journal only appends
            while size < off:  # behind a record that did not land whole
                f.write(b"\xff")
                size += 1
            f.write(data)
            f.flush()
        except OSError:
            self._close_w()
            raise

    def erase(self, slot):
        if slot == self._ws:
            self._close_w()
        if slot == self._rs:
            self._close_r()
        try:
            os.remove(self._path(slot))
        except OSError as e:
            if e.args[0] != _ENOENT:
                raise

    def close(self):
        self._close_r()
        self._close_w()
