"""`clockterm flash` and `clockterm firmware`: the pinned MicroPython image, our partition table, esptool.

A MicroPython ESP32 firmware file (`firmware.bin` of a build, the images of firmware/versions.json) is the
bootloader, the build's partition table and the app, merged from the bootloader's flash offset. Flashing
a terminal keeps the bootloader and the app and puts the board's own partition table (partitions.py)
in place of the build's: the merged image is made with esptool's merge-bin, checked, then written
with esptool (the flash erased first unless --keep-data) and verified against the flash.

Before anything is written the image is checked: its sha256 against the pin in versions.json (an
unpinned or different image is refused, with the command that pins it), its bootloader and app as
esptool reads them (magic, chip, segments, checksum, SHA-256 digest), and that the app fits the
board's app partition.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import REPO, bundle, partitions

VERSIONS = REPO / "firmware" / "versions.json"
IMAGES_DIR = REPO / "firmware" / "images"  # where downloaded or built images are kept (not in git)
BAUD = 460800


class ImageError(SystemExit):
    """An image that must not be flashed: the message says why and what to do."""


@dataclass
class Image:
    chip: str
    boot_offset: int
    bootloader: bytes
    app: bytes
    sha256: str
    size: int


def load_versions(path: Path = VERSIONS) -> dict:
    return json.loads(Path(path).read_text())


def save_versions(doc: dict, path: Path = VERSIONS) -> None:
    tmp = Path(path).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def entry_for(board_cfg: dict, versions: dict) -> tuple[str, dict]:
    """(chip, versions.json entry) of the image a board runs."""
    chip = board_cfg.get("chip")
    ent = versions.get("images", {}).get(chip)
    if ent is None:
        raise ImageError(f"board {board_cfg['board']!r}: no image for chip {chip!r} in {VERSIONS.name} "
                         f"(images for: {', '.join(sorted(versions.get('images', {})))})")
    want = (board_cfg.get("firmware") or {}).get("board")
    if want != ent.get("board"):
        raise ImageError(f"board {board_cfg['board']!r} names firmware {want!r}, but the {chip} image in "
                         f"{VERSIONS.name} is {ent.get('board')!r}")
    return chip, ent


def _esptool_quiet():
    """esptool's library functions print to stdout; the CLI says what matters itself."""
    return contextlib.redirect_stdout(io.StringIO())


def _load(chip: str, data: bytes, what: str):
    """An ESP image (bootloader or app) as esptool reads it, its checksum and digest checked."""
    from esptool.bin_image import LoadFirmwareImage
    from esptool.util import FatalError

    try:
        with _esptool_quiet():
            img = LoadFirmwareImage(chip, data)
    except (FatalError, struct.error, IndexError, ValueError, TypeError) as e:
        raise ImageError(f"{what}: not a valid {chip} image ({e})") from None
    if img.chip_id != _chip_id(chip):
        raise ImageError(f"{what}: built for chip id {img.chip_id}, not {chip}")
    if img.checksum != img.calculate_checksum():
        raise ImageError(f"{what}: checksum does not match (a damaged or truncated file)")
    if img.append_digest and img.stored_digest != img.calc_digest:
        raise ImageError(f"{what}: SHA-256 digest does not match (a damaged or truncated file)")
    return img


def _chip_id(chip: str) -> int:
    from esptool.targets import CHIP_DEFS

    return CHIP_DEFS[chip].IMAGE_CHIP_ID


def _image_len(img) -> int:
    return img.data_length + (32 if img.append_digest else 0)


def read_image(data: bytes, chip: str, boot_offset: int) -> Image:
    """Split a MicroPython firmware file into bootloader and app, each checked by esptool's image reader."""
    table_at = partitions.TABLE_OFFSET - boot_offset
    if len(data) < table_at + partitions.TABLE_SIZE:
        raise ImageError(f"image: {len(data)} bytes, too short for a firmware file (bootloader, partition "
                         f"table at {partitions.TABLE_OFFSET:#x}, app)")
    boot = _load(chip, data[:table_at], "image bootloader")
    try:
        table = partitions.from_bytes(data[table_at:table_at + partitions.TABLE_SIZE])
        app_part = next(p for p in table if p.type == "app")
    except (partitions.PartitionError, StopIteration):
        raise ImageError(f"image: no partition table with an app partition at {partitions.TABLE_OFFSET:#x}: "
                         "is this a MicroPython firmware file (firmware.bin), not a bare app image?") from None
    app_at = app_part.offset - boot_offset
    app = _load(chip, data[app_at:], "image app")
    return Image(chip, boot_offset, data[:_image_len(boot)], data[app_at:app_at + _image_len(app)],
                 hashlib.sha256(data).hexdigest(), len(data))


