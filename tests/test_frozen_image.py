"""The deployed layout: a board whose image carries the terminal's code frozen in (the virtual board on the
unix port built by firmware/unix/build.sh). `make frozen-test` runs these; without that interpreter they
fail (they are not part of `make test`, which has no way to build it)."""

from __future__ import annotations

import pytest
from clockterm_host import bundle, vboard
from clockterm_host.device import Session
from test_technician import BOARD, FROZEN, _on_board, ct

pytestmark = pytest.mark.frozen


@pytest.fixture
def frozen_board(tmp_path):
    if not FROZEN:
        pytest.fail("needs the unix port with the code frozen in: make frozen-test")
    vboard.create(tmp_path / "b", BOARD)
    with vboard.VirtualBoard(tmp_path / "b", BOARD) as vb:
        yield vb


def _lib_files(port: str) -> str:
    s = Session(port)
    try:
        return s.exec("import os\ntry:\n print(sorted(os.listdir('/lib')))\nexcept OSError:\n print('none')")
    finally:
        s.close()


def test_deploy_refuses_a_romfs_or_lib_deploy_before_writing(frozen_board):
    """Code written to the romfs partition or /lib would never run (.frozen comes first on sys.path)."""
    port = frozen_board.port
    for layout, where in (("romfs", "/rom/lib"), ("lib", "/lib")):
        r = ct("deploy", "--board", BOARD, "--port", port, "--layout", layout, "--no-restart")
        assert r.returncode == 3, r.stdout + r.stderr
        assert f"runs its code from the image (frozen), not from {where}" in r.stderr, r.stderr
        assert "deploy without --layout" in r.stderr and "flash a new image" in r.stderr
        assert "ROMFS image deployed" not in r.stdout and "copying" not in r.stdout
    assert "clockterm" not in _lib_files(port)


def test_deploy_refuses_an_image_that_carries_other_code(frozen_board):
    """An image built from other code than lib/ here: its boot.py, main.py and board.json could not be
    trusted to suit it, so nothing is written and the way out is named. The board reports the id of its
    code; a clockterm_code.py at the flash root ('' first on sys.path) stands in for an older image."""
    port = frozen_board.port
    _on_board(port, "with open('/clockterm_code.py', 'w') as f:\n f.write('ID = \"feedfacecafe\"')", reset=False)
    r = ct("deploy", "--board", BOARD, "--port", port, "--no-restart")
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"carries other code (feedfacecafe) than this repository's lib/ ({bundle.code_id()})" in r.stderr
    assert "clockterm flash --keep-data" in r.stderr
    assert "   /main.py" not in r.stdout
    r = ct("check", "--port", port, "--no-restart")
    assert f"code feedfacecafe (lib/ here: {bundle.code_id()})" in r.stdout, r.stdout
    _on_board(port, "import os\nos.remove('/clockterm_code.py')")  # the reset forgets the module
    r = ct("deploy", "--board", BOARD, "--port", port, "--no-restart")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "layout image" in r.stdout and "   /main.py" in r.stdout and "all 3 files match" in r.stdout


def test_a_terminal_on_the_image_names_its_code(tmp_path):
    """The status document (STATUS, GET /api/v1/status, check) says which code the image carries."""
    if not FROZEN:
        pytest.fail("needs the unix port with the code frozen in: make frozen-test")
    import json

    from clockterm_host.defaults import default_config
    from clockterm_host.runner import Terminal
    from clockterm_host.sim import free_port

    cfg = default_config("sim")
    cfg["sim"]["control_port"] = free_port()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    t = Terminal(tmp_path / "config.json", tmp_path / "state").start()
    try:
        assert t.status()["code"] == bundle.code_id()
    finally:
        t.stop()
