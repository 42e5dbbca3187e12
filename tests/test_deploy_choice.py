"""How `clockterm deploy` chooses what to write, from what the board says of its code: the decisions alone,
with the board's answers given (a board whose image carries the code needs the unix port built with it
frozen in, which `make test` cannot build: tests/test_frozen_image.py runs the same on such a board in
`make frozen-test`; tests/test_technician.py runs the ROMFS and /lib paths on a real virtual board)."""

from __future__ import annotations

import pytest
from clockterm_host import bundle, deploy
from recording_board import RecordingBoard

BOARD = "m5stack-atom-wiegand"


class _Board(RecordingBoard):
    """The serial session's part deploy's choice uses, with the board's answer to where its code comes from."""

    def __init__(self, answer: tuple[str, str | None]):
        super().__init__()
        self.answer = answer

    def code_dir(self, s) -> tuple[str, str | None]:
        self.done.append("ask")
        return self.answer


@pytest.fixture
def board(monkeypatch):
    def make(answer):
        b = _Board(answer)
        monkeypatch.setattr(deploy, "Session", b.Session)
        monkeypatch.setattr(deploy, "code_dir", b.code_dir)
        return b
    return make


@pytest.mark.parametrize("answer, layout, chosen", [
    (("/rom/lib", None), "auto", "romfs"),  # a development board: code in its romfs partition
    (("!no module named 'clockterm'", None), "auto", "romfs"),  # a development board just flashed
    (("/lib", None), "lib", "lib"),
    ((deploy.IMAGE, "MINE"), "auto", "image"),  # a terminal's image with this checkout's code
    (("/", "MINE"), "auto", "image"),  # ... with a package at the flash root hiding it: said after the write
])
def test_what_is_written_follows_the_image(board, answer, layout, chosen):
    mine = bundle.code_id()
    b = board(tuple(mine if x == "MINE" else x for x in answer))
    assert deploy._choose("p", 115200, layout) == (chosen, None)
    # asked of a fresh interpreter, not of what the stopped app imported
    assert b.done == ["session", "soft reset", "ask", "close"]


@pytest.mark.parametrize("layout, where", [("romfs", "/rom/lib"), ("lib", "/lib")])
def test_code_for_a_terminals_image_is_refused_before_writing(board, layout, where):
    board((deploy.IMAGE, bundle.code_id()))
    chosen, refused = deploy._choose("p", 115200, layout)
    assert f"which comes before {where} on sys.path" in refused and "would never run" in refused
    assert "Deploy without --layout" in refused


def test_an_image_of_other_code_is_refused_and_the_terminal_goes_on(board, capsys):
    b = board((deploy.IMAGE, "0123456789ab"))
    assert deploy.deploy(BOARD, "p") == 3
    err = capsys.readouterr().err
    assert f"carries other code (0123456789ab) than this repository's lib/ ({bundle.code_id()})" in err
    assert "clockterm flash --keep-data" in err
    assert b.restarts == 1  # nothing written; the terminal was stopped to ask, and starts again
    b = board((deploy.IMAGE, "0123456789ab"))
    assert deploy.deploy(BOARD, "p", restart=False) == 3
    assert b.restarts == 0  # --no-restart: left at its REPL
