"""`clockterm`: the one CLI for technicians and integrators."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import socket
import subprocess
import sys
import tempfile
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


def check_overlay(overlay: object, board: str = "sim") -> tuple[bool, str]:
    """Validate a central config overlay with the device's own merge and validator (config.merge_overlay
    over a complete default config), run on the unix port, as a terminal checks it when it pulls it."""
    out = bundle.build(board)
    script = (
        "import sys, json\nfrom clockterm import config\n"
        "try:\n config.merge_overlay(config.validate(json.load(open(sys.argv[1]))), json.load(open(sys.argv[2])))\n"
        " print('ok')\n"
        "except config.ConfigError as e:\n print(e)\n sys.exit(1)\n"
    )
    argv, env = bundle.launch(out, bundle.board_config(board).get("heap", "100K"), script)
    with tempfile.TemporaryDirectory() as tmp:  # files, not arguments: the unix port fails on a long argv
        local, over = Path(tmp) / "local.json", Path(tmp) / "overlay.json"
        local.write_text(json.dumps(default_config(board)))
        over.write_text(json.dumps(overlay))
        r = subprocess.run([*argv, str(local), str(over)], capture_output=True, text=True, env=env, timeout=60)
    msg = (r.stdout.strip().splitlines() or [r.stderr.strip()])[-1]
    return r.returncode == 0, msg


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


def _roster_file(path: str) -> list[tuple[str, str, str]]:
    # A roster CSV read and checked by the terminal's rules; SystemExit(2) naming each bad row.
    from . import roster

    try:
        return roster.read_csv(Path(path).read_bytes())
    except OSError as e:
        raise SystemExit(f"{path}: {e.strerror}") from None
    except roster.RosterError as e:
        raise SystemExit(f"{path}: {e}") from None


def cmd_roster_check(args: argparse.Namespace) -> int:
    rows = _roster_file(args.csv)
    print(f"{args.csv}: ok, {len(rows)} badges")
    return 0


def cmd_roster_install(args: argparse.Namespace) -> int:
    from . import roster

    rows = _roster_file(args.csv)
    n = roster.install_sim(Path(args.state), rows)
    print(f"roster installed: {n} badges")
    return 0


def _central(args: argparse.Namespace):
    from .central import admintoken
    from .ldapsync import Central

    token = admintoken.locate(Path(args.central_state) if args.central_state else None,
                              Path(args.admin_token_file) if args.admin_token_file else None)
    return Central(args.central, token, args.scope)


def cmd_roster_push(args: argparse.Namespace) -> int:
    from .ldapsync import SyncError

    rows = _roster_file(args.csv)
    try:
        ans = _central(args).put(rows)
    except SyncError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{args.csv}: {ans['imported']} badges sent; {ans['stored']} stored at the central for {ans['scope']}")
    return 0


def cmd_roster_sync(args: argparse.Namespace) -> int:
    import os

    from . import ldapsync, roster

    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().rstrip("\n")
        except OSError as e:
            raise SystemExit(f"--password-file {args.password_file}: {e.strerror}") from None
    elif os.environ.get("CLOCKTERM_LDAP_PASSWORD"):
        password = os.environ["CLOCKTERM_LDAP_PASSWORD"]
    if args.bind_dn and password is None:
        raise SystemExit("--bind-dn needs a password: --password-file FILE or CLOCKTERM_LDAP_PASSWORD")
    d = ldapsync.Directory(args.ldap, args.base, args.filter, args.badge_attr, args.id_attr, args.name_attr,
                           bind_dn=args.bind_dn, password=password, ca_file=args.ca, starttls=args.starttls,
                           page_size=args.page_size)
    dest = "central" if args.central else "sim" if args.sim_state else "csv"
    try:
        res, done = ldapsync.sync(d, dest, central=_central(args) if args.central else None,
                                  sim_state=Path(args.sim_state) if args.sim_state else None,
                                  csv_out=Path(args.csv_out) if args.csv_out else None, dry_run=args.dry_run,
                                  force=args.force, max_shrink=args.max_shrink)
    except ldapsync.Refused as e:
        print(e, file=sys.stderr)
        return 2
    except (ldapsync.SyncError, roster.RosterError) as e:
        print(e, file=sys.stderr)
        return 1
    print(json.dumps(res.as_dict(), indent=1) if args.json else res.report())
    print(done)
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

    s = sub.add_parser("roster", help="badge rosters: check, install, push to the central, sync from a directory")
    rsub = s.add_subparsers(dest="roster_cmd", required=True)
    r = rsub.add_parser("check", help="check a roster CSV (badge,employee_id,name) by the terminal's rules")
    r.add_argument("csv")
    r.set_defaults(func=cmd_roster_check)
    r = rsub.add_parser("install", help="install a roster CSV (badge,employee_id,name) into a stopped sim "
                                        "terminal's flash")
    r.add_argument("--state", required=True)
    r.add_argument("--csv", required=True)
    r.set_defaults(func=cmd_roster_install)

    def central_args(r: argparse.ArgumentParser, required: bool) -> None:
        r.add_argument("--central", required=required, metavar="URL",
                       help="the central's admin API (http://127.0.0.1:PORT, as 'central serve' prints it)")
        r.add_argument("--central-state", metavar="DIR", help="the central's state folder (for its admin.token)")
        r.add_argument("--admin-token-file", metavar="FILE", help="the central's admin token (instead of its folder)")
        r.add_argument("--scope", default="*", help="the roster of all devices (*, default) or of one device id")

    r = rsub.add_parser("push", help="check a roster CSV and send it to a running central")
    r.add_argument("csv")
    central_args(r, True)
    r.set_defaults(func=cmd_roster_push)

    r = rsub.add_parser("sync", help="the roster from an LDAP directory / Active Directory: checked, diffed, applied",
                        description="Reads people over LDAPS or StartTLS (paged), leaves out disabled AD accounts, "
                                    "checks the rows by the terminal's rules, shows the diff to the roster in "
                                    "force, and sends the roster to one destination. See docs/integrator.md.")
    r.add_argument("--ldap", required=True, metavar="URL", help="ldaps://host[:port], or ldap://host[:port] with "
                                                                "--starttls")
    r.add_argument("--base", required=True, metavar="DN", help="search base")
    r.add_argument("--filter", required=True, metavar="F", help="search filter, e.g. (objectClass=user)")
    r.add_argument("--badge-attr", required=True, metavar="A", help="attribute holding the badge id(s)")
    r.add_argument("--id-attr", required=True, metavar="I", help="attribute holding the employee id")
    r.add_argument("--name-attr", required=True, metavar="N", help="attribute holding the name shown")
    r.add_argument("--bind-dn", metavar="DN", help="bind as (default: anonymous)")
    r.add_argument("--password-file", metavar="FILE", help="the bind password (or CLOCKTERM_LDAP_PASSWORD)")
    r.add_argument("--ca", metavar="FILE", help="CA certificate(s) of the directory's TLS (default: the system's)")
    r.add_argument("--starttls", action="store_true", help="upgrade ldap:// with StartTLS")
    r.add_argument("--page-size", type=int, default=500, help="entries per page (Active Directory gives 1,000 at "
                                                              "most)")
    dest = r.add_mutually_exclusive_group(required=True)
    dest.add_argument("--central", metavar="URL", help="send to a running central's admin API")
    dest.add_argument("--sim-state", metavar="DIR", help="install into a stopped sim terminal's state folder")
    dest.add_argument("--csv-out", metavar="FILE", help="write a roster CSV (compared with the file as it is)")
    r.add_argument("--central-state", metavar="DIR", help="the central's state folder (for its admin.token)")
    r.add_argument("--admin-token-file", metavar="FILE", help="the central's admin token (instead of its folder)")
    r.add_argument("--scope", default="*", help="the central's roster of all devices (*) or of one device id")
    r.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    r.add_argument("--force", action="store_true", help="apply even an empty or sharply smaller roster")
    r.add_argument("--max-shrink", type=float, default=0.10,
                   help="refuse a roster smaller than the one in force by more than this fraction (default 0.10)")
    r.add_argument("--json", action="store_true", help="the report as JSON")
    r.set_defaults(func=cmd_roster_sync)

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
