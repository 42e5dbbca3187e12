"""`clockterm deploy`: the bundle onto a board over its serial port, every file's hash then checked on the board.

The board is asked first, after a soft reset, whether its image carries the terminal's code frozen in
(docs/technician.md, "Deploy"); layout auto (the default) follows its answer:
- image (the pinned image, which carries the code): only boot.py, main.py and board.json are written,
  once the image's code id is this checkout's (an image of other code, or a romfs or /lib layout asked
  for on such an image, is refused before anything is written).
- romfs (a development image, built without the code and with ROMFS): the bundle's bytecode as one ROMFS image,
  written into the romfs partition with `mpremote romfs deploy` (skipped when the partition already
  holds it) and run in place from flash; code left in /lib by an earlier /lib deploy is removed (the
  ESP32 port puts /rom/lib before /lib on sys.path, so it would only take flash).
- lib (an image without ROMFS): the .mpy files copied to /lib, only those whose hash differs, and
  files under /lib that the bundle no longer has removed.
Every way boot.py, main.py and board.json go to / (by hash), the board is reset so that it mounts
what was written, the hash of every file is computed on the board and compared with the bundle's, and
the board is asked where its code loads from: the deploy fails when that is not where it wrote (a
package at the flash root shadowing it). The terminal then starts (unless --no-restart), also after a
refusal.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from . import bundle
from .device import CODE_DIR, HASH_FN, DeviceError, Session, local_files, sha256_hex

_ROMFS_INFO = HASH_FN + """
import json, vfs
out = None
if hasattr(vfs, 'rom_ioctl') and vfs.rom_ioctl(1) > 0:
    dev = vfs.rom_ioctl(2, 0)
    size = dev.ioctl(4, 0) * dev.ioctl(5, 0)
    n = min(%d, size)
    s = hashlib.sha256()
    b = bytearray(1024)
    for off in range(0, n, 1024):
        m = min(1024, n - off)
        mv = memoryview(b)[:m]
        dev.readblocks(off // dev.ioctl(5, 0), mv, off %% dev.ioctl(5, 0))
        s.update(mv)
    out = {'size': size, 'head': binascii.hexlify(s.digest()).decode()}
print(json.dumps(out))
"""

_WALK = """
import os, json
def _walk(d, out):
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        p = d + '/' + n
        if os.stat(p)[0] & 0x4000:
            _walk(p, out)
        else:
            out.append(p)
out = []
_walk(%r, out)
print(json.dumps(out))
"""

_RMTREE = """
import os
def _rm(p):
    if os.stat(p)[0] & 0x4000:
        for n in os.listdir(p):
            _rm(p + '/' + n)
        os.rmdir(p)
    else:
        os.remove(p)
for p in %r:
    try:
        _rm(p)
    except OSError:
        pass
"""


def _say(msg: str) -> None:
    print(msg, flush=True)


def romfs_state(s: Session, img: bytes) -> dict | None:
    """The board's ROMFS partition: {"size", "head": sha256 of its first len(img) bytes}, or None."""
    return s.json(_ROMFS_INFO % len(img), timeout=60)


def _copy_changed(s: Session, files: dict[str, Path]) -> int:
    theirs = s.hashes(list(files))
    n = 0
    for dest, src in files.items():
        data = src.read_bytes()
        if theirs.get(dest) == sha256_hex(data):
            continue
        s.makedirs(dest.rsplit("/", 1)[0] or "/")
        s.write(dest, data)
        n += 1
        _say(f"   {dest} ({len(data)} bytes)")
    return n


def _root_files(files: dict[str, Path]) -> dict[str, Path]:
    return {k: v for k, v in files.items() if k.count("/") == 1}


def _deploy_romfs(port: str, baud: int, out: Path, img_path: Path) -> None:
    img = img_path.read_bytes()
    s = Session(port, baud)
    try:
        info = romfs_state(s, img)
        if info is None:
            raise DeviceError("this firmware has no ROMFS partition: flash the pinned image "
                              "(clockterm flash) or deploy with --layout lib")
        if len(img) > info["size"]:
            raise DeviceError(f"the ROMFS image ({len(img)} bytes) is larger than the romfs partition "
                              f"({info['size']} bytes): raise flash.romfs_kb in the board config and flash again")
        stale = [p for p in s.json(_WALK % "/lib") if p.startswith(("/lib/clockterm/", "/lib/microdot/"))]
        if stale:
            _say(f"-- removing {len(stale)} files of an earlier /lib deploy (unused: /rom/lib comes first)")
            s.exec(_RMTREE % ["/lib/clockterm", "/lib/microdot"])
    finally:
        s.close()
    if info["head"] == sha256_hex(img):
        _say(f"-- ROMFS partition already holds this image ({len(img)} bytes)")
        return
    _say(f"-- writing the ROMFS image ({len(img)} bytes) with mpremote romfs deploy")
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", port, "romfs", "deploy", str(img_path)])
    if r.returncode != 0:
        raise DeviceError(f"mpremote romfs deploy failed (exit {r.returncode})")


def _deploy_lib(s: Session, files: dict[str, Path]) -> None:
    lib = {k: v for k, v in files.items() if k.startswith("/lib/")}
    stale = [p for p in s.json(_WALK % "/lib") if p not in lib]
    if stale:
        _say(f"-- removing {len(stale)} stale files from /lib")
        s.exec(_RMTREE % stale)
    _say("-- copying changed files to /lib")
    n = _copy_changed(s, lib)
    _say(f"   {n} of {len(lib)} files copied")


def verify(port: str, baud: int, files: dict[str, Path]) -> list[str]:
    """Compare the hash of every file of the bundle with the one computed on the board."""
    s = Session(port, baud)
    try:
        s.exec("pass")
        return _mismatches(s, files)
    finally:
        s.close()


def _mismatches(s: Session, files: dict[str, Path]) -> list[str]:
    theirs = s.hashes(list(files))
    return [f"{dest}: {'missing' if theirs.get(dest) is None else 'differs'} on the board"
            for dest, src in files.items() if theirs.get(dest) != sha256_hex(src.read_bytes())]


IMAGE = "the image (frozen)"  # device.CODE_DIR's name for code built into the firmware


def code_dir(s: Session) -> tuple[str, str | None]:
    """Where the board's code loads from (device.CODE_DIR: a folder, or IMAGE), or "!" and the error when it
    cannot be imported; and the id of the code frozen into its image (None when it carries none)."""
    return tuple(s.json("import json" + CODE_DIR + "print(json.dumps([_code, _id]))"))


def _not_there(where: str, want: str) -> str:
    # What a deploy that wrote its code to `want` says when the board runs it from `where` instead
    if where.startswith("!"):
        return (f"the board cannot import its code ({where[1:]}): a clockterm folder or clockterm.py at the "
                "flash root hides it (remove it), or the bundle does not suit this firmware")
    head = f"the board runs its code from {where}, not from {want} where it was written: "
    if where == "/rom/lib":
        return head + "the romfs partition holds code, which comes before /lib: deploy with --layout romfs"
    return head + f"remove {where.rstrip('/')}/clockterm on the board (it comes before {want} on sys.path)"


def _choose(port: str, baud: int, layout: str) -> tuple[str, str | None]:
    """The layout to write (auto: "image" when the board's image carries code, else "romfs") and the
    refusal, when there is one, before anything is written."""
    s = Session(port, baud)
    try:
        # A soft reset first: a fresh interpreter with the whole heap, which imports what the next start
        # will, not what the stopped app had in sys.modules
        s.soft_reset()
        _, frozen_id = code_dir(s)
    finally:
        s.close()
    if frozen_id is None:  # an image without the terminal's code: a development board
        return ("romfs" if layout == "auto" else layout), None
    if layout != "auto":
        return layout, (f"this board's image carries the terminal's code (frozen, code {frozen_id}), which comes "
                        f"before {'/rom/lib' if layout == 'romfs' else '/lib'} on sys.path: code written there "
                        "would never run. Deploy without --layout (boot.py, main.py and board.json only); a new "
                        "release of the code is a new image (clockterm flash --keep-data)")
    mine = bundle.code_id()
    if frozen_id != mine:
        return "image", (f"the board's image carries other code ({frozen_id}) than this repository's lib/ "
                         f"({mine}): flash the image built from this repository (clockterm flash --keep-data), "
                         "then deploy again")
    return "image", None


def deploy(board: str, port: str, layout: str = "auto", baud: int = 115200, restart: bool = True) -> int:
    out = bundle.build(board)
    layout, refused = _choose(port, baud, layout)
    if refused:
        print(f"deploy: {refused}", file=sys.stderr)
        if restart:  # nothing was written: the terminal goes on as it was
            Session(port, baud).restart()
        return 3
    # The image layout writes only the files beside the code, which the firmware carries itself.
    files = _root_files(local_files(out, "romfs")) if layout == "image" else local_files(out, layout)
    _say(f"{board}: bundle {out} ({len(files)} files, layout {layout})")
    if layout == "image":
        _say(f"-- the code is the image's own (frozen, code {bundle.code_id()}, the same as lib/ here)")
    if layout == "romfs":
        _deploy_romfs(port, baud, out, out / "romfs.img")
    s = Session(port, baud)
    try:
        if layout == "lib":
            _deploy_lib(s, files)
        _say("-- boot.py, main.py, board.json")
        _copy_changed(s, _root_files(files))
        _say("-- soft reset, then every file's sha256 on the board")
        s.soft_reset()  # the firmware mounts the new ROMFS image at a reset
    finally:
        s.close()
    s = Session(port, baud)
    try:
        s.exec("pass")
        bad = _mismatches(s, files)
        where = None if bad else code_dir(s)[0]
    finally:
        s.close()
    if bad:
        for b in bad:
            print(f"deploy: {b}", file=sys.stderr)
        return 3
    _say(f"   all {len(files)} files match")
    # The files are right; is it their code that runs? A package earlier on sys.path ('' first: one copied
    # to the flash root; /rom/lib before /lib) would be imported instead, and the deploy would change nothing.
    want = {"romfs": "/rom/lib", "lib": "/lib", "image": IMAGE}[layout]
    if where != want:
        print(f"deploy: {_not_there(where, want)}", file=sys.stderr)
        return 3
    _say(f"   the board runs the code from {want}")
    if restart:
        Session(port, baud).restart()
        _say(f"{board}: deployed; the terminal restarts. Next: clockterm provision --port {port}")
    return 0


def cmd_deploy(a: argparse.Namespace) -> int:
    try:
        return deploy(a.board, a.port, a.layout, a.baud, not a.no_restart)
    except DeviceError as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("deploy", help="build the bundle, put it on the board, check every file's hash there")
    s.add_argument("--board", required=True)
    s.add_argument("--port", required=True, help="serial port of the board (or a virtual board's pty)")
    s.add_argument("--layout", choices=("auto", "romfs", "lib"), default="auto",
                   help="auto (default): the code frozen into the pinned image is used as it is, else romfs; "
                        "romfs: the code in the ROMFS partition (a development image); lib: .mpy files in /lib")
    s.add_argument("--baud", type=int, default=115200)
    s.add_argument("--no-restart", action="store_true", help="leave the board at its REPL afterwards")
    s.set_defaults(func=cmd_deploy)
