"""The virtual board: a terminal's ESP32 stood in for by the MicroPython unix port on a pty, for mpremote.

    python -m clockterm_host.vboard --board esp32-devkitc-rc522 --dir vb/ --port vb/tty
    mpremote connect vb/tty ...          # or: clockterm deploy --board ... --port vb/tty

What it is: socat makes the pty (`--port`, a symlink to /dev/pts/N) and runs this module's relay, which runs
the unix port with tools/clockterm_host/vboard_device/vboot.py and passes bytes both ways (vboot.py also
tells it, on a pipe of their own, when boot.py or main.py starts and ends). The board's flash is a folder
(`<dir>/flash`): the partition table of the board (partitions.bin, as `clockterm flash` writes it) and one
file per data partition (romfs.bin, journal.bin, vfs.bin: the filesystem, LittleFS as on the board, mounted
at /). What the board prints is also appended to `<dir>/console.log`. `<dir>/hw/pins_low` lists pins held
low at power-up (the safe-mode button).

What it does as the firmware does: ROMFS mounted at /rom when the partition holds an image, and
`vfs.rom_ioctl` for `mpremote romfs deploy`; boot.py then main.py at a reset; Ctrl-C interrupts boot.py or
main.py while it runs (KeyboardInterrupt; a second Ctrl-C in the same run is dropped), and at any other time
(the interpreter starting, between the two, at the REPL and in code run from it) goes to the REPL as a
character: a Ctrl-C that comes early in a boot does not stop main.py, and bytes that come while a reset
takes place may be lost (device.Session tries again); a soft reset (Ctrl-D in the raw REPL, or at the
friendly prompt) starts a fresh interpreter, printing "soft reboot" and running boot.py only from the raw
REPL, both from the friendly one; machine.reset() is a hard reset; the task watchdog (machine.WDT) starts at
its first WDT(), takes a new timeout from another, outlives a soft reset, ends at a hard reset, and resets
the board when not fed in time (printing task_wdt's line; `<dir>/wdt` holds its timeout while it runs).
What it does not: radio, pins and buses have nothing attached (a reader never reads a badge), the heap is
the host's (the board's heap plus the ROMFS image it holds in RAM: use `make bench` for heap figures), and
it does not speak esptool's protocol (`clockterm flash` is tested against image files). Unlike the board, a Ctrl-C that
interrupts main.py is raised at once wherever the interpreter is, even inside LittleFS (the unix port's
SIGINT handler): the filesystem's in-memory state can be left half-way, so write after a soft reset (as
clockterm's commands do: docs/development.md).
"""

from __future__ import annotations

import argparse
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import bundle, partitions

DEVICE_DIR = Path(__file__).resolve().parent / "vboard_device"
_REPL_BANNER = b'Type "help()" for more information.'
_RESET_EXIT = 42  # vboard_device/machine.py: machine.reset()
_SOFT_EXIT = 43  # machine.soft_reset()
_SOFT_CAUSE, _WDT_CAUSE = 5, 3  # machine.SOFT_RESET, machine.WDT_RESET
_CTRL_A, _CTRL_B, _CTRL_C, _CTRL_D = b"\x01", b"\x02", b"\x03", b"\x04"
_HEAP_SLACK_KB = 48  # the emulation modules and the REPL, on top of the board's heap and the ROMFS image


def create(root: Path, board: str, romfs: bool = True) -> Path:
    """A blank virtual board for `board` (as after `clockterm flash`): partition table, erased partitions."""
    cfg = bundle.board_config(board)
    table = partitions.layout(cfg, romfs=romfs)
    flash = Path(root) / "flash"
    flash.mkdir(parents=True, exist_ok=True)
    (Path(root) / "hw").mkdir(exist_ok=True)
    (flash / "partitions.bin").write_bytes(partitions.to_bytes(table))
    for p in table:
        f = flash / f"{p.name}.bin"
        if p.type == "data" and not (f.exists() and f.stat().st_size == p.size):
            with open(f, "wb") as out:
                out.write(b"\xff" * p.size)
    return flash


def _heap_kb(root: Path, board: str) -> int:
    flash = Path(root) / "flash"
    table = partitions.from_bytes((flash / "partitions.bin").read_bytes())
    romfs = next((p.size for p in table if p.name == "romfs"), 0)
    return bundle.heap_kb(bundle.board_config(board).get("heap", "100K")) + romfs // 1024 + _HEAP_SLACK_KB


