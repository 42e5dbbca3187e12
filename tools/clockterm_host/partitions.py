"""The ESP32 partition table of a terminal: generated from its board config, written in the binary format the
bootloader reads (at 0x8000), and parsed back.

The layout, in flash order:

    nvs       data nvs        0x9000   24K   Wi-Fi calibration and MicroPython's NVS
    phy_init  data phy        0xf000    4K
    factory   app  factory   0x10000         the MicroPython image (flash.app_kb, default 1856K)
    romfs     data 0x8f                      the code, mapped and run in place (flash.romfs_kb, default 128K)
    journal   data undefined                 the raw punch journal (flash.journal.size_kb)
    vfs       data fat                       LittleFS, mounted at / by MicroPython (flash.fs_kb)

The firmware finds each by its label at run time: MicroPython mounts "romfs" at /rom (any data subtype,
found by name; only in an image built with ROMFS, see firmware/README.md) and "vfs" at /, and the board
layer opens the journal partition the board config names. An image without ROMFS gets no romfs
partition (its code goes to /lib on the filesystem).

The binary format: 32-byte entries (magic AA 50, type, subtype, offset, size, 16-byte label, flags), then
an MD5 entry (EB EB, 14 bytes of FF, the MD5 of the entries before it), then 0xFF to the end of the
0xC00-byte table (ESP-IDF's gen_esp32part.py format).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

TABLE_OFFSET = 0x8000
TABLE_SIZE = 0xC00  # what the bootloader reads; the 4K sector it lives in is erased with it
FIRST_OFFSET = 0x9000
APP_ALIGN = 0x10000  # app partitions start on a 64K boundary (the MMU page)
DATA_ALIGN = 0x1000  # data partitions on a 4K flash sector

_ENTRY = struct.Struct("<2sBBII16sI")
_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
_LABEL_MAX = 15  # 16 bytes with the terminating NUL

TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {
    "app": {"factory": 0x00},
    "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "undefined": 0x06, "romfs": 0x8F, "fat": 0x81},
}

_IDF_NAMES = ("factory", "ota", "phy", "nvs", "undefined", "fat")

NVS_SIZE = 0x6000
PHY_SIZE = 0x1000
DEFAULT_APP_KB = 1856  # MicroPython's own 4 MB ROMFS layout: a 1.6-1.7 MB image with room to grow
DEFAULT_ROMFS_KB = 128  # the bundle's ROMFS image is ~80 KB (build/device/<board>/romfs.img)


class PartitionError(ValueError):
    """A layout that does not fit the flash, or a table that does not parse."""


@dataclass(frozen=True)
class Partition:
    name: str
    type: str  # "app" or "data"
    subtype: str
    offset: int
    size: int
    flags: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    def csv(self) -> str:
        # ESP-IDF's CSV knows the standard subtype names; a custom one (romfs) is written as its number.
        sub = self.subtype if self.subtype in _IDF_NAMES else f"{SUBTYPES[self.type][self.subtype]:#x}"
        return f"{self.name},{self.type},{sub},{self.offset:#x},{self.size:#x},"


def _kb(n: int) -> int:
    return n * 1024


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def layout(board_cfg: dict, romfs: bool = True) -> list[Partition]:
    """The partitions of a board, from its config's flash section; PartitionError when they do not fit."""
    fl = board_cfg["flash"]
    size_mb = fl.get("size_mb")
    if not size_mb:
        raise PartitionError(f"board {board_cfg.get('board')!r}: flash.size_mb missing (a host board has no "
                             "partition table)")
    flash_bytes = size_mb * 1024 * 1024
    jcfg = fl["journal"]
    parts = [
        Partition("nvs", "data", "nvs", FIRST_OFFSET, NVS_SIZE),
        Partition("phy_init", "data", "phy", FIRST_OFFSET + NVS_SIZE, PHY_SIZE),
    ]
    app = Partition("factory", "app", "factory", APP_ALIGN, _kb(fl.get("app_kb", DEFAULT_APP_KB)))
    parts.append(app)
    at = app.end
    if romfs:
        parts.append(Partition("romfs", "data", "romfs", at, _kb(fl.get("romfs_kb", DEFAULT_ROMFS_KB))))
        at = parts[-1].end
    if jcfg["backend"] == "raw":
        parts.append(Partition(jcfg["partition"], "data", "undefined", at, _kb(jcfg["size_kb"])))
        at = parts[-1].end
    parts.append(Partition("vfs", "data", "fat", at, _kb(fl.get("fs_kb", 1024))))
    check(parts, flash_bytes)
    return parts


