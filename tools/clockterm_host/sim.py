"""`clockterm sim`: a local time server, the central API and one terminal; a person taps by typing."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from .defaults import default_config
from .runner import Terminal
from .sntp_server import SntpServer

HELP = ("Type a badge id and Enter to tap it: 04A1B2C3, 04D5E6F7 and 123:45678 are on the demo roster (the "
        "terminal pulls it once its clock is synced), any other id is recorded as unknown; 'status' shows the "
        "terminal's status, 'central' what the central API has stored; Ctrl-D quits.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DEVICE = "sim-001"


# A demo roster the sim terminal pulls from the local central once its clock is synced: tap these to
# see names and in/out on the display; any other badge is recorded as unknown.
DEMO_ROSTER = """badge,employee_id,name
04A1B2C3,E1001,Ada L.
04D5E6F7,E1002,Grace H.
123:45678,E1003,Alan T.
"""


def start_central(state: Path):
    """The reference central API (HTTPS with its own CA), knowing the sim terminal and a demo roster."""
    from .central import start_background

    central = start_background(state / "central", devices=DEVICE)
    central.store.import_roster_csv(DEMO_ROSTER)
    return central


def sim_config(state: Path, sntp_port: int, control_port: int, central) -> dict:
    cfg = default_config("sim", DEVICE)
    cfg["sntp"]["servers"] = ["127.0.0.1"]
    cfg["sntp"]["port"] = sntp_port
    cfg["sntp"]["min_poll_s"] = 16
    cfg["sim"]["control_port"] = control_port
    cfg["endpoint"]["port"] = free_port()
    cfg["central"]["url"] = central.url
    cfg["central"]["ca"] = str(central.ca_path)
    cfg["central"]["client_id"] = DEVICE
    cfg["central"]["client_secret"] = central.devices[DEVICE]
    cfg["central"]["interval_s"] = 2
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
    print(f"central API on {central.url} (punches stored there: 'central' at the prompt)", file=out)
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
            if badge.lower() == "central":
                print(json.dumps(central.admin("/stats"), indent=1), file=out, flush=True)
                continue
            print(f"> {term.tap(badge)}", file=out, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        term.stop()
        sntp.stop()
        central.stop()
    return 0