def check_pin(data: bytes, ent: dict, chip: str) -> None:
    """Refuse an image that does not match the pinned sha256, saying how to pin it."""
    digest = hashlib.sha256(data).hexdigest()
    how = (f"check where it came from, then pin it: clockterm firmware pin --chip {chip} FILE "
           "(records its sha256 in firmware/versions.json; commit that change)")
    if not ent.get("sha256"):
        raise ImageError(f"the {chip} image is not pinned yet (sha256 null in firmware/versions.json); {how}")
    if digest != ent["sha256"]:
        raise ImageError(f"image sha256 {digest} is not the pinned {ent['sha256']} "
                         f"({ent.get('file')}): a different or damaged file; {how}")


def pin(path: Path, chip: str, versions_path: Path = VERSIONS) -> dict:
    """Check an image and record its sha256 and size for its chip; returns the new entry."""
    doc = load_versions(versions_path)
    ent = doc.get("images", {}).get(chip)
    if ent is None:
        raise ImageError(f"no image entry for chip {chip!r} in {versions_path.name}")
    data = _read(path)
    img = read_image(data, chip, int(ent["offset"], 0))
    code_id = bundle.code_id()
    if code_id.encode() not in img.app:
        raise ImageError(f"the image does not carry lib/ as it is here (code {code_id}, which "
                         "firmware/manifest.py freezes into it, is not in its app): build the image from this "
                         "checkout (make firmware-inputs first: firmware/README.md), then pin it")
    ent.update(sha256=img.sha256, size=img.size, file=Path(path).name, code_id=code_id)
    save_versions(doc, versions_path)
    return ent


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"image: cannot read {path}: {e.strerror}") from None


def flash_image(board: str, image_path: Path | None = None, versions_path: Path = VERSIONS,
                check_sha: bool = True) -> tuple[bytes, int, list[partitions.Partition]]:
    """(merged image, its flash offset, partition table) for a board: the pinned image's bootloader and
    app with the board's partition table, as esptool's merge-bin makes it."""
    cfg = bundle.board_config(board)
    doc = load_versions(versions_path)
    chip, ent = entry_for(cfg, doc)
    path = Path(image_path) if image_path else IMAGES_DIR / ent["file"]
    if not path.exists():
        raise ImageError(f"image {path} not found: build it (firmware/README.md) or download it there, "
                         f"then pin it (clockterm firmware pin --chip {chip} FILE), or give --image FILE")
    data = _read(path)
    if check_sha:
        check_pin(data, ent, chip)
        if ent.get("code_id") != bundle.code_id():  # lib/ changed since the pin: the image has older code
            raise ImageError(f"the pinned {chip} image carries code {ent.get('code_id')}, lib/ here is "
                             f"{bundle.code_id()}: build and pin the image of this checkout (firmware/README.md), "
                             "or flash from the commit that pinned it")
    img = read_image(data, chip, int(ent["offset"], 0))
    try:
        table = partitions.layout(cfg, romfs=bool(ent.get("romfs")))
    except partitions.PartitionError as e:
        raise ImageError(f"board {board}: {e}") from None
    app_part = partitions.find(table, "factory")
    if len(img.app) > app_part.size:
        raise ImageError(f"the app ({len(img.app)} bytes) does not fit the factory partition ({app_part.size} "
                         "bytes): raise flash.app_kb in the board config")
    from esptool.cmds import merge_bin

    with _esptool_quiet():
        merged = merge_bin([(img.boot_offset, img.bootloader), (partitions.TABLE_OFFSET, partitions.to_bytes(table)),
                            (app_part.offset, img.app)], chip, flash_size=f"{cfg['flash']['size_mb']}MB",
                           target_offset=img.boot_offset)
    return merged, img.boot_offset, table


def esptool_argv(chip: str, port: str, baud: int, *cmd: str) -> list[str]:
    return [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud), *cmd]


def flash(board: str, port: str, image_path: Path | None, baud: int = BAUD, keep_data: bool = False,
          dry_run: bool = False, out=None) -> int:
    """Write the board's flash image to the board on `port` and verify it. Returns an exit code."""
    out = out or sys.stdout
    merged, offset, table = flash_image(board, image_path)
    cfg = bundle.board_config(board)
    chip = cfg["chip"]
    build = REPO / "build" / "flash"
    build.mkdir(parents=True, exist_ok=True)
    img_path = build / f"{board}.bin"
    img_path.write_bytes(merged)
    print(f"{board}: {img_path} ({len(merged)} bytes from {offset:#x}), partitions:", file=out)
    for p in table:
        print(f"  {p.name:<10} {p.type:<5} {p.subtype:<10} {p.offset:#09x} {p.size // 1024:>6} KB", file=out)
    steps = []
    if not keep_data:
        steps.append(("erase the whole flash (journal and filesystem included)", ["erase-flash"]))
    steps.append(("write", ["write-flash", "--flash-size", "keep", f"{offset:#x}", str(img_path)]))
    steps.append(("verify against the flash", ["verify-flash", f"{offset:#x}", str(img_path)]))
    for what, cmd in steps:
        argv = esptool_argv(chip, port, baud, *cmd)
        print(f"-- {what}: {' '.join(argv[1:])}", file=out, flush=True)
        if dry_run:
            continue
        r = subprocess.run(argv)
        if r.returncode != 0:
            print(f"flash: esptool failed ({what}, exit {r.returncode}); nothing after it was done. Hold BOOT "
                  "while pressing EN to force the download mode, check the port, then run this again.",
                  file=sys.stderr)
            return 3
    if not dry_run:
        print(f"{board}: flashed and verified; next: clockterm deploy --board {board} --port {port}", file=out)
    return 0


