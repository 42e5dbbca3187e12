"""The technician's path on a virtual board (unix port on a socat pty, driven by mpremote): deploy,
provision, check, recover, as docs/technician.md walks it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clockterm_host import REPO, bundle, deploy, vboard
from clockterm_host.central import start_background
from clockterm_host.device import Session, local_files
from clockterm_host.sntp_server import SntpServer

BOARD = "m5stack-atom-wiegand"
CLI = str(Path(sys.executable).parent / "clockterm")
# make frozen-test: the virtual board runs the unix port with the code frozen in, as the pinned image does
FROZEN = bool(os.environ.get("CLOCKTERM_FROZEN"))


def ct(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, input=input, timeout=timeout)


def mpremote(port: str, *args: str) -> subprocess.CompletedProcess:
    """mpremote on a board maybe just reset: a Session stops the app first (mpremote sends one Ctrl-C, which
    a board still booting reads later at its REPL: main.py would have run on)."""
    Session(port).close()
    return subprocess.run([sys.executable, "-m", "mpremote", "connect", port, *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A virtual board, the reference central and a local SNTP server; the bundle deployed (twice) and the
    terminal provisioned with a registration at the central."""
    d = tmp_path_factory.mktemp("lab")
    central = start_background(d / "central", devices="")
    sntp = SntpServer().start()
    (d / "admin.token").write_text(central.admin_token + "\n")  # as the central made it in its state folder
    (d / "wifi").write_text("wifi-secret-pw\n")
    vb = vboard.VirtualBoard(d / "board", BOARD).start()
    lab = {"dir": d, "central": central, "sntp": sntp, "vb": vb}
    try:
        lab["deploy"] = [ct("deploy", "--board", BOARD, "--port", vb.port),
                         ct("deploy", "--board", BOARD, "--port", vb.port, "--no-restart")]
        lab["provision"] = ct(
            "provision", "--port", vb.port, "--board", BOARD, "--device-id", "vb-1", "--central", central.url,
            "--ca", str(central.ca_path), "--register", "--admin", central.admin_url,
            "--admin-token-file", str(d / "admin.token"), "--wifi-ssid", "lab", "--wifi-password-file", "-",
            "--sntp", "127.0.0.1", "--sntp-port", str(sntp.port), "--token", "monitor:read", "--token", "ops:admin",
            "--tz", "America/New_York", input="wifi-secret-pw\n")
        yield lab
    finally:
        vb.stop()
        sntp.stop()
        central.stop()


def _check(port: str, until: str, timeout: float = 60) -> str:
    """`clockterm check --port` until its screen matches `until`; the last screen. Each check restarts the
    terminal, so the next comes only after the time a terminal needs to sync its clock."""
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(6)
        r = ct("check", "--port", port)
        if re.search(until, r.stdout) or time.monotonic() > deadline:
            return r.stdout + r.stderr


def test_deploy_provision_check_on_the_virtual_board(lab):
    vb, central = lab["vb"], lab["central"]
    r = lab["deploy"][0]
    assert r.returncode == 0, r.stdout + r.stderr
    n = int(re.search(r"all (\d+) files match", r.stdout).group(1))
    if FROZEN:  # the image's code as it is, and the three files beside it
        assert n == 3 and "layout image" in r.stdout and "ROMFS" not in r.stdout, r.stdout
        assert "the board runs the code from the image (frozen)" in r.stdout
    else:
        assert n == len(list((REPO / "build/device" / BOARD / "lib").rglob("*.mpy"))) + 3
        assert "ROMFS image deployed" in r.stdout
    # Again: nothing to write, every hash checked all the same.
    r = lab["deploy"][1]
    assert r.returncode == 0 and "   /main.py" not in r.stdout, r.stdout + r.stderr
    assert FROZEN or "already holds this image" in r.stdout

    r = lab["provision"]
    assert r.returncode == 0, r.stdout + r.stderr
    tokens = dict(re.findall(r"^  (\w+)\s+(?:read|admin)\s+(\S+)$", r.stdout, re.M))
    assert set(tokens) == {"monitor", "ops"}
    assert central.store.device("vb-1") is not None  # registered: credentials on both sides
    cfg = json.loads(mpremote(vb.port, "resume", "cat", ":/config.json").stdout)
    assert cfg["central"]["client_secret"] == central.store.device("vb-1")["secret"]
    assert cfg["tz"] == "EST5EDT,M3.2.0,M11.1.0"
    assert cfg["network"]["wifi_password"] == "wifi-secret-pw"
    stored = {t["name"]: t for t in cfg["endpoint"]["tokens"]}
    for name, tok in tokens.items():
        assert stored[name]["sha256"] == hashlib.sha256(tok.encode()).hexdigest()
        assert tok not in json.dumps(cfg)  # only the hash is kept
    assert stored["ops"]["scopes"] == ["read", "admin"]

    out = _check(vb.port, r"attention  none")
    where = (f"code from the image (frozen), code {bundle.code_id()} (this repository's lib/)" if FROZEN
             else "code from /rom/lib")
    assert "terminal   vb-1 on m5stack-atom-wiegand" in out and where in out, out
    assert "attention  none" in out, out
    # A file changed on the board behind our back is put right by the next deploy.
    _on_board(vb.port, "with open('/main.py','w') as f:\n f.write('print(1)')", reset=False)
    r = ct("deploy", "--board", BOARD, "--port", vb.port)
    assert r.returncode == 0 and "   /main.py (120 bytes)" in r.stdout, r.stdout


