"""`clockterm`: the one CLI for technicians and integrators."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path

from . import REPO, bundle, runner
from .defaults import default_config

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
    """Validate a config with the device's own validator, run on the unix port."""
    out = bundle.build(board)
    script = (
        "import sys\nfrom clockterm import config\n"
        "try:\n config.parse(open(sys.argv[1]).read())\n print('ok')\n"
        "except config.ConfigError as e:\n print(e)\n sys.exit(1)\n"
        "except OSError as e:\n print('config: cannot read', sys.argv[1], e)\n sys.exit(1)\n"
    )
    argv, env = bundle.launch(out, bundle.board_config(board).get("heap", "100K"), script)
    r = subprocess.run([*argv, str(Path(path).resolve())], capture_output=True, text=True, env=env, timeout=60)
    msg = (r.stdout.strip().splitlines() or [r.stderr.strip()])[-1]
    return r.returncode == 0, msg


def cmd_config(args: argparse.Namespace) -> int:
    if args.check:
        ok, msg = check_config(Path(args.check), args.board)
        print(msg if not ok else f"{args.check}: ok")
        return 0 if ok else 2
    print(json.dumps(default_config(args.board, args.device_id), indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = Path(args.config)
    doc = runner.read_config(config)
    ok, msg = check_config(config, doc["board"])
    if not ok:
        print(f"{config}: {msg}", file=sys.stderr)
        return 2
    runner.exec_terminal(config, Path(args.state))
    return 0  # not reached


def cmd_sim(args: argparse.Namespace) -> int:
    from . import sim

    return sim.main(Path(args.state), args.control_port, terminals=args.terminals)


def cmd_roster_install(args: argparse.Namespace) -> int:
    from . import roster

    try:
        rows = roster.read_csv(Path(args.csv).read_text(encoding="utf-8-sig"))
    except (OSError, roster.RosterCsvError) as e:
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
    s.add_argument("--device-id", default="term-001")
    s.add_argument("--check", metavar="FILE", help="validate FILE with the device's validator")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("run", help="run one terminal on the host (unix port) from a config and state folder")
    s.add_argument("--config", required=True)
    s.add_argument("--state", required=True, help="folder for the flash images and RTC (persists)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("sim", help="a local time server, central API and terminal; type badges to tap")
    s.add_argument("--state", default=str(REPO / "build" / "sim"), help="state folder")
    s.add_argument("--control-port", type=int, default=0, help="tap control port (default: a free one)")
    s.add_argument("--terminals", type=int, default=1, help="how many terminals (a fleet: a live panel shows them)")
    s.set_defaults(func=cmd_sim)

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


if __name__ == "__main__":
    sys.exit(main())