# --- CLI -----------------------------------------------------------------------------------------------


def cmd_flash(a: argparse.Namespace) -> int:
    try:
        return flash(a.board, a.port, Path(a.image) if a.image else None, a.baud, a.keep_data, a.dry_run)
    except ImageError as e:
        print(f"flash: {e}", file=sys.stderr)
        return 2


def cmd_pin(a: argparse.Namespace) -> int:
    try:
        ent = pin(Path(a.file), a.chip)
    except ImageError as e:
        print(f"pin: {e}", file=sys.stderr)
        return 2
    print(f"{a.chip}: pinned {ent['file']} sha256 {ent['sha256']} ({ent['size']} bytes) in {VERSIONS}")
    return 0


def cmd_image(a: argparse.Namespace) -> int:
    try:
        merged, offset, table = flash_image(a.board, Path(a.image) if a.image else None)
    except ImageError as e:
        print(f"image: {e}", file=sys.stderr)
        return 2
    Path(a.out).write_bytes(merged)
    print(f"{a.out}: {len(merged)} bytes, to flash at {offset:#x}")
    return 0


def cmd_partitions(a: argparse.Namespace) -> int:
    cfg = bundle.board_config(a.board)
    try:
        table = partitions.layout(cfg, romfs=not a.no_romfs)
    except partitions.PartitionError as e:
        print(f"partitions: {e}", file=sys.stderr)
        return 2
    if a.out:
        Path(a.out).write_bytes(partitions.to_bytes(table))
    print(partitions.to_csv(table), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("flash", help="write the pinned MicroPython image with the board's partition table, "
                                     "then verify the flash")
    s.add_argument("--board", required=True)
    s.add_argument("--port", required=True, help="serial port of the board (e.g. /dev/ttyUSB0)")
    s.add_argument("--image", help="the firmware file (default firmware/images/<file in versions.json>)")
    s.add_argument("--baud", type=int, default=BAUD)
    s.add_argument("--keep-data", action="store_true",
                   help="do not erase the flash first (the journal and filesystem stay; same partition table only)")
    s.add_argument("--dry-run", action="store_true", help="build and check the image, print the esptool steps")
    s.set_defaults(func=cmd_flash)

    f = sub.add_parser("firmware", help="the MicroPython base image: pin, merged image, partition table")
    fs = f.add_subparsers(dest="firmware_cmd", required=True)
    p = fs.add_parser("pin", help="check a downloaded or built image and record its sha256 in versions.json")
    p.add_argument("--chip", required=True, choices=sorted(load_versions().get("images", {})))
    p.add_argument("file")
    p.set_defaults(func=cmd_pin)
    i = fs.add_parser("image", help="write the merged flash image of a board to a file (no board needed)")
    i.add_argument("--board", required=True)
    i.add_argument("--image", help="the firmware file (default firmware/images/<file in versions.json>)")
    i.add_argument("--out", required=True)
    i.set_defaults(func=cmd_image)
    t = fs.add_parser("partitions", help="print a board's partition table as CSV (and write it with --out)")
    t.add_argument("--board", required=True)
    t.add_argument("--no-romfs", action="store_true", help="the table for an image without ROMFS")
    t.add_argument("--out", help="write the binary table (for offset 0x8000) to this file")
    t.set_defaults(func=cmd_partitions)
    j = fs.add_parser("package-json", help="rewrite firmware/package.json (mip) from lib/")
    j.set_defaults(func=cmd_package_json)
    n = fs.add_parser("inputs", help="the custom image build's inputs: board folders, frozen sources")
    n.add_argument("--out", default=str(REPO / "build" / "firmware"))
    n.set_defaults(func=cmd_inputs)


def cmd_package_json(a: argparse.Namespace) -> int:
    from . import package

    print(package.write_package_json())
    return 0


def cmd_inputs(a: argparse.Namespace) -> int:
    from . import package

    for p in package.firmware_inputs(Path(a.out)):
        print(p)
    return 0
