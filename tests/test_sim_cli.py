"""`clockterm sim` as a person meets it: type a badge, see the answer and the display line."""

from __future__ import annotations

import subprocess
import sys
import time


def test_sim_accepts_typed_badges(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "clockterm_host.cli", "sim", "--state", str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdin and proc.stdout
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Type a badge id"):
                break
            assert time.monotonic() < deadline, "".join(lines)
        proc.stdin.write("04A1B2C3\n04A1B2C3\nnot a badge\nstatus\n")
        proc.stdin.close()
        lines.append(proc.stdout.read())
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    assert proc.returncode == 0, text
    assert "SNTP server on 127.0.0.1:" in text
    assert "> OK 1 " in text
    assert "> DENY duplicate" in text
    assert "> ERR bad command" in text or "> ERR bad badge" in text
    assert "[display]" in text and "UNKNOWN BADGE 04A1B2C3" in text
    assert '"journal"' in text