def _flash_state(vb) -> str:
    r = ct("recover", "status", "--port", vb.port)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _on_board(port: str, code: str, reset: bool = True) -> None:
    # Run after a soft reset (a fresh interpreter, boot.py run, no app), as clockterm's commands write: on
    # the virtual board the session's Ctrl-C can land inside LittleFS and leave its state half-way
    # (docs/development.md, "The virtual board's Ctrl-C")
    s = Session(port)
    s.soft_reset()
    s.exec(code)
    s.restart() if reset else s.close()


def test_recover_from_a_crash_loop_and_a_broken_config(lab):
    vb = lab["vb"]
    # Three crashes in a row: the terminal boots into safe mode, the REPL free.
    _on_board(vb.port, "with open('/crashes','w') as f:\n f.write('3')")
    time.sleep(1)
    out = ct("check", "--port", vb.port, "--no-restart").stdout
    assert "app        not running" in out and "SAFE MODE: crash loop" in out, out
    assert "SAFE MODE (3 crashes in a row)" in (vb.root / "console.log").read_text(errors="replace")
    r = ct("recover", "leave-safe-mode", "--port", vb.port)
    assert r.returncode == 0 and "crash count 3 -> 0" in r.stdout, r.stdout + r.stderr
    assert "attention  none" in _check(vb.port, r"attention  none")

    # A broken config: the board keeps the last good one in force and says so; restore-config ends it.
    _on_board(vb.port, "with open('/config.json','w') as f:\n f.write('{\"version\": 1')")
    time.sleep(1)
    out = _check(vb.port, r"REFUSED")
    assert "config     REFUSED, last good in force: config: not valid JSON" in out, out
    r = ct("recover", "restore-config", "--port", vb.port)
    assert r.returncode == 0 and "last good config is in force again" in r.stdout, r.stderr
    assert re.search(r"^config +ok$", _flash_state(vb), re.M)
    assert "config     ok" in _check(vb.port, r"config     ok")

    # The journal holds nothing unsent: a reset needs no --force, and seqs carry on above the old ones.
    old_id = re.search(r"^journal +(\w+):", _flash_state(vb), re.M).group(1)
    r = ct("recover", "reset-journal", "--port", vb.port)
    assert r.returncode == 0 and f"journal {old_id} erased; new journal" in r.stdout, r.stdout + r.stderr
    assert re.search(r"^journal +(\w+):", _flash_state(vb), re.M).group(1) != old_id


