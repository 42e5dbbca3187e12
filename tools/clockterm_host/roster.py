"""Roster CSV on the host: read and check it, and install it into a sim terminal's flash image."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import tempfile
from pathlib import Path

from . import bundle

COLUMNS = ("badge", "employee_id", "name")


class RosterCsvError(ValueError):
    pass


def read_csv(text: str) -> list[tuple[str, str, str]]:
    """Rows (badge, employee_id, name) sorted by badge; errors name the line."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise RosterCsvError(f"roster CSV: missing column(s) {', '.join(missing)} (need {', '.join(COLUMNS)})")
    rows: dict[str, tuple[str, str, str]] = {}
    for n, row in enumerate(reader, start=2):
        badge = (row["badge"] or "").strip().upper()
        emp = (row["employee_id"] or "").strip()
        name = (row["name"] or "").strip()
        if not badge or len(badge.encode()) > 16:
            raise RosterCsvError(f"roster CSV line {n}: badge {badge!r} must be 1..16 characters")
        if not emp or len(emp.encode()) > 12:
            raise RosterCsvError(f"roster CSV line {n}: employee_id {emp!r} must be 1..12 characters")
        if badge in rows:
            raise RosterCsvError(f"roster CSV line {n}: badge {badge} appears twice")
        rows[badge] = (badge, emp, name)
    return [rows[b] for b in sorted(rows, key=lambda b: b.encode())]


def install_sim(state: Path, rows: list[tuple[str, str, str]], board: str = "sim") -> int:
    """Write the roster into a stopped sim terminal's fs.bin, with the device's own roster code."""
    out = bundle.build(board)
    fs_kb = bundle.board_config(board)["flash"]["fs_kb"]
    with tempfile.TemporaryDirectory() as tmp:
        rows_path = Path(tmp) / "rows.json"
        rows_path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        script = f"""
import json
from clockterm.boards.norflash import NorFlash, mount_lfs
from clockterm.roster import RosterWriter, Roster
mount_lfs(NorFlash(4096, {fs_kb * 1024 // 4096}, path={str(Path(state) / 'fs.bin')!r}), "/flash")
w = RosterWriter("/flash/roster.bin")
with open({str(rows_path)!r}) as f:
    for line in f:
        if line.strip():
            b, e, n = json.loads(line)
            w.add(b, e, n)
w.commit()
print(Roster("/flash/roster.bin").count)
"""
        Path(state).mkdir(parents=True, exist_ok=True)
        argv, env = bundle.launch(out, bundle.board_config(board).get("heap", "100K"), script)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"roster install failed:\n{r.stdout}{r.stderr}")
    return int(r.stdout.split()[-1])
