"""`clockterm sim`: a local time server, the central API and one terminal; a person taps by typing."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from .defaults import default_config
from .runner import Terminal
from .sntp_server import SntpServer

HELP = "Type a badge id and Enter to tap it (e.g. 04A1B2C3); 'status' shows the status; Ctrl-D quits."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_central(state: Path):
    """The reference central API, when that part of the host side is there; else None."""
    try:
        from .central import start_background  # type: ignore[attr-defined]
    except ImportError:
        return None
    return start_background(state / "central")


def sim_config(state: Path, sntp_port: int, control_port: int, central) -> dict:
    cfg = default_config("sim", "sim-001")
    cfg["sntp"]["servers"] = ["127.0.0.1"]
    cfg["sntp"]["port"] = sntp_port
    cfg["sntp"]["min_poll_s"] = 16
    cfg["sim"]["control_port"] = control_port
    cfg["endpoint"]["port"] = free_port()
    if central is not None:
        cfg["central"]["url"] = central.url
        cfg["central"]["ca"] = str(central.ca_path)
        creds = getattr(central, "credentials", None)
        if creds:
            cfg["central"]["client_id"], cfg["central"]["client_secret"] = creds("sim-001")
    return cfg


def main(state: Path, control_port: int = 0, stdin=None, out=None) -> int:
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    state.mkdir(parents=True, exist_ok=True)
    sntp = SntpServer().start()
    central = start_central(state)
    cfg = sim_config(state, sntp.port, control_port or free_port(), central)
    cfg_path = state / "config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    term = Terminal(cfg_path, state / "terminal", log_path=state / "console.log")
    print(f"SNTP server on 127.0.0.1:{sntp.port}", file=out)
    if central is not None:
        print(f"central API on {central.url}", file=out)
    else:
        print("central API: not available in this build", file=out)
    print(f"terminal state in {state / 'terminal'}; tap port 127.0.0.1:{cfg['sim']['control_port']}", file=out)
    try:
        term.start(stdout=sys.stdout if out is sys.stdout else None)
        print(HELP, file=out, flush=True)
        for line in stdin:
            badge = line.strip()
            if not badge:
                continue
            if badge.lower() == "status":
                print(json.dumps(term.status(), indent=1), file=out, flush=True)
                continue
            print(f"> {term.tap(badge)}", file=out, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        term.stop()
        sntp.stop()
        if central is not None:
            central.stop()
    return 0
