"""The `central` subcommand: serve the reference central API; export punches for payroll; manage rosters.

`export` and `roster` work on the central's state folder (its SQLite database; safe while it runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..defaults import CENTRAL_PORT, CENTRAL_STATE
from .export import DEFAULT_COLUMNS, MAX_SHIFT_H, PAIR_COLUMNS, PUNCH_COLUMNS, REPORTS, ExportError, export
from .server import DEFAULT_DEVICES
from .store import Store


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `central {serve,export,roster}` to the main CLI's subparsers."""
    p = subparsers.add_parser("central", help="the reference central API server, payroll exports, rosters")
    sub = p.add_subparsers(dest="central_cmd", required=True)

    s = sub.add_parser("serve", help="serve the API over HTTPS (CA and admin token generated into the state folder)")
    s.add_argument("--state", type=Path, default=Path(CENTRAL_STATE),
                   help="state folder: CA, certificates, database, devices.json, admin.token (default: %(default)s)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_port, default=CENTRAL_PORT)
    s.add_argument("--admin-port", type=_port, default=0, help="plain-HTTP loopback admin port (0: any)")
    s.add_argument("--name", default="localhost", help="host name the terminals use (in the certificate)")
    s.add_argument("--devices", default=None,
                   help=f"devices as id[:secret],... (secrets generated when omitted; kept in devices.json; "
                        f"default on a new state folder: {DEFAULT_DEVICES})")
    s.set_defaults(func=_serve)

    e = sub.add_parser("export", help="export punches (or IN/OUT pairs per person and day) as CSV for payroll",
                       description="Punches, or IN/OUT pairs with worked time, over a date range, as CSV that a "
                                   "spreadsheet opens. See docs/integrator.md.")
    e.add_argument("--state", type=Path, default=Path(CENTRAL_STATE),
                   help="the central's state folder (default: %(default)s)")
    e.add_argument("--report", choices=REPORTS, default="punches",
                   help=f"punches: one row a punch; pairs: {','.join(PAIR_COLUMNS)}")
    e.add_argument("--from", dest="start", metavar="DATE", help="first day (YYYY-MM-DD) or an ISO date-time")
    e.add_argument("--to", dest="end", metavar="DATE", help="last day, included (YYYY-MM-DD), or an ISO date-time")
    e.add_argument("--tz", default="UTC", help="time zone of the range and of date/time columns: UTC (default) "
                                               "or an IANA name such as Europe/Berlin")
    e.add_argument("--device", default=None, help="one device's punches only")
    e.add_argument("--columns", default=None,
                   help=f"punch report columns, comma-separated, or 'all' (default {','.join(DEFAULT_COLUMNS)}; "
                        f"known: {','.join(PUNCH_COLUMNS)})")
    e.add_argument("--bom", action="store_true", help="start with a UTF-8 BOM (Excel then reads names right)")
    e.add_argument("--delimiter", default=",", help="',' (default), ';' (Excel where ',' is the decimal mark) or 'tab'")
    e.add_argument("--max-shift-h", type=float, default=MAX_SHIFT_H,
                   help=f"pairs: the longest shift, hours (default {MAX_SHIFT_H})")
    e.add_argument("-o", "--output", type=Path, default=None, help="file (default stdout)")
    e.set_defaults(func=_export)

    r = sub.add_parser("roster", help="roster management at the central")
    rs = r.add_subparsers(dest="roster_cmd", required=True)
    ri = rs.add_parser("import", help="import a roster CSV (badge,employee_id,name), checked by the terminal's rules")
    ri.add_argument("--state", type=Path, default=Path(CENTRAL_STATE),
                    help="the central's state folder (default: %(default)s)")
    ri.add_argument("--device", default="*", help="device id, or * for all devices")
    ri.add_argument("--merge", action="store_true", help="add to the roster instead of replacing it")
    ri.add_argument("csv", type=Path)
    ri.set_defaults(func=_roster_import)
    rv = rs.add_parser("show", help="print the roster stored for all devices (or one) as CSV")
    rv.add_argument("--state", type=Path, default=Path(CENTRAL_STATE),
                    help="the central's state folder (default: %(default)s)")
    rv.add_argument("--device", default="*", help="device id, or * for all devices")
    rv.set_defaults(func=_roster_show)


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
    delim = "\t" if a.delimiter == "tab" else a.delimiter
    try:
        kw = dict(report=a.report, start=a.start, end=a.end, tz_name=a.tz, device_id=a.device, cols=a.columns,
                  bom=a.bom, delimiter=delim, max_shift_h=a.max_shift_h)
        if a.output:
            with open(a.output, "w", newline="", encoding="utf-8") as f:
                n = export(store, f, **kw)
        else:
            n = export(store, sys.stdout, **kw)
    except ExportError as e:
        raise SystemExit(f"export: {e}") from None
    except OSError as e:
        raise SystemExit(f"cannot write {a.output}: {e.strerror}") from None
    finally:
        store.close()
    print(f"{n} {'punches' if a.report == 'punches' else 'rows'} exported", file=sys.stderr)
    return 0


def _roster_import(a: argparse.Namespace) -> int:
    from .. import roster

    store = _open_store(a.state)
    try:
        rows = roster.read_csv(a.csv.read_bytes())
        stored = store.import_roster_checked(rows, a.device, replace=not a.merge)
    except OSError as e:
        raise SystemExit(f"{a.csv}: {e.strerror}") from None
    except roster.RosterError as e:
        raise SystemExit(f"{a.csv}: {e}") from None
    finally:
        store.close()
    print(f"{len(rows)} roster rows imported for {a.device}; {stored} stored there")
    return 0


def _roster_show(a: argparse.Namespace) -> int:
    from .. import roster

    store = _open_store(a.state)
    try:
        sys.stdout.write(roster.to_csv(store.roster_scope(a.device)))
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point until the main CLI calls register()."""
    ap = argparse.ArgumentParser(prog="clockterm")
    register(ap.add_subparsers(dest="cmd", required=True))
    a = ap.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    raise SystemExit(main())
