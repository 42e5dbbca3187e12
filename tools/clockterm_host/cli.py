"""`clockterm`: the one CLI for technicians and integrators."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import socket
import sys
import time
from pathlib import Path

from . import REPO, bundle, configcheck, runner
from .defaults import CENTRAL_STATE, DEVICE_ID, SIM_SNTP_PORT, default_config, fill_central

log = logging.getLogger("clockterm")

# Subcommands contributed by other host modules: each has register(subparsers).
EXTENSIONS = ["clockterm_host.central.cli", "clockterm_host.firmware", "clockterm_host.deploy",
              "clockterm_host.provision", "clockterm_host.check", "clockterm_host.recover"]


def cmd_bundle(args: argparse.Namespace) -> int:
    out = bundle.build(args.board, Path(args.out) if args.out else None)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    size = sum((out / f).stat().st_size for f in files)
    print(f"{out}: {len(files)} files, {size} bytes")
    return 0


def check_config(path: Path, board: str = "sim") -> tuple[bool, str]:
    """(ok, "ok" or why not) for a config as `clockterm run` takes it: what the device refuses, an unknown
    board, a time zone that is neither a rule nor a known name. (`config --check` is stricter.)"""
    try:
        configcheck.check(Path(path), strict=False)
    except configcheck.ConfigCheckError as e:
        return False, str(e)
    return True, "ok"


def cmd_config(args: argparse.Namespace) -> int:
    if args.check:
        try:
            checked = configcheck.check(Path(args.check))
        except configcheck.ConfigCheckError as e:
            print(f"{args.check}: {e}", file=sys.stderr)
            return 2
        for note in checked.notes:
            print(f"{args.check}: {note}")
        print(f"{args.check}: ok")
        return 0
    bundle.board_config(args.board)  # an unknown board: SystemExit with the known ones
    cfg = default_config(args.board, args.device_id)
    note = fill_central(cfg, Path(args.central))
    print(json.dumps(cfg, indent=2))
    print(note, file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = Path(args.config)
    try:
        checked = configcheck.check(config, strict=False)
    except configcheck.ConfigCheckError as e:
        print(f"{config}: {e}", file=sys.stderr)
        return 2
    if checked.board != "sim":
        print(f"{config}: board {checked.board}: `clockterm run` runs the sim board on this machine; a "
              f"{checked.board} runs its config on the board (docs/technician.md)", file=sys.stderr)
        return 2
    port = (checked.doc.get("sim") or {}).get("control_port", 7001)
    if port and not _port_free(port):
        print(f"{config}: sim.control_port {port} is in use (another terminal running? give it another port)",
              file=sys.stderr)
        return 2
    for note in checked.notes:
        print(f"{config}: {note}", file=sys.stderr)
    runner.exec_terminal(config, Path(args.state), checked.doc if checked.notes else None)
    return 0  # not reached


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_timeserver(args: argparse.Namespace) -> int:
    from .sntp_server import SntpServer

    try:
        srv = SntpServer(args.host, args.port)
    except OSError as e:
        raise SystemExit(f"cannot serve SNTP on {args.host}:{args.port}: {e.strerror or e}") from None
    print(f"SNTP server on {args.host}:{srv.port}, serving this machine's clock (Ctrl-C stops it)", flush=True)
    srv.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from . import sim

    return sim.main(Path(args.state), args.control_port, terminals=args.terminals)


def cmd_roster_install(args: argparse.Namespace) -> int:
    from . import roster

    try:
        rows = roster.read_csv(Path(args.csv).read_text(encoding="utf-8-sig"))
    except OSError as e:
        print(f"roster CSV: cannot read {args.csv}: {e.strerror}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as e:
        print(f"roster CSV: {args.csv} is not UTF-8 text (byte {e.start})", file=sys.stderr)
        return 2
    except roster.RosterCsvError as e:
        print(e, file=sys.stderr)
        return 2
    n = roster.install_sim(Path(args.state), rows)
    print(f"roster installed: {n} badges")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clockterm", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("bundle", help="compile the device tree for a board into build/device/<board>/")
    s.add_argument("--board", default="sim")
    s.add_argument("--out", help="output folder (default build/device/<board>)")
    s.set_defaults(func=cmd_bundle)

    s = sub.add_parser("config", help="print a complete default config, or check one")
    s.add_argument("--board", default="sim")
    s.add_argument("--device-id", default=DEVICE_ID)
    s.add_argument("--central", default=CENTRAL_STATE, metavar="DIR",
                   help="the state folder of `clockterm central serve`: its CA and this device's secret go into "
                        "the config (default: %(default)s, when it exists)")
    s.add_argument("--check", metavar="FILE", help="check FILE: what the device refuses, and more")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("run", help="run one terminal on the host (unix port) from a config and state folder")
    s.add_argument("--config", required=True)
    s.add_argument("--state", required=True, help="folder for the flash images and RTC (persists)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("sim", help="a local time server, central API and terminal; type badges to tap")
    s.add_argument("--state", default=str(REPO / "build" / "sim"), help="state folder")
    s.add_argument("--control-port", type=port_number, default=0, help="tap control port (default: a free one)")
    s.add_argument("--terminals", type=int, default=1, help="how many terminals (a fleet: a live panel shows them)")
    s.set_defaults(func=cmd_sim)

    s = sub.add_parser("timeserver", help="an SNTP server serving this machine's clock (for sim terminals)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=port_number, default=SIM_SNTP_PORT, help="UDP port (default: %(default)s, "
                   "the sim config's sntp.port)")
    s.set_defaults(func=cmd_timeserver)

    s = sub.add_parser("roster", help="badge rosters")
    rsub = s.add_subparsers(dest="roster_cmd", required=True)
    r = rsub.add_parser("install", help="install a roster CSV (badge,employee_id,name) into a stopped sim "
                                        "terminal's flash")
    r.add_argument("--state", required=True)
    r.add_argument("--csv", required=True)
    r.set_defaults(func=cmd_roster_install)

    for name in EXTENSIONS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # that part of the host side is not there yet
            raise
        mod.register(sub)
    return p


def port_number(text: str) -> int:
    """An argparse type: a TCP/UDP port, 0..65535 (0: any free one, where a command allows it)."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        # A path or port the command could not use and did not word itself: one line, not a traceback
        # (-v shows where it came from)
        log.debug("where:", exc_info=True)
        where = f": {e.filename}" if e.filename else ""
        print(f"clockterm {args.cmd}: {e.strerror or e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
