# A stand-in for the esp32 module's Partition, backed by the emulated NOR flash.
from clockterm.boards.norflash import NorFlash


class Partition:
    TYPE_DATA = 1
    table = {"journal": NorFlash(4096, 8)}

    @classmethod
    def find(cls, type=None, label=None):
        p = cls.table.get(label)
        return [p] if p is not None else []
