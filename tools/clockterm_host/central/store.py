"""SQLite storage of the reference central: devices, punches (deduplicated), rosters, configs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable
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
PUNCH_KEYS = ("device_id", "journal_id", "seq", "badge", "kind", "utc_ms", "utc_offset_min", "quality",
              "uncertainty_ms", "employee_id", "received_ms")


def _now_ms() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)


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

    def punches(self, device_id: str | None = None, start_ms: int | None = None,
                end_ms: int | None = None) -> list[dict[str, Any]]:
        """Stored punches (of one device, with start_ms <= utc_ms < end_ms when given), in time order."""
        q = ("SELECT device_id, journal_id, seq, badge, kind, utc_ms, utc_offset_min, quality,"
             " uncertainty_ms, employee_id, received_ms FROM punches WHERE 1=1")
        args: list[Any] = []
        for cond, v in ((" AND device_id=?", device_id), (" AND utc_ms>=?", start_ms), (" AND utc_ms<?", end_ms)):
            if v is not None:
                q += cond
                args.append(v)
        q += " ORDER BY utc_ms, device_id, journal_id, seq"
        with self._lock:
            rows = self.db.execute(q, args).fetchall()
        return [dict(zip(PUNCH_KEYS, r, strict=True)) for r in rows]

    def count(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM punches").fetchone()[0]

    # -- roster (scope "*" is every device's; a device id scope overrides per badge) --
    # Every row stored passed the terminal's rules (clockterm_host.roster.check), and so does every
    # device's view (its own rows over the global ones): what a terminal pulls, it takes.
    def import_roster(self, rows: list[tuple[str, str, str]], scope: str = "*", replace: bool = True,
                      check: Callable[[str, list[tuple[str, str, str]]], object] | None = None) -> int:
        """Store checked rows (badge, employee_id, name) for a scope, replacing it (or merged into it,
        a row per badge); returns the rows the scope now holds. `check(who, rows)` is called with each
        device view the change makes (raise to refuse: nothing is stored)."""
        with self._lock:
            kept = {} if replace else {b: (b, e, n) for b, e, n in self.db.execute(
                "SELECT badge, employee_id, name FROM roster WHERE scope=?", (scope,))}
            scopes = [r[0] for r in self.db.execute("SELECT DISTINCT scope FROM roster WHERE scope != '*'")]
            glob = {b: (b, e, n) for b, e, n in self.db.execute(
                "SELECT badge, employee_id, name FROM roster WHERE scope='*'")}
        new = {**kept, **{r[0]: tuple(r) for r in rows}}
        if check is not None:
            if scope == "*":
                views = [("every device", new)] + [(f"device {s}", {**new, **self._scope_rows(s)}) for s in scopes]
            else:
                views = [(f"device {scope}", {**glob, **new})]
            for who, v in views:
                check(who, sorted(v.values(), key=lambda r: r[0].encode()))
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("DELETE FROM roster WHERE scope=?", (scope,))
                self.db.executemany("INSERT INTO roster VALUES(?,?,?,?)", [(scope, *r) for r in new.values()])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return self.db.execute("SELECT COUNT(*) FROM roster WHERE scope=?", (scope,)).fetchone()[0]

    def _scope_rows(self, scope: str) -> dict[str, tuple[str, str, str]]:
        with self._lock:
            return {b: (b, e, n) for b, e, n in self.db.execute(
                "SELECT badge, employee_id, name FROM roster WHERE scope=?", (scope,))}

    def import_roster_checked(self, rows: list[tuple[str, str, str]], scope: str = "*", replace: bool = True) -> int:
        """Rows that passed the terminal's rules (clockterm_host.roster.read_csv) stored for a scope, once
        every device view they make passes them too (RosterError otherwise, nothing stored); returns the
        rows the scope now holds."""
        from .. import roster

        def check(who: str, view: list[tuple[str, str, str]]) -> None:
            if len(view) == len(rows) and scope == "*" and replace:
                return  # the rows as read: checked already
            try:
                roster.check([roster.Row(0, *r) for r in view])
            except roster.RosterError as e:
                raise roster.RosterError([f"{who}'s roster with this one: {p}" for p in e.problems]) from None

        return self.import_roster(rows, scope, replace, check)

    def import_roster_csv(self, data: str | bytes, scope: str = "*", replace: bool = True) -> int:
        """A roster CSV checked by the terminal's rules (clockterm_host.roster; RosterError names each
        bad row) and stored; returns the rows the scope now holds."""
        from .. import roster

        return self.import_roster_checked(roster.read_csv(data), scope, replace)

    def roster_scope(self, scope: str) -> list[tuple[str, str, str]]:
        """The rows stored for one scope, sorted by badge."""
        return sorted(self._scope_rows(scope).values(), key=lambda r: r[0].encode())

    def roster(self, device_id: str) -> tuple[str, list[dict[str, str]]]:
        """(version, entries) for a device: its own entries over the global ones, sorted by badge as the
        terminal orders them (bytes of the upper-case id)."""
        merged = {**self._scope_rows("*"), **self._scope_rows(device_id)}
        entries = [{"badge": b, "employee_id": e, "name": n}
                   for b, e, n in sorted(merged.values(), key=lambda r: r[0].encode())]
        return version_of(entries), entries

    def names(self, device_id: str) -> dict[str, str]:
        """employee_id -> name in a device's roster view (for exports)."""
        return {e["employee_id"]: e["name"] for e in self.roster(device_id)[1]}


def version_of(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]
