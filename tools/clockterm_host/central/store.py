"""SQLite storage of the reference central: devices, punches (deduplicated), rosters, configs."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY, secret TEXT NOT NULL, scopes TEXT NOT NULL,
  config TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS punches (
  device_id TEXT NOT NULL, journal_id TEXT NOT NULL, seq INTEGER NOT NULL,
  badge TEXT NOT NULL, kind TEXT NOT NULL, utc_ms INTEGER NOT NULL, utc_offset_min INTEGER NOT NULL,
  quality TEXT NOT NULL, uncertainty_ms INTEGER NOT NULL, employee_id TEXT,
  received_ms INTEGER NOT NULL,
  PRIMARY KEY (device_id, journal_id, seq));
CREATE TABLE IF NOT EXISTS roster (
  scope TEXT NOT NULL, badge TEXT NOT NULL, employee_id TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (scope, badge));
"""

DEFAULT_SCOPES = "punches:write roster:read config:read"
PUNCH_FIELDS = ("seq", "badge", "kind", "utc_ms", "utc_offset_min", "quality", "uncertainty_ms",
                "employee_id")
EXPORT_COLUMNS = ("device_id", "journal_id", "seq", "badge", "employee_id", "kind", "utc_iso", "local_iso",
                  "utc_ms", "utc_offset_min", "quality", "uncertainty_ms")


def _now_ms() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)


def _iso(ms: int, offset_min: int = 0) -> str:
    tz = dt.timezone(dt.timedelta(minutes=offset_min))
    t = dt.datetime.fromtimestamp(ms / 1000, tz)
    s = t.isoformat(timespec="milliseconds")
    return s.replace("+00:00", "Z") if offset_min == 0 else s


class Store:
    """One SQLite file; safe to call from the server's loop and from a test's thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # -- devices --
    def add_device(self, device_id: str, secret: str | None = None, scopes: str = DEFAULT_SCOPES) -> str:
        secret = secret or secrets.token_urlsafe(18)
        with self._lock:
            self.db.execute("INSERT INTO devices(device_id, secret, scopes) VALUES(?,?,?) "
                            "ON CONFLICT(device_id) DO UPDATE SET secret=excluded.secret,"
                            " scopes=excluded.scopes",
                            (device_id, secret, scopes))
        return secret

    def device(self, device_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute("SELECT device_id, secret, scopes, config FROM devices WHERE device_id=?",
                                  (device_id,)).fetchone()
        if row is None:
            return None
        return {"device_id": row[0], "secret": row[1], "scopes": row[2], "config": json.loads(row[3])}

    def set_config(self, device_id: str, config: dict[str, Any]) -> None:
        with self._lock:
            self.db.execute("UPDATE devices SET config=? WHERE device_id=?",
                            (json.dumps(config, sort_keys=True), device_id))

    # -- punches --
    def store_batch(self, device_id: str, journal_id: str, punches: list[dict[str, Any]]) -> tuple[int, int]:
        """Insert a batch in one transaction; return (inserted, duplicates)."""
        now = _now_ms()
        rows = [(device_id, journal_id, *(p[f] for f in PUNCH_FIELDS), now) for p in punches]
        with self._lock:
            before = self.db.total_changes
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "INSERT OR IGNORE INTO punches(device_id, journal_id, seq, badge, kind, utc_ms,"
                    " utc_offset_min,"
                    " quality, uncertainty_ms, employee_id, received_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?)", rows)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            inserted = self.db.total_changes - before
        return inserted, len(rows) - inserted

    def punches(self, device_id: str | None = None) -> list[dict[str, Any]]:
        q = ("SELECT device_id, journal_id, seq, badge, kind, utc_ms, utc_offset_min, quality,"
             " uncertainty_ms,"
             " employee_id, received_ms FROM punches")
        args: tuple = ()
        if device_id is not None:
            q += " WHERE device_id=?"
            args = (device_id,)
        q += " ORDER BY device_id, journal_id, seq"
        with self._lock:
            rows = self.db.execute(q, args).fetchall()
        keys = ("device_id", "journal_id", "seq", "badge", "kind", "utc_ms", "utc_offset_min", "quality",
                "uncertainty_ms", "employee_id", "received_ms")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def count(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM punches").fetchone()[0]

    def export_csv(self, out: io.TextIOBase, columns: Iterable[str] = EXPORT_COLUMNS,
                   device_id: str | None = None) -> int:
        """Write punches as CSV for payroll; local time is UTC plus the device's offset at the punch."""
        cols = list(columns)
        bad = [c for c in cols if c not in EXPORT_COLUMNS and c != "received_ms"]
        if bad:
            raise ValueError(f"unknown export columns {bad}; known: {', '.join(EXPORT_COLUMNS)}")
        w = csv.writer(out)
        w.writerow(cols)
        n = 0
        for p in self.punches(device_id):
            p["utc_iso"] = _iso(p["utc_ms"])
            p["local_iso"] = _iso(p["utc_ms"], p["utc_offset_min"])
            w.writerow(["" if p[c] is None else p[c] for c in cols])
            n += 1
        return n

    # -- roster (scope "*" is every device's; a device id scope overrides per badge) --
    def import_roster_csv(self, text: str, scope: str = "*", replace: bool = True) -> int:
        rd = csv.DictReader(io.StringIO(text))
        if not rd.fieldnames or not {"badge", "employee_id"} <= set(rd.fieldnames):
            raise ValueError("roster CSV needs a header with badge,employee_id (and optionally name)")
        rows = []
        for i, r in enumerate(rd, start=2):
            badge, emp = (r.get("badge") or "").strip(), (r.get("employee_id") or "").strip()
            if not badge or not emp:
                raise ValueError(f"roster CSV line {i}: badge and employee_id must not be empty")
            rows.append((scope, badge, emp, (r.get("name") or "").strip()))
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    self.db.execute("DELETE FROM roster WHERE scope=?", (scope,))
                self.db.executemany("INSERT OR REPLACE INTO roster VALUES(?,?,?,?)", rows)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return len(rows)

    def roster(self, device_id: str) -> tuple[str, list[dict[str, str]]]:
        """(version, entries) for a device: its own entries over the global ones, sorted by badge."""
        with self._lock:
            rows = self.db.execute("SELECT scope, badge, employee_id, name FROM roster"
                                   " WHERE scope IN ('*', ?) "
                                   "ORDER BY scope='*' DESC, badge", (device_id,)).fetchall()
        merged: dict[str, dict[str, str]] = {}
        for _scope, badge, emp, name in rows:
            merged[badge] = {"badge": badge, "employee_id": emp, "name": name}
        entries = [merged[b] for b in sorted(merged)]
        return version_of(entries), entries


def version_of(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]