class Relay:
    """Runs the interpreter and relays bytes between it and the pty (this process's stdin/stdout)."""

    def __init__(self, root: Path, board: str):
        self.root = Path(root).resolve()
        self.heap_kb = _heap_kb(self.root, board)
        self.raw = False  # the host's last mode switch: Ctrl-A (raw REPL) or Ctrl-B (friendly)
        self.at_repl = False  # the interpreter shows its REPL (no program running)
        self.running = False  # boot.py or main.py runs (vboot.py said "P", and no "I" since)
        self.interrupted = False  # the SIGINT of this run is sent
        # The task watchdog, kept here as the chip keeps it: machine.WDT() starts it or sets a new timeout
        # ("W<ms>\n" from vboard_device/machine.py), feed() feeds it ("F"); it outlives a soft reset, a hard
        # reset ends it, and not fed within its timeout it resets the board (reset cause WDT_RESET)
        self.wdt_ms: int | None = None
        self.wdt_fed = 0.0
        self._word: bytes | None = None  # the digits of a "W" being read
        self.proc: subprocess.Popen | None = None
        self.link: tuple[int, int] | None = None  # vboot.py's "P"/"I" (read), our answers (write)
        self.console = open(self.root / "console.log", "ab")  # noqa: SIM115 - lives as long as the relay

    def _spawn(self, mode: str, reset_cause: int) -> None:
        tell_r, tell_w = os.pipe()
        answer_r, answer_w = os.pipe()
        env = dict(os.environ, VBOARD_FLASH=str(self.root / "flash"), VBOARD_HW=str(self.root / "hw"),
                   VBOARD_DEVICE=str(DEVICE_DIR), VBOARD_MODE=mode, VBOARD_RESET=str(reset_cause),
                   VBOARD_LINK=f"{tell_w},{answer_r}")
        env.pop("MICROPYPATH", None)
        self.proc = subprocess.Popen(
            [bundle.tool("micropython"), "-X", f"heapsize={self.heap_kb}K", "-i", str(DEVICE_DIR / "vboot.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, bufsize=0,
            pass_fds=(tell_w, answer_r))
        os.close(tell_w)
        os.close(answer_r)
        self.link = (tell_r, answer_w)
        self.at_repl = self.running = self.interrupted = False
        self._seen = b""
        if mode == "raw":
            self.proc.stdin.write(b"\r" + _CTRL_A)  # it comes back in the raw REPL, as the firmware does

    def _out(self, data: bytes) -> None:
        os.write(1, data)
        self.console.write(data)
        self.console.flush()

    def _from_host(self, data: bytes) -> None:
        for i in range(len(data)):
            c = data[i:i + 1]
            if c == _CTRL_A:
                self.raw = True
            elif c == _CTRL_B:
                self.raw = False
            elif c == _CTRL_C and self._program_runs():
                # KeyboardInterrupt in boot.py or main.py, as on the board; only one per run: a second
                # SIGINT before the interpreter took the first ends it (the unix port's way out)
                if not self.interrupted:
                    self.proc.send_signal(signal.SIGINT)
                    self.interrupted = True
                continue
            elif c == _CTRL_D and self.at_repl and not self.raw:
                self._restart("main", _SOFT_CAUSE, b"MPY: soft reboot\r\n")  # the unix port ignores it on a pipe
                continue
            try:
                self.proc.stdin.write(c)
            except BrokenPipeError:
                pass

    def _program_runs(self) -> bool:
        # The latest word from vboot.py first: a program that has just started or ended.
        if select.select([self.link[0]], [], [], 0)[0]:
            self._from_link(os.read(self.link[0], 64))
        return self.running

    def _from_link(self, data: bytes) -> None:
        for c in data:
            if self._word is not None:
                if c == ord("\n"):
                    self.wdt_ms, self.wdt_fed, self._word = int(self._word), time.monotonic(), None
                    (self.root / "wdt").write_text(f"{self.wdt_ms}\n")
                else:
                    self._word += bytes([c])
            elif c == ord("W"):
                self._word = b""
            elif c == ord("F"):
                self.wdt_fed = time.monotonic()
            elif c == ord("P"):
                self.running, self.interrupted = True, False
            elif c == ord("I") and self.running:
                # Answered once we no longer send SIGINT: vboot.py takes a KeyboardInterrupt until it
                # reads this (after it, the REPL would die of one).
                self.running = False
                os.write(self.link[1], b".")

    def _from_board(self, data: bytes) -> None:
        self._out(data)
        if not self.at_repl:
            self._seen = (self._seen + data)[-200:]
            if _REPL_BANNER in self._seen:
                self.at_repl = True

    def _restart(self, mode: str, cause: int, say: bytes) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out(say)
        self._word = None
        if cause != _SOFT_CAUSE:
            self.wdt_ms = None  # a hard reset (or the watchdog's own) stops the watchdog
            (self.root / "wdt").unlink(missing_ok=True)
        for fd in (self.proc.stdout.fileno(), self.link[0]):
            if fd in self.sel.get_map():
                self.sel.unregister(fd)
        self.proc.stdout.close()
        self.proc.stdin.close()
        os.close(self.link[0])
        os.close(self.link[1])
        self._spawn(mode, cause)
        self._watch()

    def _watch(self) -> None:
        self.sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ, "board")
        self.sel.register(self.link[0], selectors.EVENT_READ, "link")

    def run(self) -> int:
        (self.root / "wdt").unlink(missing_ok=True)  # power on: no watchdog
        self._spawn("main", 1)
        self.sel = selectors.DefaultSelector()
        self.sel.register(0, selectors.EVENT_READ, "host")
        self._watch()
        while True:
            bite = self._bite_at()
            wait = 0.5 if bite is None else min(0.5, max(0.0, bite - time.monotonic()))
            for key, _ in self.sel.select(timeout=wait):
                if self.sel.get_map().get(key.fd) is not key:
                    continue  # a restart in this round replaced it
                data = os.read(key.fd, 4096)
                if key.data == "host":
                    if not data:
                        self.proc.kill()
                        return 0
                    self._from_host(data)
                elif key.data == "link":
                    if not data:
                        self.sel.unregister(key.fd)  # closed: nothing more to hear until the next start
                    self._from_link(data)
                elif data:
                    self._from_board(data)
            code = self.proc.poll()
            if code is not None:
                self._after_exit(code)
            elif (bite := self._bite_at()) is not None and time.monotonic() > bite:  # (fed meanwhile?)
                # (the ESP32's words, then its reset)
                self._restart("main", _WDT_CAUSE, b"\r\nE (wdt) task_wdt: Task watchdog got triggered.\r\n")

    def _bite_at(self) -> float | None:
        # When the watchdog resets the board unless fed before (time.monotonic()); None: not running
        return None if self.wdt_ms is None else self.wdt_fed + self.wdt_ms / 1000

    def _after_exit(self, code: int) -> None:
        rest = self.proc.stdout.read()
        if rest:
            self._out(rest)
        if code == _RESET_EXIT:
            self._restart("main", 2, b"")  # machine.reset(): a hard reset, boot.py and main.py
        elif code == _SOFT_EXIT or not self.raw:
            self._restart("main", _SOFT_CAUSE, b"MPY: soft reboot\r\n")
        else:
            self._restart("raw", _SOFT_CAUSE, b"soft reboot\r\n")  # Ctrl-D in the raw REPL: boot.py only


class VirtualBoard:
    """A virtual board on a pty made by socat, for tests and people: start, reset, power cut, stop."""

    def __init__(self, root: Path, board: str):
        self.root = Path(root).resolve()
        self.board = board
        self.port = str(self.root / "tty")
        self.proc: subprocess.Popen | None = None

    @property
    def flash(self) -> Path:
        return self.root / "flash"

    def hold_pins_low(self, pins: list[int]) -> None:
        (self.root / "hw").mkdir(parents=True, exist_ok=True)
        (self.root / "hw" / "pins_low").write_text("".join(f"{p}\n" for p in pins))

    def start(self, timeout: float = 10.0) -> VirtualBoard:
        if not (self.flash / "partitions.bin").exists():
            create(self.root, self.board)
        socat = shutil.which("socat")
        if not socat:
            raise SystemExit("socat not found: run 'make setup' (Debian package socat)")
        relay = [sys.executable, "-m", "clockterm_host.vboard", "--board", self.board, "--dir", str(self.root),
                 "--relay"]
        log = open(self.root / "socat.log", "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        self.proc = subprocess.Popen(
            [socat, f"PTY,link={self.port},rawer", "EXEC:" + " ".join(relay)],
            stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"virtual board did not start: {(self.root / 'socat.log').read_text()}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Pull the plug: socat and the interpreter are killed (a power cut)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        if os.path.lexists(self.port):
            os.unlink(self.port)

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clockterm_host.vboard", description=__doc__.split("\n")[0])
    ap.add_argument("--board", required=True)
    ap.add_argument("--dir", required=True, help="the board's folder (flash/, hw/); made when missing")
    ap.add_argument("--port", help="where the pty appears (default <dir>/tty)")
    ap.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)  # run by socat
    a = ap.parse_args(argv)
    if a.relay:
        return Relay(Path(a.dir), a.board).run()
    vb = VirtualBoard(Path(a.dir), a.board)
    if a.port:
        vb.port = str(Path(a.port).resolve())
    vb.start()
    print(f"virtual {a.board} on {vb.port} (flash in {vb.flash}); Ctrl-C stops it", flush=True)
    try:
        vb.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        vb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
