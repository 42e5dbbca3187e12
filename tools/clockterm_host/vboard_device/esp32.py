# The virtual board's esp32 module: the flash partitions of the partition table in its flash folder.
#
# Each data partition is a file in the flash folder (<label>.bin, erased = 0xFF), opened once at start
# (the virtual board then mounts its filesystem at /, after which host paths are out of reach). NOR
# semantics as on the chip: an erase sets a 4 KB sector to 0xFF, a program clears bits only. Writes go
# to the file at once, so killing the virtual board is a power cut.
import os
import struct

TYPE_APP = 0
TYPE_DATA = 1
_SECTOR = 4096
_FLASH = os.getenv("VBOARD_FLASH") or "."
_ENTRY = "<2sBBII16sI"


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, entry, block_size=_SECTOR):
        self.type, self.subtype, self.addr, self.size, self.label = entry
        self.block_size = block_size
        self._f = None
        if self.type == TYPE_DATA:
            self._f = _FILES[self.label]

    @classmethod
    def find(cls, type=TYPE_APP, subtype=255, label=None, block_size=_SECTOR):
        return [cls(e, block_size) for e in _table()
                if e[0] == type and (subtype == 255 or e[1] == subtype) and (label is None or e[4] == label)]

    def info(self):
        return (self.type, self.subtype, self.addr, self.size, self.label, False)

    def readblocks(self, block, buf, offset=0):
        self._f.seek(block * self.block_size + offset)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:  # the plain block protocol erases what it writes
            for b in range(len(buf) // _SECTOR):
                self.ioctl(6, block + b)
            offset = 0
        pos = block * self.block_size + offset
        old = bytearray(len(buf))
        self._f.seek(pos)
        self._f.readinto(old)
        for i in range(len(buf)):
            old[i] &= buf[i]
        self._f.seek(pos)
        self._f.write(old)
        self._f.flush()

    def ioctl(self, op, arg):
        if op == 4:
            return self.size // self.block_size
        if op == 5:
            return self.block_size
        if op == 6:
            self._f.seek(arg * self.block_size)
            self._f.write(b"\xff" * self.block_size)
            self._f.flush()
            return 0
        if op in (1, 2, 3):
            return 0
        return None

    def __repr__(self):
        return (f"<Partition type={self.type}, subtype={self.subtype}, address={self.addr}, "
                f"size={self.size}, label={self.label}>")


def _table():
    return _TABLE


def _read_table():
    # The partition table as the bootloader reads it (the virtual board's partitions.bin), read at import:
    # the filesystem mounted at / hides the host's folders later.
    with open(_FLASH + "/partitions.bin", "rb") as f:
        data = f.read()
    out = []
    for pos in range(0, len(data) - 31, 32):
        magic, typ, sub, addr, size, label, _flags = struct.unpack(_ENTRY, data[pos:pos + 32])
        if magic != b"\xaa\x50":
            break
        out.append((typ, sub, addr, size, label.split(b"\0")[0].decode()))
    return out


_TABLE = _read_table()
# Each data partition's file, opened now: the filesystem mounted at / hides the host's folders later.
_FILES = {e[4]: open(_FLASH + "/" + e[4] + ".bin", "r+b") for e in _TABLE if e[0] == TYPE_DATA}
