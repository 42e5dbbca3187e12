"""Packaging: the mip package.json of the firmware, and the inputs of a custom MicroPython image build.

    clockterm firmware package-json          # rewrite firmware/package.json from lib/ (a test checks it)
    clockterm firmware inputs [--out DIR]    # build/firmware: board folders and frozen sources (make firmware-inputs)

The custom image is MicroPython at the commit pinned in firmware/versions.json, built for each chip
from a board folder made here: the stock generic board's settings, ROMFS enabled (MICROPY_VFS_ROM,
which the stock ESP32 images leave off), and a partition table with the romfs partition (the 4 MB
layout of partitions.py; `clockterm flash` writes each board's own table over it). Steps: firmware/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import REPO, bundle, firmware, partitions

PACKAGE_JSON = REPO / "firmware" / "package.json"
MANIFEST = REPO / "firmware" / "manifest.py"
_BOARDS = {"esp32": ("esp32-devkitc-rc522", "mpconfigboard_esp32_common.cmake", ()),
           "esp32s3": ("esp32-s3-devkitc-uart", "mpconfigboard_esp32s3_common.cmake",
                       ("boards/sdkconfig.flash_qio_80m",))}


def package_json() -> dict:
    """mip's package.json: the firmware's modules (relative to this file's folder)."""
    urls = [[p.relative_to(REPO / "lib").as_posix(), "../" + p.relative_to(REPO).as_posix()]
            for p in sorted((REPO / "lib").rglob("*.py"))]
    return {"version": _firmware_version(), "urls": urls, "deps": []}


def _firmware_version() -> str:
    for line in (REPO / "lib" / "clockterm" / "app.py").read_text().splitlines():
        if line.startswith("VERSION = "):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit("lib/clockterm/app.py: no VERSION")


def render_package_json() -> str:
    """package.json's text: one [target, source] pair a line, so that a diff shows a module added or gone."""
    doc = package_json()
    pairs = ",\n".join(f"    {json.dumps(u)}" for u in doc["urls"])
    return f'{{\n  "version": {json.dumps(doc["version"])},\n  "urls": [\n{pairs}\n  ],\n  "deps": []\n}}\n'


def write_package_json(path: Path = PACKAGE_JSON) -> Path:
    path.write_text(render_package_json())
    return path


def _board_folder(out: Path, chip: str, ent: dict) -> Path:
    board, common, extra_defaults = _BOARDS[chip]
    d = out / "boards" / ent["board"]
    d.mkdir(parents=True, exist_ok=True)
    table = partitions.layout(bundle.board_config(board), romfs=True)
    (d / "partitions.csv").write_text(partitions.to_csv(table))
    (d / "sdkconfig.board").write_text(
        "# The partition table with a romfs partition (clockterm flash writes each board's own over it).\n"
        "CONFIG_PARTITION_TABLE_CUSTOM=y\n"
        f'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="{(d / "partitions.csv").resolve()}"\n')
    defaults = "\n    ".join(["boards/sdkconfig.csi", *extra_defaults, "${MICROPY_BOARD_DIR}/sdkconfig.board"])
    (d / "mpconfigboard.cmake").write_text(
        f"# {ent['board']}: MicroPython's {ent['base_board']} with the clock terminal's code frozen in.\n"
        f"include(boards/{common})\n\nlist(APPEND SDKCONFIG_DEFAULTS\n    {defaults}\n)\n"
        f'set(MICROPY_FROZEN_MANIFEST "{MANIFEST.resolve()}")\n')
    (d / "mpconfigboard.h").write_text(
        f'#define MICROPY_HW_BOARD_NAME "clock terminal ({ent["base_board"]})"\n'
        f'#define MICROPY_HW_MCU_NAME "{chip.upper()}"\n'
        "// ROMFS: a development board's code deployed to the romfs partition (mounted at /rom) runs in place;\n"
        "// the image's own frozen code comes first on sys.path.\n"
        "#define MICROPY_VFS_ROM (1)\n")
    (d / "board.json").write_text(json.dumps({"deploy": [], "mcu": chip, "product": ent["board"],
                                              "vendor": "clockterm", "features": ["WiFi"]}, indent=1) + "\n")
    return d


def firmware_inputs(out: Path) -> list[Path]:
    """The board folders of the custom images and the sources the freeze manifest reads."""
    out.mkdir(parents=True, exist_ok=True)
    made = [_board_folder(out, chip, ent) for chip, ent in firmware.load_versions()["images"].items()]
    # firmware/manifest.py freezes lib/clockterm from the repository itself, and this module beside it
    made.append(bundle.write_code_module(out / "code"))
    return made
