"""Packaging: the mip package.json (installed with mpremote mip onto a virtual board), the custom image's
build inputs and the freeze manifest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from clockterm_host import REPO, bundle, package, partitions, vboard
from clockterm_host.device import Session, sha256_hex


def test_package_json_is_up_to_date_and_lists_every_module():
    assert (REPO / "firmware" / "package.json").read_text() == package.render_package_json(), \
        "run: clockterm firmware package-json"
    doc = json.loads((REPO / "firmware" / "package.json").read_text())
    targets = {t for t, _ in doc["urls"]}
    assert {f"clockterm/{p.relative_to(REPO / 'lib' / 'clockterm').as_posix()}"
            for p in (REPO / "lib" / "clockterm").rglob("*.py")} <= targets
    for _t, src in doc["urls"]:
        if not src.startswith("https://"):
            assert (REPO / "firmware" / src).resolve().is_file(), src
    assert not [t for t, _ in doc["urls"] if not t.startswith("clockterm/")]  # the firmware's modules only


def test_mip_installs_the_package_on_a_virtual_board(tmp_path):
    # The package as it is (its URLs relative to firmware/, made relative to a copy of package.json).
    doc = json.loads((REPO / "firmware" / "package.json").read_text())
    local = [[t, (REPO / "firmware" / s).resolve()] for t, s in doc["urls"]]
    pj = tmp_path / "package.json"  # mip takes a local package.json's URLs relative to its folder
    pj.write_text(json.dumps({"version": doc["version"], "deps": [],
                              "urls": [[t, os.path.relpath(p, tmp_path)] for t, p in local]}))
    with vboard.VirtualBoard(tmp_path / "b", "m5stack-atom-wiegand") as vb:
        r = subprocess.run([sys.executable, "-m", "mpremote", "connect", vb.port, "mip", "install", "--target",
                            "/lib", str(pj)], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        s = Session(vb.port)
        try:
            theirs = s.hashes([f"/lib/{t}" for t, _ in local])
            version = s.exec("import sys\nsys.path.insert(0, '/lib')\nimport clockterm.app\n"
                             "print(clockterm.app.VERSION)")
        finally:
            s.close()
    assert theirs == {f"/lib/{t}": sha256_hex(open(p, "rb").read()) for t, p in local}
    assert version.strip() == doc["version"]


def test_firmware_inputs_enable_romfs_with_the_partition_table(tmp_path):
    made = package.firmware_inputs(tmp_path)
    for chip, board in (("esp32", "esp32-devkitc-rc522"), ("esp32s3", "esp32-s3-devkitc-uart")):
        d = tmp_path / "boards" / ("CLOCKTERM_ESP32" if chip == "esp32" else "CLOCKTERM_ESP32_S3")
        assert d in made
        assert "#define MICROPY_VFS_ROM (1)" in (d / "mpconfigboard.h").read_text()
        sdk = (d / "sdkconfig.board").read_text()
        csv = re.search(r'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="(.*)"', sdk).group(1)
        rows = [ln.split(",") for ln in open(csv).read().splitlines() if ln and not ln.startswith("#")]
        table = partitions.layout(bundle.board_config(board))
        assert [(r[0], int(r[3], 16), int(r[4], 16)) for r in rows] == [(p.name, p.offset, p.size) for p in table]
        assert "romfs,data,0x8f," in open(csv).read()
        cmake = (d / "mpconfigboard.cmake").read_text()
        assert f"include(boards/mpconfigboard_{chip}_common.cmake)" in cmake
        # the image carries the terminal's code: the board folder names the freeze manifest
        assert f'set(MICROPY_FROZEN_MANIFEST "{(REPO / "firmware" / "manifest.py").resolve()}")' in cmake
    code = tmp_path / "code" / "clockterm" / "code_id.py"
    assert code in made
    ns: dict = {}
    exec(code.read_text(), ns)
    assert ns["ID"] == bundle.code_id()


def test_the_code_id_changes_with_any_byte_or_name_of_lib(tmp_path, monkeypatch):
    import shutil

    from clockterm_host import bundle as b

    shutil.copytree(REPO / "lib", tmp_path / "lib")
    monkeypatch.setattr(b, "REPO", tmp_path)
    first = b.code_id()
    assert len(first) == 12 and int(first, 16) >= 0
    app = tmp_path / "lib" / "clockterm" / "app.py"
    app.write_bytes(app.read_bytes() + b"\n")
    second = b.code_id()
    assert second != first
    app.rename(app.with_name("app2.py"))
    assert b.code_id() not in (first, second)


def test_the_freeze_manifest_points_at_folders_that_exist():
    subprocess.run([sys.executable, "-m", "clockterm_host.cli", "firmware", "inputs"], check=True,
                   capture_output=True, cwd=REPO)
    text = (REPO / "firmware" / "manifest.py").read_text()
    pkgs = re.findall(r'package\("(\w+)", base_path="([^"]+)"\)', text)
    assert [p for p, _ in pkgs] == ["clockterm"]
    for name, base in pkgs:
        assert (REPO / "firmware" / base / name / "__init__.py").is_file(), (name, base)
    mods = re.findall(r'module\("([\w./]+)", base_path="([^"]+)"\)', text)
    assert mods == [("clockterm/code_id.py", "../build/firmware/code")]
    for name, base in mods:
        assert (REPO / "firmware" / base / name).is_file(), (name, base)
