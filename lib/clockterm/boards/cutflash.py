# An emulated NOR flash with wear counters and power-cut injection, for tests and benchmarks (the sim
# board's chip is the plain norflash.NorFlash: a terminal does not cut its own power).
#
# cut_after(n) lets n more program/erase operations complete; the next one is torn (a prefix of a
# program lands, or the first part of a sector is erased) and raises PowerCut. From then on the chip
# is dead: writes and erases are ignored silently (finalizers of objects that still hold the device
# must not fail), reads still work so a test can inspect the image.

from clockterm.boards.norflash import NorFlash


class PowerCut(Exception):
    """Raised by the operation during which the emulated power was cut."""


class CutFlash(NorFlash):
    """A NorFlash (same arguments) that counts its operations and can have its power cut."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.reset_counters()
        self._cut_left = -1  # operations allowed before the cut; -1: no cut armed
        self.torn = True
        self.dead = False

    def reset_counters(self):
        self.programs = 0  # program operations
        self.bytes_programmed = 0
        self.erases = 0  # sectors erased
        self.ops = 0  # program + erase operations, the unit of cut_after()

    def cut_after(self, n, torn=True):
        """Arm a power cut: n more program/erase operations complete, the next one is cut."""
        self._cut_left = n
        self.torn = torn

    def _op(self):
        # Returns True when this operation is the one that gets cut, None when the chip is dead.
        if self.dead:
            return None
        self.ops += 1
        if self._cut_left < 0:
            return False
        if self._cut_left == 0:
            self.dead = True
            self._cut_left = -1
            return True
        self._cut_left -= 1
        return False

    # NorFlash.program and erase check the range, then program or erase through these: counted here, and
    # the cut one lands torn (the first half) or not at all

    def _program(self, addr, mv, n):
        cut = self._op()
        if cut is None:
            return
        self.programs += 1
        if cut:
            n = n // 2 if self.torn else 0
        self.bytes_programmed += n
        super()._program(addr, mv, n)
        if cut:
            raise PowerCut("cut during program at 0x%x" % addr)

    def _erase(self, start, n):
        cut = self._op()
        if cut is None:
            return
        self.erases += 1
        if cut:
            n = n // 2 if self.torn else 0  # a half-erased sector: its first half is 0xFF
        super()._erase(start, n)
        if cut:
            raise PowerCut("cut during erase of sector %d" % (start // self.block_size))
