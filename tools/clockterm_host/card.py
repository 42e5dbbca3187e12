"""The employee card's pictures: the terminal's screens as PNG, from the frames the SSD1306 driver sends.

`python -m clockterm_host.card [DIR]` (make card) runs card_mp.py on the MicroPython unix port from the
compiled bundle, under the ESP32 heap: the real tap path and idle display drive the ESP32 board layer's
indicator and display driver, and every frame the driver writes to the (stood-in) I2C bus is turned
into a PNG in DIR (docs/card). `--check` compares instead of writing: it fails when the pictures in DIR
are not what the code shows now.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from . import REPO, bundle

OUT = REPO / "docs" / "card"
WIDTH, HEIGHT = 128, 64  # the SSD1306 panels the board configs use
SCALE = 4  # screen pixels per panel pixel, a lit pixel drawn as a (SCALE - 1)-square dot
MARGIN = 8  # screen pixels of dark panel around the picture
LIT, UNLIT, GAP = 235, 28, 10  # grey levels: a lit dot, an unlit one, the grid between them


def frames(heap: str = "100K") -> list[tuple[str, bytes]]:
    """(name, frame) for each screen card_mp.py shows, in order."""
    out = bundle.build("sim")
    script = (Path(__file__).parent / "card_mp.py").read_text()
    argv, env = bundle.launch(out, heap, script)
    with tempfile.TemporaryDirectory(prefix="card-") as tmp:
        r = subprocess.run(argv, env=env, cwd=tmp, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"card_mp.py failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    shown = []
    for line in r.stdout.splitlines():
        if line.startswith('{"name"'):
            d = json.loads(line)
            shown.append((d["name"], bytes.fromhex(d["frame"])))
    return shown


def pixels(frame: bytes, width: int = WIDTH, height: int = HEIGHT) -> list[list[bool]]:
    """The panel's pixels from display RAM as the driver sends it: horizontal addressing, MONO_VLSB
    pages (byte page * width + x holds the pixels (x, 8 * page) .. (x, 8 * page + 7), low bit first)."""
    if len(frame) != width * height // 8:
        raise ValueError(f"frame of {len(frame)} bytes, expected {width * height // 8}")
    return [[bool(frame[(y // 8) * width + x] >> (y % 8) & 1) for x in range(width)] for y in range(height)]


def png(frame: bytes) -> bytes:
    """The frame as an 8-bit greyscale PNG of dots, SCALE times the panel's size, with a margin."""
    lit = pixels(frame)
    w = WIDTH * SCALE + 2 * MARGIN
    h = HEIGHT * SCALE + 2 * MARGIN
    rows = bytearray()
    for sy in range(h):
        rows.append(0)  # filter: none
        y, in_dot_y = divmod(sy - MARGIN, SCALE)
        for sx in range(w):
            x, in_dot_x = divmod(sx - MARGIN, SCALE)
            if not (0 <= y < HEIGHT and 0 <= x < WIDTH):
                rows.append(0)
            elif in_dot_x == SCALE - 1 or in_dot_y == SCALE - 1:
                rows.append(GAP)
            else:
                rows.append(LIT if lit[y][x] else UNLIT)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", type=Path, default=OUT, help=f"where the PNGs go (default {OUT})")
    ap.add_argument("--check", action="store_true", help="compare with the PNGs in DIR instead of writing them")
    args = ap.parse_args(argv)
    shown = frames()
    stale = []
    if not args.check:
        args.dir.mkdir(parents=True, exist_ok=True)
    for name, frame in shown:
        path = args.dir / f"{name}.png"
        data = png(frame)
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(path.name)
        else:
            path.write_bytes(data)
            print(f"wrote {path}")
    if args.check:
        known = {f"{name}.png" for name, _ in shown}
        stale += sorted(p.name for p in args.dir.glob("*.png") if p.name not in known)
        if stale:
            print(f"not what the terminal shows now: {', '.join(stale)} (run make card)", file=sys.stderr)
            return 1
        print(f"{len(shown)} screens in {args.dir} are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
