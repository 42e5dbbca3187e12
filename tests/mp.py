"""Run firmware code inside the MicroPython unix port, from the compiled bundle, under the ESP32 heap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from clockterm_host import bundle  # noqa: E402

HEAP = "100K"  # ESP32 without PSRAM leaves about 110 KB to the GC heap
_built: dict[str, Path] = {}


def micropython() -> str:
    return bundle.tool("micropython")


def device_dir(board: str = "sim") -> Path:
    """The bundle for `board`, built once per test session (incremental)."""
    if board not in _built:
        _built[board] = bundle.build(board)
    return _built[board]


def run_mp(script: str, heap: str = HEAP, timeout: float = 120, args: list[str] | None = None,
           env: dict | None = None, check: bool = True, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run `script` (source text) under micropython as a board runs code: the bundle's bytecode from
    its ROMFS image, `heap` left for everything else (see clockterm_host.bundle.launch)."""
    argv, full_env = bundle.launch(device_dir("sim"), heap, script)
    full_env.update(env or {})
    r = subprocess.run([*argv, *(args or [])], capture_output=True, text=True, timeout=timeout, env=full_env,
                       cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError(f"micropython exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def script(name: str, settings: dict | None = None, tail: str = "") -> str:
    """The text of tests/<name>, a MicroPython module (linted with the firmware's rules, lib/ruff.toml),
    with `settings` before it as assignments (NAME = repr(value): the module reads them with
    globals().get) and `tail` after it (say a call of its main()); for run_mp and mp_json."""
    pre = "".join(f"{k} = {v!r}\n" for k, v in (settings or {}).items())
    return pre + (Path(__file__).parent / name).read_text() + ("\n" + tail + "\n" if tail else "")


def mp_json(script: str, **kw) -> object:
    """Run `script`; it prints one JSON document on its last line of output, which is returned."""
    r = run_mp(script, **kw)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    if not lines:
        raise AssertionError(f"no output from micropython\nstderr:\n{r.stderr}")
    return json.loads(lines[-1])
