"""The `central` subcommand: serve the reference central API, import a roster, export punches as CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..defaults import CENTRAL_PORT, CENTRAL_STATE
from .server import DEFAULT_DEVICES
from .store import EXPORT_COLUMNS, Store


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `central {serve,export,roster}` to the main CLI's subparsers."""
    p = subparsers.add_parser("central", help="the reference central API server")
    sub = p.add_subparsers(dest="central_cmd", required=True)

    s = sub.add_parser("serve", help="serve the API over HTTPS (CA generated into the state folder)")
    s.add_argument("--state", type=Path, default=Path(CENTRAL_STATE),
                   help="state folder: CA, certificates, database, devices.json (default: %(default)s)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_port, default=CENTRAL_PORT)
    s.add_argument("--admin-port", type=_port, default=0, help="plain-HTTP loopback admin port (0: any)")
    s.add_argument("--name", default="localhost", help="host name the terminals use (in the certificate)")
    s.add_argument("--devices", default=None,
                   help=f"devices as id[:secret],... (secrets generated when omitted; kept in devices.json; "
                        f"default on a new state folder: {DEFAULT_DEVICES})")
    s.set_defaults(func=_serve)

    e = sub.add_parser("export", help="export punches as CSV for payroll")
    e.add_argument("--state", type=Path, default=Path(CENTRAL_STATE), help="the central's state folder "
                   "(default: %(default)s)")
    e.add_argument("--columns", default=",".join(EXPORT_COLUMNS),
                   help=f"comma-separated, from: {','.join(EXPORT_COLUMNS)},received_ms")
    e.add_argument("--device", default=None)
    e.add_argument("-o", "--output", type=Path, default=None, help="file (default stdout)")
    e.set_defaults(func=_export)

    r = sub.add_parser("roster", help="roster management")
    rs = r.add_subparsers(dest="roster_cmd", required=True)
    ri = rs.add_parser("import", help="import a roster CSV (badge,employee_id[,name])")
    ri.add_argument("--state", type=Path, default=Path(CENTRAL_STATE), help="the central's state folder "
                    "(default: %(default)s)")
    ri.add_argument("--device", default="*", help="device id, or * for all devices")
    ri.add_argument("--merge", action="store_true", help="add to the roster instead of replacing it")
    ri.add_argument("csv", type=Path)
    ri.set_defaults(func=_roster_import)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535)")
    return int(text)


def _serve(a: argparse.Namespace) -> int:
    from .server import serve
    serve(a.state, a.host, a.port, a.devices, a.admin_port, a.name)
    return 0


def _open_store(state: Path) -> Store:
    if not (state / "central.db").exists():
        raise SystemExit(f"no central database in {state} (run 'central serve --state {state}' first)")
    return Store(state / "central.db")


def _export(a: argparse.Namespace) -> int:
    store = _open_store(a.state)
    try:
        cols = [c.strip() for c in a.columns.split(",") if c.strip()]
        if a.output:
            with open(a.output, "w", newline="") as f:
                n = store.export_csv(f, cols, a.device)
        else:
            n = store.export_csv(sys.stdout, cols, a.device)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    except OSError as e:
        raise SystemExit(f"cannot write {a.output}: {e.strerror}") from None
    finally:
        store.close()
    print(f"{n} punches exported", file=sys.stderr)
    return 0


def _roster_import(a: argparse.Namespace) -> int:
    try:
        text = a.csv.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise SystemExit(f"roster CSV: cannot read {a.csv}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SystemExit(f"roster CSV: {a.csv} is not UTF-8 text (byte {e.start})") from None
    store = _open_store(a.state)
    try:
        n = store.import_roster_csv(text, a.device, replace=not a.merge)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    finally:
        store.close()
    print(f"{n} roster entries imported for {a.device}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point until the main CLI calls register()."""
    ap = argparse.ArgumentParser(prog="clockterm")
    register(ap.add_subparsers(dest="cmd", required=True))
    a = ap.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    raise SystemExit(main())
