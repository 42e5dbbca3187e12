"""`clockterm sim` as a person meets it: type a badge, see the answer and the display line, and the punch
arrives at the local central API once the local time server has synced the clock."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time


class Session:
    def __init__(self, state, *extra: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "clockterm_host.cli", "sim", "--state", str(state), *extra],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()}"
            assert self.proc.poll() is None, self.text()
            time.sleep(0.05)

    def type(self, line: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()


def test_sim_accepts_typed_badges_and_delivers_to_central(tmp_path):
    s = Session(tmp_path)
    try:
        s.wait_for("Type a badge id")
        s.type("0CAFE123")
        s.wait_for("> OK 1 ")
        s.type("0CAFE123")
        s.wait_for("> DENY duplicate")
        s.type("not a badge")
        s.wait_for("> ERR")
        assert "[display]" in s.text() and "UNKNOWN BADGE 0CAFE123" in s.text()
        deadline = time.monotonic() + 60
        while '"punches_stored": 1' not in s.text():
            assert time.monotonic() < deadline, s.text()
            s.type("central")
            time.sleep(0.5)
        # Once synced, the terminal pulls the demo roster from the local central: names on the display.
        deadline = time.monotonic() + 60
        while '"badges": 3' not in s.text():
            assert time.monotonic() < deadline, s.text()
            s.type("status")
            time.sleep(0.5)
        s.type("04A1B2C3")
        s.wait_for("> OK 2 ")
        assert re.search(r"\[display\] IN \d\d:\d\d Ada L\.  \[beep:ok\]", s.text()), s.text()
        assert s.proc.stdin
        s.proc.stdin.close()
        assert s.proc.wait(timeout=30) == 0, s.text()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def test_sim_fleet_taps_each_terminal_and_shows_the_panel(tmp_path):
    s = Session(tmp_path, "--terminals", "3")
    try:
        s.wait_for("'N BADGE' taps terminal N")
        s.type("2 0CAFE123")
        s.wait_for("> [sim-002] OK 1 ")
        s.type("3 0CAFE124")
        s.wait_for("> [sim-003] OK 1 ")
        s.type("0CAFE125")  # a bare badge: terminal 1
        s.wait_for("> [sim-001] OK 1 ")
        s.type("7 0CAFE126")
        s.wait_for("> no terminal 7 (1..3)")
        deadline = time.monotonic() + 60
        while "central: 3 punches stored" not in s.text():  # printed as the panel changes
            assert time.monotonic() < deadline, s.text()
            time.sleep(0.5)
        s.type("panel")
        s.wait_for("central: 3 punches stored\n")
        panel = s.text().rsplit(" terminal  ", 1)[1]
        rows = re.findall(r"^ (sim-00\d) +(.*?) +(SYNCED|UNSYNCED|STALE|DOWN) +(\d+)$", panel, re.M)
        assert [r[0] for r in rows] == ["sim-001", "sim-002", "sim-003"], panel
        assert all(r[2] == "SYNCED" and r[3] == "0" for r in rows), panel
        # Each row shows its terminal's display: the last result, or the idle screen that follows it.
        assert all(re.fullmatch(r"\d\d:\d\d (SYNCED \| backlog 0|UNKNOWN BADGE 0CAFE12\d)", r[1]) for r in rows), panel
        assert (tmp_path / "console-2.log").read_text().count("UNKNOWN BADGE 0CAFE123") == 1
        s.proc.stdin.close()
        assert s.proc.wait(timeout=30) == 0, s.text()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
