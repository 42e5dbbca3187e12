"""Rosters on the host: read a roster CSV, check it by the terminal's own rules, install it into a sim
terminal's flash image, read one back.

The rules for rows (badge formats, employee id and name, duplicates, the most badges a terminal holds)
are the device's (lib/clockterm/roster_file.py), run here on the MicroPython unix port, so the CLI, the
central and the terminal cannot disagree; the rules for the file (encoding, BOM, delimiter, header,
columns) are this module's: a terminal never reads CSV. docs/integrator.md lists them.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import bundle

COLUMNS = ("badge", "employee_id", "name")
_CHECK_HEAP = "512K"  # the jobs stream their rows; a host job, not bound by the terminal's heap
_SHOWN = 20  # problems shown in an error message (all are in RosterError.problems)


class RosterError(ValueError):
    """A roster refused: `problems` has one line per bad row ("line N: <column> ...: <rule>")."""

    def __init__(self, problems: list[str], total: int | None = None) -> None:
        self.problems = problems
        total = total if total is not None else len(problems)
        more = f"\n  ... and {total - _SHOWN} more" if total > _SHOWN else ""
        super().__init__(f"roster refused ({total} problem{'s' if total != 1 else ''}):\n  "
                         + "\n  ".join(problems[:_SHOWN]) + more)


# Kept for callers of the first version.
RosterCsvError = RosterError


@dataclass
class Row:
    """A roster row as read, before the rules: its line in the source (for messages) and its fields."""

    line: int
    badge: str
    employee_id: str
    name: str


def _text(data: bytes | str) -> str:
    # The file's text: UTF-8, with or without the BOM Excel writes ("CSV UTF-8"); the UTF-16 of
    # "Unicode text" and legacy code pages are refused with the way out.
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise RosterError(["line 1: the file is UTF-16 (\"Unicode text\"): save it as \"CSV UTF-8\""])
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise RosterError([f"line {line}: not UTF-8 (byte 0x{data[e.start]:02x}): save the file as "
                           "\"CSV UTF-8\""]) from None


def _header_name(h: str) -> str:
    return h.strip().lower().replace(" ", "_").replace("-", "_")


def parse_csv(data: bytes | str) -> list[Row]:
    """The rows of a roster CSV (header with badge, employee_id, name; other columns ignored), by the
    file rules; raises RosterError naming the line."""
    text = _text(data)
    first = text.split("\n", 1)[0]
    delim = max(",;\t", key=first.count)  # Excel writes ";" where "," is the decimal mark
    rd = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(rd)
    except StopIteration:
        raise RosterError(["line 1: empty file (need a header: badge,employee_id,name)"]) from None
    except csv.Error as e:
        raise RosterError([f"line 1: {e}"]) from None
    names = [_header_name(h) for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise RosterError([f"line 1: missing column(s) {', '.join(missing)} (the header needs "
                           f"{', '.join(COLUMNS)}; found {', '.join(h.strip() for h in header) or 'nothing'})"])
    twice = sorted({c for c in COLUMNS if names.count(c) > 1})
    if twice:
        raise RosterError([f"line 1: column(s) {', '.join(twice)} named twice"])
    at = {c: names.index(c) for c in COLUMNS}
    rows, problems = [], []
    try:
        for fields in rd:
            if not any(f.strip() for f in fields):
                continue  # a blank line
            line = rd.line_num
            if len(fields) > len(header) and any(f.strip() for f in fields[len(header):]):
                problems.append(f"line {line}: {len(fields)} fields, the header has {len(header)} (a value with "
                                f"a '{delim}' needs quotes)")
                continue
            get = [fields[at[c]] if at[c] < len(fields) else "" for c in COLUMNS]
            rows.append(Row(line, *get))
    except csv.Error as e:
        problems.append(f"line {rd.line_num}: {e}")
    if problems:
        raise RosterError(problems)
    return rows


def _rules(board: str, tmp: Path, job: str, *args: Path) -> list[Any]:
    # Run a job of rostercheck_mp.py on the unix port: its output, one JSON document a line.
    out = bundle.build(board)
    script = Path(__file__).with_name("rostercheck_mp.py").read_text()
    argv, env = bundle.launch(out, _CHECK_HEAP, script)
    r = subprocess.run([*argv, job, *map(str, args)], capture_output=True, text=True, env=env, timeout=300,
                       cwd=tmp)
    if r.returncode != 0:
        raise RuntimeError(f"roster check failed to run:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def normalize(rows: list[Row], board: str = "sim") -> tuple[list[tuple[str, str, str, int]], list[tuple[int, str]]]:
    """Each row by the terminal's per-row rules (run on the unix port): ([(badge, employee_id, name,
    line)] as the terminal stores them, [(line, the rule a row breaks)]). No duplicate or size rule."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "rows.jsonl"
        src.write_text("".join(json.dumps([r.line, r.badge, r.employee_id, r.name]) + "\n" for r in rows))
        good, bad = [], []
        for line, badge, *rest in _rules(board, Path(tmp), "rows", src):
            if badge is None:
                bad.append((line, rest[0]))
            else:
                good.append((badge, rest[0], rest[1], line))
    return good, bad


