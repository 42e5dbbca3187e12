# Raw-partition segment store for the journal: one segment per flash sector, programmed in place.
#
# Speaks the extended block protocol that esp32.Partition and boards.norflash.NorFlash share:
# readblocks(block, buf, offset), writeblocks(block, buf, offset) (program only, no erase) and
# ioctl(6, block) to erase a sector. The journal never programs a byte twice between erases.

from micropython import const

_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)


class RawRing:
    """Slots = the sectors of a block device (a data partition on the ESP32)."""

    name = "raw"

    def __init__(self, bdev):
        self.bdev = bdev
        self.slots = bdev.ioctl(_IOCTL_BLOCK_COUNT, 0)
        self.slot_size = bdev.ioctl(_IOCTL_BLOCK_SIZE, 0)

    def read(self, slot, off, buf):
        self.bdev.readblocks(slot, buf, off)

    def program(self, slot, off, data):
        self.bdev.writeblocks(slot, data, off)

    def erase(self, slot):
        self.bdev.ioctl(_IOCTL_BLOCK_ERASE, slot)

    def close(self):
        self.bdev.ioctl(_IOCTL_SYNC, 0)
