"""A terminal on a serial port, through mpremote's transport: stop the app, run code, move files, restart.

The running terminal holds the REPL. A session takes it the way a technician would: Ctrl-C raises
KeyboardInterrupt in the app, whose run() returns, and main.py ends at the REPL (the terminal stops
clocking while a session is open: a tap meanwhile gets no answer). A board still booting (just reset,
or just powered) does not take a Ctrl-C before its boot.py and main.py run (the REPL reads it later)
and loses what comes during the reset itself: the session sends Ctrl-C and Ctrl-A again every half
second until the raw REPL answers (RAW_REPL_TIMEOUT at most). Code then runs in the raw REPL; the
session ends with a reset, which starts boot.py and main.py again (`restart`), or leaves the REPL as it
is. Files are written through a temporary name and renamed, so a cut cable never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

# Run on the device: sha256 of files (hex, or None for a missing one) and of a partition's first bytes.
HASH_FN = """
import hashlib, binascii, os
def _h(p):
    s = hashlib.sha256()
    b = bytearray(512)
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    with f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            s.update(b if n == 512 else b[:n])
    return binascii.hexlify(s.digest()).decode()
"""


# Board-side lines that tell where the firmware's code comes from.
# `_id`: the id of the code frozen into the image (clockterm.code_id.ID, from firmware/manifest.py:
# bundle.code_id() of the lib/ it was built from), looked up in the image alone (sys.path ['.frozen'],
# the modules imported before set aside and put back), so that no file can pass for it; None when the
# image carries none.
# `_code`: the folder clockterm.app comes from ("/rom/lib", "/lib", "/" for a package at the flash root,
# which '' on sys.path puts first), or "the image (frozen)" (its file names are relative, like a root
# package's, but it is in no folder); `_a` is that module. When it cannot be imported (no code, broken
# code, an empty clockterm folder at the root hiding it, or its file gone since it was imported), `_a` is
# None or stale and `_code` "!" and the error.
CODE_DIR = """
import os, sys
_id = None
_p = sys.path[:]
_s = {}
for _k in list(sys.modules):
    if _k.split('.')[0] == 'clockterm':
        _s[_k] = sys.modules.pop(_k)
try:
    sys.path[:] = ['.frozen']
    from clockterm.code_id import ID as _id
except ImportError:
    pass
finally:
    sys.path[:] = _p
    for _k in list(sys.modules):
        if _k.split('.')[0] == 'clockterm':
            del sys.modules[_k]
    sys.modules.update(_s)
_a = None
try:
    import clockterm.app as _a
    _code = _a.__file__
except Exception as e:  # not there, or broken (a damaged .mpy: ValueError; a syntax error)
    _code = '!' + (str(e) or type(e).__name__)
if _a is not None and '/clockterm/' in _code:
    _code = _code.rsplit('/clockterm/', 1)[0]
elif _a is not None:
    try:
        os.stat(_code)
        _code = '/'
    except OSError:
        _code = 'the image (frozen)' if _id else '!' + _code + ' is gone since it was imported (reset the board)'