def check(rows: list[Row], board: str = "sim") -> list[tuple[str, str, str]]:
    """The rows by the terminal's own rules (run on the unix port): (badge, employee_id, name) as the
    terminal stores them, sorted by badge; raises RosterError listing every bad row."""
    good, problems = normalize(rows, board)
    seen: dict[str, int] = {}
    for badge, _e, _n, line in good:
        if badge in seen:
            problems.append((line, f"badge {badge}: twice (also on line {seen[badge]}; badges are compared "
                                   "in upper case)"))
        else:
            seen[badge] = line
    if problems:
        problems.sort()
        raise RosterError([f"line {n}: {msg}" for n, msg in problems])
    good.sort(key=lambda r: r[0].encode())  # the terminal's order: by the badge's bytes
    with tempfile.TemporaryDirectory() as tmp:
        sorted_src = Path(tmp) / "sorted.jsonl"
        sorted_src.write_text("".join(json.dumps(list(r[:3])) + "\n" for r in good))
        verdict = _rules(board, Path(tmp), "write", sorted_src, Path(tmp) / "roster.bin")[-1]
    if "error" in verdict:
        msg = verdict["error"]
        if msg.startswith("roster: more than"):
            raise RosterError([f"{len(good)} badges: {msg.removeprefix('roster: ')} (the most a terminal holds)"])
        raise RosterError([f"line {good[verdict['row'] - 1][3]}: {msg}"])
    return [r[:3] for r in good]


def read_csv(data: bytes | str, board: str = "sim") -> list[tuple[str, str, str]]:
    """A roster CSV read and checked: rows as the terminal stores them, sorted by badge."""
    return check(parse_csv(data), board)


def to_csv(rows: list[tuple[str, str, str]]) -> str:
    """Rows as a roster CSV (header included) that parse_csv reads back."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


def _run_on_image(state: Path, board: str, body: str, args: list[str], timeout: float = 300) -> str:
    # Run `body` on the unix port with a sim terminal's filesystem image mounted at /flash.
    out = bundle.build(board)
    fs_kb = bundle.board_config(board)["flash"]["fs_kb"]
    script = (f"import sys\nfrom clockterm.boards.norflash import NorFlash, mount_lfs\n"
              f"mount_lfs(NorFlash(4096, {fs_kb * 1024 // 4096}, path=sys.argv[1]), '/flash')\n" + body)
    Path(state).mkdir(parents=True, exist_ok=True)
    argv, env = bundle.launch(out, _CHECK_HEAP, script)
    r = subprocess.run([*argv, str(Path(state) / "fs.bin"), *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"roster job on {state} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r.stdout


def install_sim(state: Path, rows: list[tuple[str, str, str]], board: str = "sim") -> int:
    """Write checked rows (check()) into a stopped sim terminal's fs.bin, with the device's own roster
    code; returns the badge count the terminal reads back."""
    with tempfile.TemporaryDirectory() as tmp:
        rows_path = Path(tmp) / "rows.jsonl"
        rows_path.write_text("".join(json.dumps(list(r)) + "\n" for r in rows))
        body = """
import json
from clockterm.roster import RosterWriter, Roster
w = RosterWriter("/flash/roster.bin")
with open(sys.argv[2]) as f:
    for line in f:
        b, e, n = json.loads(line)
        w.add(b, e, n)
w.commit()
print(Roster("/flash/roster.bin").count)
"""
        out = _run_on_image(state, board, body, [str(rows_path)])
    return int(out.split()[-1])


def read_sim(state: Path, board: str = "sim") -> list[tuple[str, str, str]] | None:
    """The roster in a stopped sim terminal's flash image (badge, employee_id, name as stored: names cut
    to what the terminal keeps), or None when it has none."""
    if not (Path(state) / "fs.bin").exists():
        return None
    body = """
import json
from clockterm import roster_file
try:
    print(json.dumps([list(r) for r in roster_file.rows("/flash/roster.bin")]))
except (OSError, ValueError):
    print("null")
"""
    doc = json.loads(_run_on_image(state, board, body, []).strip().splitlines()[-1])
    return None if doc is None else [tuple(r) for r in doc]
