# Raw-partition journal store: the partition itself. The journal speaks the extended block protocol
# (readblocks/writeblocks with offsets, ioctl 6 to erase) that esp32.Partition and
# boards.norflash.NorFlash share, so it takes the partition as its store directly and the firmware
# does not import this module. Kept for host scripts written against the old adapter (bench/).


def RawRing(bdev):
    return bdev
