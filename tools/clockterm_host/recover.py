"""`clockterm recover`: safe mode, crash count, last good config, journal export and reset.

On a board (`--port`) the app is stopped with Ctrl-C and lib/clockterm/recover.py runs at the REPL (it
is loaded only for this); on a sim terminal (`--state`, the terminal stopped) the same module runs on
the unix port over the state folder's flash images. See docs/technician.md, "Recover".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from . import bundle
from .device import DeviceError, Session


class Target:
    """Where recover.py runs: a board on a serial port, or a stopped sim terminal's state folder."""

    def __init__(self, port: str | None, state: str | None, config: str | None = None):
        self.port = port
        self.state = Path(state).resolve() if state else None
        self.config = Path(config).resolve() if config else (self.state / "config.json" if self.state else None)
        self._s: Session | None = None

    def run(self, call: str) -> list[dict]:
        """Run `clockterm.recover.<call>` there; the JSON lines it printed."""
        code = f"import clockterm.recover as _r\n_r.{call}\n"
        if self.port:
            if self._s is None:
                self._s = Session(self.port)
                # A fresh interpreter (boot.py run, the app not started): what recover reads and writes
                # meets no app stopped half-way, with its files open, by the session's Ctrl-C
                self._s.soft_reset()
            out = self._s.exec(code, timeout=120)
        else:
            out = _run_sim(self.state, self.config, code)
        return [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]

    def end(self, restart: bool) -> None:
        if self._s is not None:
            if restart:
                self._s.restart()
            else:
                self._s.close()


def _run_sim(state: Path, config: Path | None, code: str) -> str:
    out = bundle.build("sim")
    argv, env = bundle.launch(out, bundle.board_config("sim").get("heap", "100K"), code)
    env["CLOCKTERM_STATE"] = str(state)
    if config:
        env["CLOCKTERM_CONFIG"] = str(config)
    r = subprocess.run(argv, cwd=out, env=env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise DeviceError((r.stdout + r.stderr).strip()[-600:])
    return r.stdout


def _print_status(doc: dict) -> None:
    j = doc.get("journal", {})
    why = "safe-mode pin held" if doc["safe_pin_held"] else f"{doc['crashes']} crashes in a row"
    print(f"safe mode      {'YES (' + why + ')' if doc['safe_mode'] else 'no'}")
    print(f"crash count    {doc['crashes']} (safe mode at {doc['crash_limit']})")
    print(f"config         {doc['config_error'] or 'ok'}")
    print(f"last good      {doc['good_config_error'] or 'ok'}")
    if "error" in j:
        print(f"journal        {j['error']}")
    else:
        print(f"journal        {j['journal_id']}: last seq {j['last_seq']}, sent through {j['acked_seq']}, "
              f"{j['pending']} unsent, {j['fill_pct']}% full")


def export(t: Target, out: Path, after_seq: int | None = None) -> dict:
    """The punches after after_seq (default: the unsent ones) as JSON lines in `out`; returns the summary."""
    lines = t.run(f"export_journal({after_seq!r})")
    summary, punches = lines[-1], lines[:-1]
    if summary.get("exported") != len(punches):
        raise DeviceError(f"export: {len(punches)} punches read, the board says {summary.get('exported')}")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(p) + "\n" for p in punches))
    tmp.replace(out)
    return summary


def cmd_recover(a: argparse.Namespace) -> int:
    t = Target(a.port, a.state, getattr(a, "config", None))
    restart = bool(a.port) and not a.no_restart and a.recover_cmd != "status"
    try:
        return _dispatch(a, t)
    except DeviceError as e:
        print(f"recover: {e}", file=sys.stderr)
        restart = False
        return 2
    finally:
        try:
            t.end(restart)
        except DeviceError:
            pass


def _dispatch(a: argparse.Namespace, t: Target) -> int:
    cmd = a.recover_cmd
    if cmd == "status":
        _print_status(t.run("status()")[-1])
        return 0
    if cmd in ("clear-crashes", "leave-safe-mode"):
        st = t.run("status()")[-1]
        doc = t.run("clear_crashes()")[-1]
        print(f"crash count {doc['crashes_before']} -> {doc['crashes']}")
        if cmd == "leave-safe-mode":
            if doc["safe_pin_held"]:
                print("the safe-mode pin is held: release the safe-mode button (or its jumper), then reset",
                      file=sys.stderr)
                return 2
            if st["config_error"]:
                print(f"the config is refused ({st['config_error']}): the terminal will stay stopped; "
                      "clockterm recover restore-config, or provision again", file=sys.stderr)
                return 2
        return 0
    if cmd == "restore-config":
        doc = t.run("restore_config()")[-1]
        print(f"{doc['restored']}: the last good config is in force again (the refused one is kept as "
              "config.bad.json)")
        return 0
    if cmd == "export-journal":
        summary = export(t, Path(a.out), None if not a.all else 0)
        print(f"{a.out}: {summary['exported']} punches of journal {summary['journal_id']}")
        return 0
    if cmd == "reset-journal":
        return _reset_journal(a, t)
    raise AssertionError(cmd)


def _reset_journal(a: argparse.Namespace, t: Target) -> int:
    st = t.run("status()")[-1]
    j = st["journal"]
    if "error" in j:
        raise DeviceError(j["error"])
    pending = j["pending"]
    if pending and not a.force:
        print(f"reset-journal: the journal holds {pending} unsent punches; refused. Let the terminal send them "
              "(clockterm check shows the uplink), or add --force to export them to a file first", file=sys.stderr)
        return 2
    if pending:
        out = Path(a.out or f"journal-{j['journal_id']}-{time.strftime('%Y%m%dT%H%M%S')}.jsonl")
        summary = export(t, out)
        if summary["exported"] != pending:
            raise DeviceError(f"exported {summary['exported']} punches, the journal holds {pending}: not reset")
        print(f"{out}: {pending} unsent punches exported")
    doc = t.run(f"reset_journal(True, {pending})")[-1]
    print(f"journal {doc['old_journal_id']} erased; new journal {doc['journal_id']}, seqs continue after "
          f"{doc['seq_floor']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recover", help="safe mode, crash count, last good config, journal export and reset")
    rs = p.add_subparsers(dest="recover_cmd", required=True)
    helps = {
        "status": "crash count, safe mode and why, config, journal",
        "clear-crashes": "set the crash count to 0, then restart the terminal",
        "leave-safe-mode": "clear the crash count and restart; says what else keeps the terminal stopped",
        "restore-config": "put the last good config back in force, then restart",
        "export-journal": "write the unsent punches (or --all) to a JSON-lines file",
        "reset-journal": "erase the journal (refused while it holds unsent punches, unless --force: "
                         "they are exported first)",
    }
    for name, h in helps.items():
        s = rs.add_parser(name, help=h)
        where = s.add_mutually_exclusive_group(required=True)
        where.add_argument("--port", help="serial port of the board")
        where.add_argument("--state", help="state folder of a stopped sim terminal")
        s.add_argument("--config", help="with --state: the terminal's config (default <state>/config.json)")
        s.add_argument("--no-restart", action="store_true", help="leave the board at its REPL afterwards")
        if name in ("export-journal", "reset-journal"):
            s.add_argument("--out", required=name == "export-journal", help="the JSON-lines file to write")
        if name == "export-journal":
            s.add_argument("--all", action="store_true", help="every punch the journal holds, sent ones too")
        if name == "reset-journal":
            s.add_argument("--force", action="store_true", help="reset even with unsent punches (exported first)")
        s.set_defaults(func=cmd_recover)