"""
RAW_REPL_TIMEOUT = 20.0  # seconds for the raw REPL to answer: a board's boot, slow under load, and then some
_RETRY = 0.5  # seconds between two tries of Ctrl-C, Ctrl-A
_RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"


class DeviceError(RuntimeError):
    """The board did not answer, or the code run on it raised: the message carries its traceback."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Session:
    """One mpremote connection to a board, the app stopped and the raw REPL entered."""

    def __init__(self, port: str, baud: int = 115200):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        try:
            self.t = SerialTransport(port, baudrate=baud)
        except TransportError as e:
            raise DeviceError(f"cannot open {port}: {e}") from None
        try:
            self._enter_raw_repl()
        except (TransportError, DeviceError, OSError) as e:
            self.t.close()
            raise DeviceError(f"{port}: no MicroPython REPL answered ({e})") from None

    def _enter_raw_repl(self, timeout: float = RAW_REPL_TIMEOUT) -> None:
        """mpremote's enter_raw_repl(soft_reset=False), tried again until the board answers: Ctrl-C (stop
        the program), Ctrl-A (the raw REPL), and the prompt within half a second, else once more."""
        deadline = time.monotonic() + timeout
        said = b""  # the board's last words, for the error
        while True:
            self.t.serial.write(b"\r\x03")
            said = (said + self._drain())[-200:]
            self.t.serial.write(b"\r\x01")
            left = max(0.0, min(_RETRY, deadline - time.monotonic()))
            data = self.t.read_until(1, _RAW_PROMPT, timeout=None, timeout_overall=left)
            if data.endswith(_RAW_PROMPT):
                try:
                    self._sync()
                    break
                except DeviceError as e:
                    # A prompt, then no line run: the board reset or started a program under us (a
                    # restart just asked for, a board still booting): from Ctrl-C again, while time is left
                    if time.monotonic() >= deadline:
                        raise
                    said = (said + str(e).encode())[-200:]
                    continue
            said = (said + data)[-200:]
            if time.monotonic() >= deadline:
                raise DeviceError(f"no raw REPL prompt within {timeout:g} s (the board said {said[-120:]!r})")
        self.t.in_raw_repl = True

    def _drain(self) -> bytes:
        """What the board said so far (the REPL's answers to earlier keys)."""
        ser, got = self.t.serial, b""
        while n := ser.in_waiting:
            got += ser.read(n)
        return got

    def _sync(self) -> None:
        """Each Ctrl-A of the earlier tries answers with a prompt of its own, some maybe still to come: a
        marker printed in the raw REPL comes after all of them, and the next command starts clean (at the
        prompt that follows, which mpremote reads before it sends a command)."""
        marker = os.urandom(6).hex()
        self.t.serial.write(f"print('{marker[:6]}' + '{marker[6:]}')".encode() + b"\x04")
        data = self.t.read_until(1, marker.encode(), timeout=None, timeout_overall=5)
        if data.endswith(marker.encode()):
            data = self.t.read_until(1, b"\x04\x04", timeout=None, timeout_overall=5)  # stdout, stderr end
            if data.endswith(b"\x04\x04"):
                return
        raise DeviceError(f"the raw REPL did not run a line ({data[-120:]!r})")

    def soft_reset(self) -> None:
        """A soft reset from the raw REPL: a fresh interpreter with the whole heap, boot.py run and not main.py
        (the app stays stopped), what a start mounts and imports (a new ROMFS image, code just written)."""
        from mpremote.transport import TransportError

        try:
            self.t.enter_raw_repl(soft_reset=True)
        except (TransportError, OSError) as e:
            raise DeviceError(f"the board did not come back from a soft reset ({e})") from None

    def exec(self, code: str, timeout: float = 30) -> str:
        from mpremote.transport import TransportError

        try:
            out, err = self.t.exec_raw(code, timeout=timeout)
        except TransportError as e:
            raise DeviceError(f"the board stopped answering: {e}") from None
        if err:
            raise DeviceError(err.decode(errors="replace").strip())
        return out.decode(errors="replace")

    def json(self, code: str, timeout: float = 30):
        """Run code that prints one JSON document on its last line; return it parsed."""
        out = self.exec(code, timeout)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            raise DeviceError(f"unexpected answer from the board: {out[-300:]!r}") from None

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        return self.json(HASH_FN + f"import json\nprint(json.dumps({{p: _h(p) for p in {paths!r}}}))",
                         timeout=60 + len(paths))

    def write(self, path: str, data: bytes) -> None:
        """Write a file on the board through path.tmp and a rename (a cut leaves the old file or the new)."""
        tmp = path + ".tmp"
        self.t.fs_writefile(tmp, data, chunk_size=1024)
        self.exec(f"import os\nos.rename({tmp!r}, {path!r})")

    def read(self, path: str) -> bytes | None:
        from mpremote.transport import TransportError

        try:
            return self.t.fs_readfile(path, chunk_size=1024)
        except (TransportError, OSError):
            return None

    def makedirs(self, path: str) -> None:
        self.exec(f"import os\np = ''\nfor part in {path!r}.strip('/').split('/'):\n p += '/' + part\n"
                  " try:\n  os.mkdir(p)\n except OSError:\n  pass\n")

    def restart(self) -> None:
        """A hard reset: boot.py and main.py start the terminal again; the session ends."""
        try:
            self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        finally:
            self.t.close()

    def close(self) -> None:
        """End the session and leave the board at its REPL (the app stays stopped)."""
        try:
            self.t.exit_raw_repl()
        finally:
            self.t.close()


def local_files(out: Path, layout: str) -> dict[str, Path]:
    """What a deployed board holds, by path on the board -> host file, for the bundle in `out`."""
    files = {f"/{n}": out / n for n in ("boot.py", "main.py", "board.json")}
    base = "/rom/lib" if layout == "romfs" else "/lib"
    for p in sorted((out / "lib").rglob("*.mpy")):
        files[f"{base}/{p.relative_to(out / 'lib').as_posix()}"] = p
    return files
