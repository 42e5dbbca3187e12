"""The host commands that write to a board over its serial port (`provision`, `recover`) do it from a fresh
interpreter: a soft reset first (boot.py run, the app not started), never beside an app that the session's
Ctrl-C stopped half-way with its files open. On the virtual board a Ctrl-C is raised at once, even inside
LittleFS's C code (the unix port's asynchronous KeyboardInterrupt), and a write made after one could be
lost at the next reset; a soft reset throws that interpreter's state away. `deploy` starts the same way
(tests/test_deploy_choice.py). The order of what is done to the board is checked here with a stand-in
session; tests/test_technician.py runs the commands on a virtual board."""

from __future__ import annotations

import pytest
from clockterm_host import provision, recover
from clockterm_host.device import DeviceError
from recording_board import RecordingBoard


@pytest.fixture
def board(monkeypatch):
    def make(**kw):
        b = RecordingBoard(**kw)
        monkeypatch.setattr(recover, "Session", b.Session)
        monkeypatch.setattr("clockterm_host.device.Session", b.Session)  # provision imports it when it writes
        return b
    return make


def test_recover_runs_its_calls_after_one_soft_reset(board):
    b = board()
    t = recover.Target("/dev/ttyUSB0", None)
    assert t.run("status()") == [{"crashes": 0}]
    t.run("clear_crashes()")
    t.end(restart=True)
    assert b.done == ["session", "soft reset", "exec", "exec", "restart"]


def test_recover_does_nothing_on_a_board_that_does_not_come_back(board):
    b = board(reset_fails=True)
    t = recover.Target("/dev/ttyUSB0", None)
    with pytest.raises(DeviceError, match="soft reset"):
        t.run("clear_crashes()")
    assert "exec" not in b.done


def test_provision_writes_after_a_soft_reset_the_config_last(board):
    b = board()
    provision.write_board("/dev/ttyUSB0", {"version": 1}, b"PEM", restart=True)
    assert b.done == ["session", "soft reset", "write /ca.pem", "write /config.json", "restart"]


def test_provision_writes_nothing_when_the_soft_reset_fails(board):
    b = board(reset_fails=True)
    with pytest.raises(DeviceError, match="soft reset"):
        provision.write_board("/dev/ttyUSB0", {"version": 1}, b"PEM")
    assert b.files == {} and b.done == ["session", "soft reset", "close"]
