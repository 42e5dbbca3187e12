# Emulated NOR flash: the sim board's flash chip (wear counters and power-cut injection for tests and
# benchmarks: cutflash.py).
#
# NOR semantics as on the ESP32's SPI flash: erase sets a whole sector to 0xFF, a program can only
# clear bits (the stored byte becomes old & new). The object speaks MicroPython's extended block
# protocol (readblocks/writeblocks with offsets, ioctl with erase), so vfs.VfsLfs2 mounts it, and a
# raw address API (read/program/erase) for the journal's raw ring.
#
# Backing store: a bytearray (tests, in-process sweeps) or a file in the state folder (the sim
# terminal). With a file, every program and erase is written through at once, so killing the process
# is a power cut at operation granularity; the image is never held in RAM (a 2 MiB image would not fit
# in the 100 KB heap).

from micropython import const

_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)
_CHUNK = const(256)  # bytes handled at a time when the image is a file


class NorFlash:
    """An emulated NOR flash chip of block_count sectors of block_size bytes."""

    def __init__(self, block_size=4096, block_count=64, path=None, image=None):
        self.block_size = block_size
        self.block_count = block_count
        self.size = block_size * block_count
        self._f = None
        self._img = None
        if path is not None:
            self._f = _open_image(path, self.size)
        elif image is not None:
            if len(image) != self.size:
                raise ValueError("image size")
            self._img = image
        else:
            self._img = img = bytearray(self.size)
            ff = b"\xff" * _CHUNK
            for a in range(0, self.size, _CHUNK):
                img[a:a + _CHUNK] = ff
        self._tmp = bytearray(_CHUNK)

    def image(self):
        """A copy of the whole image (RAM-backed chips only): what a restart would find."""
        return bytearray(self._img)

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    # --- raw address API ----------------------------------------------------------------------

    def read(self, addr, buf):
        n = len(buf)
        if addr < 0 or addr + n > self.size:
            raise ValueError("read out of range")
        if self._img is not None:
            try:
                buf[:] = memoryview(self._img)[addr:addr + n]
            except MemoryError:
                # Heap locked: a finalizer (a file of a dropped filesystem closing) reads.
                img = self._img
                for i in range(n):
                    buf[i] = img[addr + i]
        else:
            self._f.seek(addr)
            self._f.readinto(buf)

    def program(self, addr, data):
        """Program data at addr: each byte becomes old & new (NOR can only clear bits)."""
        if addr < 0 or addr + len(data) > self.size:
            raise ValueError("program out of range")
        self._program(addr, memoryview(data), len(data))

    def erase(self, block):
        """Erase one sector to 0xFF."""
        if block < 0 or block >= self.block_count:
            raise ValueError("erase out of range")
        self._erase(block * self.block_size, self.block_size)

    def _program(self, addr, mv, n):
        # The first n bytes of mv programmed at addr
        if self._img is not None:
            img = self._img
            try:
                # AND of the old and new bytes as two big integers: done in C, fast on the host.
                a = int.from_bytes(img[addr:addr + n], "big") & int.from_bytes(mv[:n], "big")
                img[addr:addr + n] = a.to_bytes(n, "big")
            except MemoryError:  # heap locked (a finalizer): byte by byte
                for i in range(n):
                    img[addr + i] &= mv[i]
        else:
            tmp = self._tmp
            done = 0
            while done < n:
                k = min(_CHUNK, n - done)
                t = memoryview(tmp)[:k]
                self._f.seek(addr + done)
                self._f.readinto(t)
                a = int.from_bytes(t, "big") & int.from_bytes(mv[done:done + k], "big")
                self._f.seek(addr + done)
                self._f.write(a.to_bytes(k, "big"))
                done += k
            self._f.flush()

    def _erase(self, start, n):
        # n bytes from start set to 0xFF
        if self._img is not None:
            mv = memoryview(self._img)
            for i in range(start, start + n):
                mv[i] = 0xFF
        else:
            tmp = self._tmp
            for i in range(_CHUNK):
                tmp[i] = 0xFF
            done = 0
            self._f.seek(start)
            while done < n:
                k = min(_CHUNK, n - done)
                self._f.write(memoryview(tmp)[:k])
                done += k
            self._f.flush()

    # --- MicroPython block protocol (extended: offsets, explicit erase) -----------------------

    def readblocks(self, block, buf, offset=0):
        self.read(block * self.block_size + offset, buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # Simple protocol: whole blocks, erase first.
            for i in range(len(buf) // self.block_size):
                self.erase(block + i)
            offset = 0
        self.program(block * self.block_size + offset, buf)

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_BLOCK_ERASE:
            self.erase(arg)
            return 0
        if op == _IOCTL_SYNC and self._f is not None:
            self._f.flush()
        return 0


def _open_image(path, size):
    # Open (or create, erased) a flash image file of exactly `size` bytes.
    try:
        f = open(path, "r+b")
    except OSError:
        f = open(path, "wb")
        ff = b"\xff" * _CHUNK
        for _ in range(size // _CHUNK):
            f.write(ff)
        f.close()
        f = open(path, "r+b")
    f.seek(0, 2)
    have = f.tell()
    if have != size:
        f.close()
        raise ValueError("flash image %s is %d bytes, expected %d" % (path, have, size))
    return f


def mount_lfs(bdev, path):
    """Mount the LittleFS on bdev at path (replacing a mount there), formatting it when it has none.

    Returns True when it had to format (first power-up of a blank chip, or a filesystem beyond repair).
    """
    import vfs

    try:
        vfs.umount(path)
    except OSError:
        pass
    formatted = False
    try:
        fs = vfs.VfsLfs2(bdev)
    except OSError:
        vfs.VfsLfs2.mkfs(bdev)
        fs = vfs.VfsLfs2(bdev)
        formatted = True
    vfs.mount(fs, path)
    return formatted
