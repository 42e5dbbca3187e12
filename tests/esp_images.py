"""Test firmware files in the MicroPython ESP32 layout, made here with esptool (no image can be downloaded).

The real images cannot be fetched on this machine (firmware/README.md). These are honest stand-ins
for the file format only: a bootloader and an app made by esptool's elf2image from small ELF files
written here (Xtensa machine type, sections at the chip's IRAM/DRAM and flash-mapped addresses, filler
bytes for code), merged as a MicroPython build merges them: the bootloader at the chip's bootloader
offset, MicroPython's own 4 MiB partition table at 0x8000, the app at 0x10000. esptool reads and checks
them as it checks a real image (magic, chip id, segments, checksum, SHA-256 digest); they do not run.
"""

from __future__ import annotations

import contextlib
import io
import struct

from clockterm_host import bundle, partitions

_EM_XTENSA = 0x5E
_SHT_PROGBITS, _SHT_STRTAB = 1, 3
_SHF_WRITE, _SHF_ALLOC, _SHF_EXEC = 1, 2, 4

# Chip -> (bootloader flash offset, IRAM, DRAM, flash-mapped code, flash-mapped data) addresses.
CHIPS = {
    "esp32": (0x1000, 0x40080000, 0x3FFB0000, 0x400D0020, 0x3F400020),
    "esp32s3": (0x0, 0x40378000, 0x3FC88000, 0x42000020, 0x3C000020),
}


def elf(sections: list[tuple[str, int, bytes, int]], entry: int) -> bytes:
    """A little-endian ELF32 with the given (name, address, data, flags) sections and no program headers."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n, *_ in sections) + b".shstrtab\0"
    body = bytearray()
    offsets = []
    for _name, _addr, data, _flags in sections:
        offsets.append(0x34 + len(body))
        body += data + bytes(-len(data) % 4)
    strtab_off = 0x34 + len(body)
    body += names + bytes(-len(names) % 4)
    shoff = 0x34 + len(body)
    sh = bytearray(bytes(40))  # the null section
    pos = 1
    for (name, addr, data, flags), off in zip(sections, offsets, strict=True):
        sh += struct.pack("<10I", pos, _SHT_PROGBITS, flags, addr, off, len(data), 0, 0, 4, 0)
        pos += len(name) + 1
    sh += struct.pack("<10I", pos, _SHT_STRTAB, 0, 0, strtab_off, len(names), 0, 0, 1, 0)
    ident = b"\x7fELF\x01\x01\x01" + bytes(9)
    head = struct.pack("<16sHHIIIIIHHHHHH", ident, 2, _EM_XTENSA, 1, entry, 0, shoff, 0, 0x34, 0, 0, 40,
                       len(sections) + 2, len(sections) + 1)
    return head + bytes(body) + bytes(sh)


def _elf2image(chip: str, elf_bytes: bytes, **kw) -> bytes:
    from esptool.cmds import elf2image

    with contextlib.redirect_stdout(io.StringIO()):
        return elf2image(elf_bytes, chip, flash_mode="dio", flash_size="4MB", **kw)


def bootloader(chip: str = "esp32") -> bytes:
    """A second-stage-bootloader-shaped image: RAM segments only, with the SHA-256 digest appended."""
    _, iram, dram, _, _ = CHIPS[chip]
    text = bytes((i * 7) & 0xFF for i in range(6000))
    data = b"clockterm test bootloader\0".ljust(512, b"\0")
    return _elf2image(chip, elf([(".iram_loader.text", iram, text, _SHF_ALLOC | _SHF_EXEC),
                                 (".dram0.data", dram, data, _SHF_ALLOC | _SHF_WRITE)], iram))


def app(chip: str = "esp32", size: int = 200_000, banner: bytes = b"MicroPython v1.29.0-preview",
        code_id: bytes | None = None) -> bytes:
    """An app-shaped image: flash-mapped code and data (the data starts with `banner`, then the id of the
    frozen code, lib/'s own unless given: firmware/manifest.py freezes it as a string) and a RAM segment."""
    _, iram, dram, irom, drom = CHIPS[chip]
    code_id = bundle.code_id().encode() if code_id is None else code_id
    rodata = banner + b"\0" + code_id + b"\0" + bytes((i * 13) & 0xFF for i in range(size // 4))
    code = bytes((i * 31 + 5) & 0xFF for i in range(size - len(rodata)))
    return _elf2image(chip, elf([(".flash.rodata", drom, rodata, _SHF_ALLOC),
                                 (".flash.text", irom, code, _SHF_ALLOC | _SHF_EXEC),
                                 (".iram0.text", iram, bytes(1024), _SHF_ALLOC | _SHF_EXEC)], iram))


# MicroPython's own table (ports/esp32/partitions-4MiBplus.csv): what a stock or custom build carries.
STOCK_TABLE = [
    partitions.Partition("nvs", "data", "nvs", 0x9000, 0x6000),
    partitions.Partition("phy_init", "data", "phy", 0xF000, 0x1000),
    partitions.Partition("factory", "app", "factory", 0x10000, 0x1F0000),
]


def firmware(chip: str = "esp32", app_size: int = 200_000, code_id: bytes | None = None) -> bytes:
    """A firmware file laid out as a MicroPython build's firmware.bin, from the bootloader offset."""
    boot_at = CHIPS[chip][0]
    out = bytearray(b"\xff" * (0x10000 - boot_at))
    b = bootloader(chip)
    out[:len(b)] = b
    t = partitions.to_bytes(STOCK_TABLE)
    out[0x8000 - boot_at:0x8000 - boot_at + len(t)] = t
    return bytes(out) + app(chip, app_size, code_id=code_id)