def test_a_technicians_ctrl_c_holds_the_running_watchdog_back(lab):
    # The watchdog cannot be stopped once the app started it: stopped by a session's Ctrl-C, the app gives
    # it an hour, so that the board is not reset under the technician (the board's would bite 8 s on)
    vb = lab["vb"]
    wdt = vb.root / "wdt"  # the virtual board's watchdog timeout while it runs
    Session(vb.port).restart()
    deadline = time.monotonic() + 30
    while not (wdt.exists() and wdt.read_text().strip() == "8000"):  # the board config's watchdog_ms
        assert time.monotonic() < deadline, "the terminal never started its watchdog"
        time.sleep(0.2)
    seen = (vb.root / "console.log").stat().st_size
    try:
        r = ct("check", "--port", vb.port, "--no-restart")
        assert r.returncode in (0, 1) and "terminal   vb-1" in r.stdout, r.stdout + r.stderr
        assert wdt.read_text().strip() == "3600000"
        time.sleep(10)
        with open(vb.root / "console.log", "rb") as f:
            f.seek(seen)
            assert b"task_wdt" not in f.read()
    finally:
        Session(vb.port).restart()


def test_the_safe_mode_pin_held_at_boot_is_said_and_not_cleared(lab):
    vb = lab["vb"]
    vb.hold_pins_low([39])  # the ATOM's front button (board config: safe_mode_pin 39)
    try:
        vb.stop()
        vb.start()
        time.sleep(1.5)
        assert "safe mode      YES (safe-mode pin held)" in _flash_state(vb)
        r = ct("recover", "leave-safe-mode", "--port", vb.port)
        assert r.returncode == 2 and "release the safe-mode button" in r.stderr
    finally:
        vb.hold_pins_low([])
        vb.stop()
        vb.start()


@pytest.mark.romfs_layout
def test_lib_layout_copies_by_hash_and_removes_stale_files(tmp_path):
    vboard.create(tmp_path / "b", BOARD, romfs=False)  # an image without ROMFS: no romfs partition
    with vboard.VirtualBoard(tmp_path / "b", BOARD) as vb:
        r = ct("deploy", "--board", BOARD, "--port", vb.port)
        assert r.returncode == 2 and "no ROMFS partition" in r.stderr and "--layout lib" in r.stderr
        r = ct("deploy", "--board", BOARD, "--port", vb.port, "--layout", "lib", "--no-restart")
        assert r.returncode == 0, r.stdout + r.stderr
        total = int(re.search(r"(\d+) of (\d+) files copied", r.stdout).group(2))
        assert re.search(rf"{total} of {total} files copied", r.stdout)
        _on_board(vb.port, "with open('/lib/clockterm/old.mpy','w') as f:\n f.write('x')\n"
                  "with open('/lib/clockterm/app.mpy','wb') as f:\n f.write(b'M')", reset=False)
        out = REPO / "build" / "device" / BOARD
        files = local_files(out, "lib")
        assert deploy.verify(vb.port, 115200, files) == ["/lib/clockterm/app.mpy: differs on the board"]
        files["/lib/clockterm/gone.mpy"] = out / "boot.py"
        assert "/lib/clockterm/gone.mpy: missing on the board" in deploy.verify(vb.port, 115200, files)
        r = ct("deploy", "--board", BOARD, "--port", vb.port, "--layout", "lib")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "removing 1 stale files" in r.stdout and "1 of" in r.stdout and "/lib/clockterm/app.mpy" in r.stdout
        ls = mpremote(vb.port, "resume", "ls", ":/lib/clockterm").stdout
        assert "old.mpy" not in ls and "app.mpy" in ls


