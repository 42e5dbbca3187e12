"""`clockterm sim`: a local time server, the central API and a small fleet of terminals; a person taps by typing.

With one terminal (the default) its console is the screen: type a badge id, see the answer and the
display line. With several (`--terminals N`) each terminal's console goes to its own log and a panel
shows the fleet: each terminal's display line, clock state and backlog, and how many punches the
central has stored. On a terminal screen the panel is redrawn in place every second; otherwise it is
printed when it changes (at most every few seconds) and on `panel`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import sys
import threading
from pathlib import Path

from .defaults import default_config
from .runner import Terminal
from .sntp_server import SntpServer

HELP = ("Type a badge id and Enter to tap it: 04A1B2C3, 04D5E6F7 and 123:45678 are on the demo roster (the "
        "terminal pulls it once its clock is synced), any other id is recorded as unknown; 'status' shows the "
        "terminal's status, 'central' what the central API has stored; Ctrl-D quits.")
FLEET_HELP = ("'N BADGE' taps terminal N (a bare badge taps terminal 1), 'status N' shows terminal N's status, "
              "'panel' prints the panel, 'central' what the central API has stored; Ctrl-D quits.")
PANEL_S = 1.0  # how often the panel is refreshed on a terminal screen
PRINT_S = 5.0  # at most this often when the output is not a terminal screen (a log, a test)
MAX_TERMINALS = 9  # each is a MicroPython process with a 100 KB heap and two host threads' worth of work


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DEVICE = "sim-001"


def device_id(n: int) -> str:
    return f"sim-{n:03d}"


# A demo roster the sim terminal pulls from the local central once its clock is synced: tap these to
# see names and in/out on the display; any other badge is recorded as unknown.
DEMO_ROSTER = """badge,employee_id,name
04A1B2C3,E1001,Ada L.
04D5E6F7,E1002,Grace H.
123:45678,E1003,Alan T.
"""


def start_central(state: Path, devices: str = DEVICE):
    """The reference central API (HTTPS with its own CA), knowing the sim terminals and a demo roster."""
    from .central import start_background

    central = start_background(state / "central", devices=devices)
    central.store.import_roster_csv(DEMO_ROSTER)
    return central


def sim_config(state: Path, sntp_port: int, control_port: int, central, device: str = DEVICE) -> dict:
    cfg = default_config("sim", device)
    cfg["sntp"]["servers"] = ["127.0.0.1"]
    cfg["sntp"]["port"] = sntp_port
    cfg["sntp"]["min_poll_s"] = 16
    cfg["sim"]["control_port"] = control_port
    # The device endpoint, plain HTTP on 127.0.0.1 (this host only), with one admin token (its hash in
    # the config; the token itself beside it, in the state folder, for a person and the tests to use)
    token = secrets.token_urlsafe(24)
    cfg["endpoint"].update(port=free_port(), allow_plain_http=True, health_public=True, tokens=[
        {"name": "sim", "sha256": hashlib.sha256(token.encode()).hexdigest(), "scopes": ["read", "admin"]}])
    (state / f"{device}.token").write_text(token + "\n")
    cfg["central"]["url"] = central.url
    cfg["central"]["ca"] = str(central.ca_path)
    cfg["central"]["client_id"] = device
    cfg["central"]["client_secret"] = central.devices[device]
    cfg["central"]["interval_s"] = 2
    return cfg


_DISPLAY = re.compile(r"\[display\] (.*?)(?:  \[beep:\w+\])?$")


class Fleet:
    """The terminals of a sim session and the panel that shows them."""

    def __init__(self, terms: list[tuple[str, Terminal]], central):
        self.terms = terms
        self.central = central
        self._last = ""

    def _row(self, dev: str, t: Terminal) -> str:
        display = next((m.group(1) for m in map(_DISPLAY.search, reversed(t.console().splitlines())) if m), "")
        try:
            st = t.status()
            clock = st["clock"]["quality"].upper()
            backlog = str(st["journal"]["last_seq"] - st["journal"]["acked_seq"])
        except (OSError, ValueError, KeyError):
            clock, backlog = "DOWN", "?"
        return f" {dev:<9} {display[:34]:<34} {clock:<9} {backlog:>7}"

    def panel(self) -> str:
        rows = [f" {'terminal':<9} {'display':<34} {'clock':<9} {'backlog':>7}"]
        rows += [self._row(dev, t) for dev, t in self.terms]
        rows.append(f" central: {self.central.store.count()} punches stored")
        return "\n".join(rows)

    def run_panel(self, out, stop: threading.Event, live: bool) -> None:
        while not stop.wait(PANEL_S if live else PRINT_S):
            text = self.panel()
            if live:
                # Save the cursor, draw the panel at the top of the screen, restore: typing goes on below.
                out.write("\0337\033[H" + "".join(f"{ln}\033[K\n" for ln in text.splitlines()) + "\0338")
                out.flush()
            elif text != self._last:
                print(text, file=out, flush=True)
            self._last = text


def _start(state: Path, n: int, control_port: int, out) -> tuple[SntpServer, object, list[tuple[str, Terminal]]]:
    sntp = SntpServer().start()
    devs = [device_id(i + 1) for i in range(n)]
    central = start_central(state, ",".join(devs))
    print(f"SNTP server on 127.0.0.1:{sntp.port}", file=out)
    print(f"central API on {central.url} (punches stored there: 'central' at the prompt)", file=out)
    terms = []
    for i, dev in enumerate(devs):
        cfg = sim_config(state, sntp.port, (control_port if i == 0 and control_port else free_port()), central, dev)
        tdir = state / ("terminal" if n == 1 else f"terminal-{i + 1}")
        tdir.mkdir(parents=True, exist_ok=True)
        cfg_path = (state / "config.json") if n == 1 else (tdir / "config.json")
        cfg_path.write_text(json.dumps(cfg, indent=2))
        log = state / ("console.log" if n == 1 else f"console-{i + 1}.log")
        terms.append((dev, Terminal(cfg_path, tdir, log_path=log)))
        print(f"terminal {dev}: state in {tdir}; tap port 127.0.0.1:{cfg['sim']['control_port']}", file=out)
        print(f"  endpoint http://127.0.0.1:{cfg['endpoint']['port']}/api/v1/status, token in "
              f"{state / (dev + '.token')}", file=out)
    return sntp, central, terms


def _command(line: str, fleet: Fleet, out) -> None:
    words = line.split()
    n = len(fleet.terms)
    target = 0
    if n > 1 and len(words) == 2 and words[0].isdigit():
        target = int(words[0]) - 1
        words = words[1:]
    elif n > 1 and len(words) == 2 and words[0].lower() == "status" and words[1].isdigit():
        target = int(words[1]) - 1
        words = words[:1]
    if not 0 <= target < n:
        print(f"> no terminal {target + 1} (1..{n})", file=out, flush=True)
        return
    dev, term = fleet.terms[target]
    cmd = words[0].lower() if words else ""
    if cmd == "status":
        print(json.dumps(term.status(), indent=1), file=out, flush=True)
    elif cmd == "central":
        print(json.dumps(fleet.central.admin("/stats"), indent=1), file=out, flush=True)
    elif cmd == "panel":
        print(fleet.panel(), file=out, flush=True)
    elif len(words) == 1:
        answer = term.tap(words[0])
        print(f"> [{dev}] {answer}" if n > 1 else f"> {answer}", file=out, flush=True)
    else:
        print("> ERR bad badge (one word)", file=out, flush=True)


def main(state: Path, control_port: int = 0, stdin=None, out=None, terminals: int = 1) -> int:
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    if not 1 <= terminals <= MAX_TERMINALS:
        print(f"sim: --terminals 1..{MAX_TERMINALS}", file=sys.stderr)
        return 2
    state.mkdir(parents=True, exist_ok=True)
    sntp, central, terms = _start(state, terminals, control_port, out)
    fleet = Fleet(terms, central)
    stop = threading.Event()
    try:
        for i, (_dev, term) in enumerate(terms):
            # One terminal: its console is the screen. A fleet: each console to its own log, the panel on screen.
            term.start(stdout=sys.stdout if terminals == 1 and out is sys.stdout and i == 0 else None)
        print(HELP if terminals == 1 else FLEET_HELP, file=out, flush=True)
        if terminals > 1:
            live = hasattr(out, "isatty") and out.isatty()
            if live:
                out.write("\033[2J\033[" + str(terminals + 4) + ";1H")  # room for the panel at the top
            threading.Thread(target=fleet.run_panel, args=(out, stop, live), daemon=True).start()
        for line in stdin:
            if line.strip():
                _command(line.strip(), fleet, out)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for _dev, term in terms:
            term.stop()
        sntp.stop()
        central.stop()
    return 0