def check(parts: list[Partition], flash_bytes: int) -> None:
    """Refuse overlaps, misalignment, duplicate or over-long labels, and a layout past the end of flash."""
    names = set()
    at = FIRST_OFFSET
    for p in parts:
        if p.name in names:
            raise PartitionError(f"partition {p.name!r} appears twice")
        names.add(p.name)
        if not 0 < len(p.name.encode()) <= _LABEL_MAX:
            raise PartitionError(f"partition label {p.name!r}: 1..{_LABEL_MAX} bytes")
        if p.type not in TYPES or p.subtype not in SUBTYPES[p.type]:
            raise PartitionError(f"partition {p.name!r}: unknown type {p.type}/{p.subtype}")
        align = APP_ALIGN if p.type == "app" else DATA_ALIGN
        if p.offset % align or p.size % DATA_ALIGN or p.size <= 0:
            raise PartitionError(f"partition {p.name!r} at {p.offset:#x} size {p.size:#x}: offset must be a "
                                 f"multiple of {align:#x} and size of {DATA_ALIGN:#x}")
        if p.offset < at:
            raise PartitionError(f"partition {p.name!r} at {p.offset:#x} overlaps the one before (ends {at:#x})")
        at = p.end
    if at > flash_bytes:
        need = (at + 1023) // 1024
        raise PartitionError(f"the partitions end at {at:#x} ({need} KB), past the {flash_bytes // 1048576} MB "
                             f"flash by {(at - flash_bytes) // 1024} KB: make flash.fs_kb, journal.size_kb, "
                             "romfs_kb or app_kb smaller in the board config")


def to_bytes(parts: list[Partition]) -> bytes:
    """The table as the bootloader reads it: entries, the MD5 entry, 0xFF up to TABLE_SIZE."""
    body = b"".join(
        _ENTRY.pack(_MAGIC, TYPES[p.type], SUBTYPES[p.type][p.subtype], p.offset, p.size,
                    p.name.encode().ljust(16, b"\0"), p.flags)
        for p in parts)
    md5 = _MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
    table = body + md5
    if len(table) + _ENTRY.size > TABLE_SIZE:
        raise PartitionError("too many partitions for one table")
    return table + b"\xff" * (TABLE_SIZE - len(table))


def from_bytes(data: bytes) -> list[Partition]:
    """Parse a binary table (as written by to_bytes or ESP-IDF); PartitionError on a bad entry or MD5."""
    parts: list[Partition] = []
    names = {t: {v: k for k, v in s.items()} for t, s in SUBTYPES.items()}
    types = {v: k for k, v in TYPES.items()}
    pos = 0
    while pos + _ENTRY.size <= len(data):
        raw = data[pos:pos + _ENTRY.size]
        if raw[:2] == _MD5_MAGIC:
            if hashlib.md5(data[:pos]).digest() != raw[16:]:
                raise PartitionError("partition table: MD5 does not match its entries")
            return parts
        if raw == b"\xff" * _ENTRY.size:
            return parts  # a table written without an MD5 entry ends here
        magic, typ, sub, offset, size, label, flags = _ENTRY.unpack(raw)
        if magic != _MAGIC:
            raise PartitionError(f"partition table: bad entry at byte {pos}")
        t = types.get(typ, f"{typ:#04x}")
        parts.append(Partition(label.rstrip(b"\0").decode("ascii", "replace"), t,
                               names.get(t, {}).get(sub, f"{sub:#04x}"), offset, size, flags))
        pos += _ENTRY.size
    raise PartitionError("partition table: no end marker")


def to_csv(parts: list[Partition]) -> str:
    """ESP-IDF's CSV form (for a custom image build: CONFIG_PARTITION_TABLE_CUSTOM_FILENAME)."""
    return "# Name, Type, SubType, Offset, Size, Flags\n" + "".join(p.csv() + "\n" for p in parts)


def find(parts: list[Partition], name: str) -> Partition:
    for p in parts:
        if p.name == name:
            return p
    raise PartitionError(f"no partition {name!r}")