@pytest.mark.romfs_layout
def test_deploy_fails_when_the_board_would_not_run_what_it_wrote(tmp_path):
    """Every file can be right and the deploy still change nothing: a clockterm package copied to the flash
    root ('' comes first on sys.path) is imported before /rom/lib, an empty clockterm folder there hides
    the code, and code in the romfs partition comes before a /lib deploy. The deploy asks the board where
    its code loads from and fails, naming the way out; once the stray package is gone, it succeeds."""
    vboard.create(tmp_path / "b", BOARD)
    with vboard.VirtualBoard(tmp_path / "b", BOARD) as vb:
        _on_board(vb.port, "import os\nos.mkdir('/clockterm')\n"
                  "for n in ('__init__', 'app'):\n with open('/clockterm/%s.py' % n, 'w') as f:\n  f.write('#')",
                  reset=False)
        r = ct("deploy", "--board", BOARD, "--port", vb.port, "--no-restart")
        assert r.returncode == 3, r.stdout + r.stderr
        assert "runs its code from /, not from /rom/lib" in r.stderr and "remove /clockterm" in r.stderr, r.stderr
        _on_board(vb.port, "import os\nfor n in ('__init__', 'app'):\n os.remove('/clockterm/%s.py' % n)\n"
                  "os.rmdir('/clockterm')", reset=False)
        r = ct("deploy", "--board", BOARD, "--port", vb.port, "--no-restart")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "the board runs the code from /rom/lib" in r.stdout
        # An empty clockterm folder left at the root hides the package altogether
        _on_board(vb.port, "import os\nos.mkdir('/clockterm')", reset=False)
        r = ct("deploy", "--board", BOARD, "--port", vb.port, "--no-restart")
        assert r.returncode == 3 and "cannot import its code" in r.stderr and "remove it" in r.stderr, r.stderr
        _on_board(vb.port, "import os\nos.rmdir('/clockterm')", reset=False)
        # /lib after a ROMFS image: the firmware puts /rom/lib first, so the image's code would still run
        r = ct("deploy", "--board", BOARD, "--port", vb.port, "--layout", "lib", "--no-restart")
        assert r.returncode == 3, r.stdout + r.stderr
        assert "runs its code from /rom/lib, not from /lib" in r.stderr and "--layout romfs" in r.stderr, r.stderr


def test_a_board_that_does_not_answer_is_a_clear_error(tmp_path):
    r = ct("deploy", "--board", BOARD, "--port", str(tmp_path / "ttyNONE"))
    assert r.returncode == 2 and "cannot open" in r.stderr
    r = ct("check", "--port", str(tmp_path / "ttyNONE"))
    assert r.returncode == 2 and "check: cannot open" in r.stderr


# A board that boots slowly (boot.py waits /boot_ms) and then runs its app until a Ctrl-C.
_SLOW_BOOT = b"""import time
try:
    with open('/boot_ms') as f:
        time.sleep_ms(int(f.read()))
except OSError:
    pass
"""
_APP = b"import time\nwhile True:\n    time.sleep_ms(10)\n"


def test_a_session_waits_out_a_board_that_boots(tmp_path):
    # Each session meets a board just reset: its first Ctrl-C lands while the interpreter starts, in boot.py
    # (main.py then runs all the same: the app holds the REPL) or in main.py, by how long boot.py takes and
    # when the session comes; it stops the app all the same, every time.
    vboard.create(tmp_path / "b", BOARD)
    with vboard.VirtualBoard(tmp_path / "b", BOARD) as vb:
        s = Session(vb.port)
        s.write("/boot.py", _SLOW_BOOT)
        s.write("/main.py", _APP)
        for boot_ms, after in ((0, 0), (300, 0), (600, 0.2), (150, 0.05), (1000, 0.3), (0, 0.1), (300, 0.15)):
            s.write("/boot_ms", str(boot_ms).encode())
            s.restart()
            time.sleep(after)  # when the technician comes (not a wait for the board)
            s = Session(vb.port)
            assert s.exec("print('up', 6 * 7)").strip() == "up 42"
        s.close()


def test_ctrl_c_while_the_board_boots_stops_its_programs_and_never_the_interpreter(tmp_path):
    # Ctrl-C over and over from the reset on: before boot.py (the interpreter starting) and between the
    # programs it reaches the REPL as a byte; in boot.py and in main.py it stops the program. The
    # interpreter itself is never hit (the unix port dies of a SIGINT while it starts, at its REPL, or of a
    # second before it took the first): one boot, no restart by the relay.
    vboard.create(tmp_path / "b", BOARD)
    log = tmp_path / "b" / "console.log"
    with vboard.VirtualBoard(tmp_path / "b", BOARD) as vb:
        s = Session(vb.port)
        s.write("/boot.py", _SLOW_BOOT)
        s.write("/main.py", _APP)
        s.write("/boot_ms", b"200")
        for _ in range(3):
            start = log.stat().st_size
            s.t.exec_raw_no_follow("import machine\nmachine.reset()")
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                s.t.serial.write(b"\x03")
                time.sleep(0.003)
            s.t.close()
            s = Session(vb.port)
            boot = log.read_bytes()[start:]
            assert boot.count(b'Type "help()"') == 1, boot
            assert b"soft reboot" not in boot and b"KeyboardInterrupt" not in boot, boot
        s.close()
