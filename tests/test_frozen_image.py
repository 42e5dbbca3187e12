"""The deployed layout: a board whose image carries the terminal's code frozen in (the virtual board on the
unix port built by firmware/unix/build.sh). `make frozen-test` runs these; without that interpreter they
fail (they are not part of `make test`, which has no way to build it)."""

from __future__ import annotations

import pytest
from clockterm_host import bundle, deploy, vboard
from clockterm_host.device import Session
from test_technician import BOARD, FROZEN, _on_board, ct

pytestmark = pytest.mark.frozen
_REAL_ID = bundle.code_id()  # lib/'s id (one test patches bundle.code_id)


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
        assert f"carries the terminal's code (frozen, code {bundle.code_id()}), which comes before {where}" \
            in r.stderr, r.stderr
        assert "Deploy without --layout" in r.stderr and "clockterm flash --keep-data" in r.stderr
        assert "ROMFS image deployed" not in r.stdout and "copying" not in r.stdout
    assert "clockterm" not in _lib_files(port)


def test_deploy_refuses_an_image_that_carries_other_code(frozen_board, monkeypatch, capsys):
    """An image built from other code than lib/ here: its boot.py, main.py and board.json could not be
    trusted to suit it, so nothing is written and the way out is named. (lib/ here stands in as other
    code: the image's id is what the board reports, from the image alone.)"""
    port = frozen_board.port
    # A package at the flash root whose code_id claims lib/'s id cannot pass for the image's code
    _on_board(port, "import os\nos.mkdir('/clockterm')\nopen('/clockterm/__init__.py', 'w').close()\n"
              "with open('/clockterm/code_id.py', 'w') as f:\n f.write('ID = \"feedfacecafe\"')", reset=False)
    monkeypatch.setattr(bundle, "code_id", lambda: "feedfacecafe")
    assert deploy.deploy(BOARD, port, restart=False) == 3
    err = capsys.readouterr().err
    assert f"carries other code ({_REAL_ID}) than this repository's lib/ (feedfacecafe)" in err, err
    assert "clockterm flash --keep-data" in err
    assert _root_hash(port, "/main.py") is None  # nothing written
    monkeypatch.undo()
    _on_board(port, "import os\nfor n in ('__init__', 'code_id'):\n os.remove('/clockterm/%s.py' % n)\n"
              "os.rmdir('/clockterm')", reset=False)
    r = ct("deploy", "--board", BOARD, "--port", port, "--no-restart")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "layout image" in r.stdout and "   /main.py" in r.stdout and "all 3 files match" in r.stdout


def test_check_on_a_board_just_flashed_and_what_it_leaves(frozen_board):
    """Nothing deployed yet: the check names the image's code and what to do. Asking the image alone
    for its id leaves the board's sys.path and imported modules as they were."""
    port = frozen_board.port
    state = ("import sys, clockterm.app\nprint(sys.path, sorted(k for k in sys.modules if k.startswith('clockterm')),"
             " id(sys.modules['clockterm.code_id']))")
    s = Session(port)
    try:
        before = s.exec(state)
    finally:
        s.close()
    r = ct("check", "--port", port, "--no-restart")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"code from the image (frozen), code {_REAL_ID} (this repository's lib/)" in r.stdout, r.stdout
    assert "deploy     nothing deployed: no /board.json (clockterm deploy writes it)" in r.stdout
    s = Session(port)
    try:
        after = s.exec(state)
    finally:
        s.close()
    assert after == before and "'.frozen'" in before


def _root_hash(port: str, path: str) -> str | None:
    s = Session(port)
    try:
        return s.hashes([path])[path]
    finally:
        s.close()


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
