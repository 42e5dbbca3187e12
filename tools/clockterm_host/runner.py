"""Run one terminal on the MicroPython unix port, from the compiled bundle, under the board's heap."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from . import bundle


class ConfigFileError(SystemExit):
    pass


def read_config(path: Path) -> dict:
    """Read just enough of a config to start the right board (the device validates the rest)."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigFileError(f"config: cannot read {path}: {e.strerror}") from e
    except ValueError as e:  # UnicodeDecodeError too
        raise ConfigFileError(f"config: not valid JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("board"), str):
        raise ConfigFileError("board: missing (the config must name its board)")
    return doc


def command(config: Path, state: Path, doc: dict | None = None) -> tuple[list[str], dict, Path]:
    """The argv, environment and working folder that start a terminal. doc: the config as the device
    is to get it when the host changed it (a time zone name turned into its rule): written into the
    state folder as config.run.json, with a relative CA made absolute (it is read beside `config`)."""
    cfg = read_config(config)
    board = cfg["board"]
    out = bundle.build(board)
    heap = bundle.board_config(board).get("heap", "100K")
    state = Path(state).resolve()
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigFileError(f"state folder {state}: cannot make it ({e.strerror})") from e
    if doc is not None:
        doc = json.loads(json.dumps(doc))
        ca = (doc.get("central") or {}).get("ca")
        if ca and not Path(ca).is_absolute():
            doc["central"]["ca"] = str(Path(config).resolve().parent / ca)
        config = state / "config.run.json"
        config.write_text(json.dumps(doc, indent=2))
    # boot.py then main.py, as the board does at reset. A sim board with a drifting crystal first
    # puts its drifting tick counters in place of the time module (lib/clockterm/boards/simtime.py).
    drift = (cfg.get("sim") or {}).get("rtc_drift_ppm") or 0
    pre = "import clockterm.boards.simtime\n" if board == "sim" and drift else ""
    argv, env = bundle.launch(out, heap, pre + "import boot\nimport main")
    env["CLOCKTERM_DRIFT_PPM"] = str(drift)
    env["CLOCKTERM_CONFIG"] = str(Path(config).resolve())
    env["CLOCKTERM_STATE"] = str(state)
    return argv, env, out


def exec_terminal(config: Path, state: Path, doc: dict | None = None) -> None:
    """Replace this process by the terminal: killing it is then a power cut of the terminal itself."""
    argv, env, cwd = command(config, state, doc)
    os.chdir(cwd)
    os.execve(argv[0], argv, env)


class Terminal:
    """A terminal process for tests and `clockterm sim`: start, tap, kill (power cut), restart."""

    def __init__(self, config: Path, state: Path, log_path: Path | None = None):
        self.config = Path(config)
        self.state = Path(state)
        self.log_path = log_path or self.state / "console.log"
        self.proc: subprocess.Popen | None = None
        self.control_port = read_config(self.config).get("sim", {}).get("control_port", 7001)
        self.started_at = 0.0

    def start(self, wait: float = 30.0, stdout=None) -> Terminal:
        argv, env, cwd = command(self.config, self.state)
        self.state.mkdir(parents=True, exist_ok=True)
        self._log = stdout or open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(wait)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"terminal exited {self.proc.returncode}:\n{self.console()}")
            try:
                with socket.create_connection(("127.0.0.1", self.control_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"terminal did not open its control port:\n{self.console()}")

    def console(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def send(self, line: str, timeout: float = 10.0) -> str:
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=timeout) as s:
            s.sendall(line.encode() + b"\n")
            f = s.makefile("rb")
            return f.readline().decode().strip()

    def tap(self, badge: str) -> str:
        return self.send(f"TAP {badge}")

    def status(self) -> dict:
        return json.loads(self.send("STATUS"))

    def kill(self) -> None:
        """kill -9: a power cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()
        log = getattr(self, "_log", None)
        if log is not None and hasattr(log, "close") and log.fileno() > 2:
            log.close()
