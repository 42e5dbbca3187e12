"""Issue 5 health end to end on the sim board: safe mode by the pin held at boot (a SAFE_MODE file in the
state folder), safe mode after three crashes in a row (a journal partition that no longer matches the config
makes it crash at every boot), the crash count kept in /flash/crashes of fs.bin, and the watchdog."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import e2e
import mp

SIM_BOARD = json.loads((mp.REPO / "board_configs" / "sim.json").read_text())


def boot(term, timeout: float = 30) -> int:
    """Power the terminal up and wait for the process to end; its exit code."""
    term.start(wait=0)
    assert term.proc is not None
    return term.proc.wait(timeout)


def flash_file(state: Path, name: str, remove: bool = False) -> str | None:
    """Read (or remove) a file of the terminal's LittleFS image fs.bin, as a technician at the REPL would
    (tests/fsimage_mp.py)."""
    kb = SIM_BOARD["flash"]["fs_kb"]
    settings = {"OP": "read", "IMAGE": str(state / "fs.bin"), "BLOCKS": kb * 1024 // 4096, "NAME": name,
                "REMOVE": remove}
    out = mp.mp_json(mp.script("fsimage_mp.py", settings, "main()"))
    assert out is None or isinstance(out, dict)
    out = None if out is None else out["text"]
    assert out is None or isinstance(out, str)
    return out


def test_safe_mode_pin_held_at_boot(tmp_path: Path) -> None:
    term = e2e.terminal(tmp_path, e2e.config(), start=False)
    state = tmp_path / "state"
    state.mkdir()
    (state / "SAFE_MODE").write_text("")
    try:
        assert boot(term) == 4, term.console()
        assert "SAFE MODE" in term.console() and "pin held" in term.console()
        assert "control port on" not in term.console()  # the app never started
        (state / "SAFE_MODE").unlink()  # the pin released: the next power-up runs the terminal
        term.start()
        assert term.tap("04A1B2C3").startswith("OK 1 ")
    finally:
        term.stop()


def test_three_crashes_in_a_row_lead_to_safe_mode(tmp_path: Path) -> None:
    # A board whose journal partition no longer matches its config (here: the flash image is 2 MiB,
    # the config now says 64 KB) cannot build its journal: the app crashes at each boot, the crash is
    # counted on flash and the board resets (exit 1 on the sim).
    first = e2e.config()
    term = e2e.terminal(tmp_path, first, start=False)
    state = tmp_path / "state"
    try:
        term.start()
        assert term.tap("04A1B2C3").startswith("OK 1 ")
        term.kill()
        bad = json.loads(term.config.read_text())
        bad["sim"]["journal_kb"] = 64
        term.config.write_text(json.dumps(bad))
        for n in (1, 2, 3):
            assert boot(term) == 1, term.console()
            assert flash_file(state, "crashes") == str(n)
        assert "expected 65536" in term.console()
        assert boot(term) == 4, term.console()
        assert "SAFE MODE (3 crashes in a row)" in term.console()
        # A good config alone does not leave safe mode: the count is on flash until a technician clears it.
        good = e2e.config()
        good["sim"]["control_port"] = term.control_port
        term.config.write_text(json.dumps(good))
        assert boot(term) == 4
        assert flash_file(state, "crashes", remove=True) == "3"
        term.start()
        assert term.tap("04A1B2C3").startswith("OK 2 ")  # the punch of the first boot is still there
        tasks = term.status()["tasks"]  # the supervised tasks, as STATUS shows them
        assert tasks["sntp"] == {"restarts": 0, "alive": True, "critical": True}, tasks
        assert set(tasks) == {"sntp", "uplink", "control"}, tasks  # (control: the sim's control-port server)
    finally:
        term.stop()


def test_frozen_terminal_is_reset_by_the_watchdog(tmp_path: Path) -> None:
    # SIGSTOP freezes the whole process, event loop included, for longer than watchdog_ms: a hardware
    # watchdog resets such a board. The sim watchdog must do the same once the process runs again.
    term = e2e.terminal(tmp_path, e2e.config())
    try:
        assert term.tap("04A1B2C3").startswith("OK 1 ")
        assert term.proc is not None
        os.kill(term.proc.pid, signal.SIGSTOP)
        time.sleep(SIM_BOARD["watchdog_ms"] / 1000 + 1)
        os.kill(term.proc.pid, signal.SIGCONT)
        try:
            rc = term.proc.wait(5)
        except Exception:
            rc = None
        assert rc == 3, term.console()
        assert (tmp_path / "state" / "wdt_reset").exists()
        term.start()  # the next boot counts the watchdog reset as a crash, and runs
        assert term.tap("04D5E6F7").startswith("OK 2 ")
        term.kill()
        assert flash_file(tmp_path / "state", "crashes") == "1"
    finally:
        term.stop()
