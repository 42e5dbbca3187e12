"""`clockterm sim` as a person meets it: type a badge, see the answer and the display line, and the punch
arrives at the local central API once the local time server has synced the clock."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time


class Session:
    def __init__(self, state):
        self.proc = subprocess.Popen([sys.executable, "-m", "clockterm_host.cli", "sim", "--state", str(state)],
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
