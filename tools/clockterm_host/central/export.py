"""Payroll exports from the central's punches: the punches themselves, and IN/OUT pairs per person and day.

Both are CSV that a spreadsheet opens (RFC 4180, CRLF line ends; Excel's UTF-8 BOM on request) over a
date range in one time zone (UTC or an IANA zone such as Europe/Berlin: the range's days and the
date/time columns are that zone's civil time; `local_iso` stays the terminal's own offset at the punch,
what its display showed). Names come from the roster as the central holds it now.

Pairs (report "pairs"): per person (employee id), in time order, an IN followed by an OUT within
max_shift_h hours is a pair; its worked time is OUT - IN. A pair belongs to the day of its IN, also
when it ends after midnight (flag over_midnight): a night shift counts once, on the day it began, so
a range picks up the OUT that follows its last day and leaves out the OUT of a shift begun before its
first day. Unpaired punches are rows of their own, flagged: an IN with no OUT (missing_out; `open`
when it is recent enough that the shift may still be going on), an OUT with no IN before it within
max_shift_h (missing_in). Punches stamped without a synced clock are flagged unsynced.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .store import Store

# Columns of the punch report, in the order `all` gives them.
PUNCH_COLUMNS = ("date", "time", "employee_id", "name", "kind", "device_id", "badge", "quality", "utc_iso",
                 "local_iso", "utc_ms", "utc_offset_min", "uncertainty_ms", "journal_id", "seq", "received_ms")
DEFAULT_COLUMNS = ("date", "time", "employee_id", "name", "kind", "device_id", "badge", "quality")
PAIR_COLUMNS = ("employee_id", "name", "date", "in_time", "out_date", "out_time", "in_device", "out_device",
                "worked_min", "worked_h", "flags")
REPORTS = ("punches", "pairs")
MAX_SHIFT_H = 16  # hours an IN waits for its OUT (the terminal's default work-day rule)
_UNSYNCED = ("unsynced", "stale")


class ExportError(ValueError):
    """Bad export parameters (unknown column, zone or date); the message says which."""


def zone(name: str) -> dt.tzinfo:
    """UTC, or an IANA time zone by name."""
    if name.upper() in ("UTC", "Z"):
        return dt.timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(f"unknown time zone {name!r} (use UTC or an IANA name such as Europe/Berlin)") from None


def bound_ms(text: str, tz: dt.tzinfo, end: bool = False) -> int:
    """A range bound in Unix ms: a date (YYYY-MM-DD: its midnight in tz; as an end, the midnight after
    it, so that the day is included) or an ISO date-time (in tz unless it names its offset)."""
    try:
        if len(text) == 10:
            d = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), tz)
            if end:
                d = dt.datetime.combine(d.date() + dt.timedelta(days=1), dt.time(), tz)
        else:
            d = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if d.tzinfo is None:
                d = d.replace(tzinfo=tz)
    except ValueError:
        raise ExportError(f"bad date {text!r} (YYYY-MM-DD or an ISO date-time)") from None
    return int(d.timestamp() * 1000)


def _civil(ms: int, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz)


def _iso(ms: int, offset_min: int = 0) -> str:
    t = _civil(ms, dt.timezone(dt.timedelta(minutes=offset_min)))
    s = t.isoformat(timespec="milliseconds")
    return s.replace("+00:00", "Z") if offset_min == 0 else s


def columns(spec: str | Iterable[str] | None) -> list[str]:
    """The punch report's columns from "a,b,c" (or "all"); ExportError for an unknown one."""
    if spec is None:
        return list(DEFAULT_COLUMNS)
    cols = [c.strip() for c in (spec.split(",") if isinstance(spec, str) else spec) if c.strip()]
    if cols == ["all"]:
        return list(PUNCH_COLUMNS)
    bad = [c for c in cols if c not in PUNCH_COLUMNS]
    if bad or not cols:
        raise ExportError(f"unknown export columns {bad}; known: {', '.join(PUNCH_COLUMNS)} (or all)")
    return cols


_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet takes as the start of a formula


class _Writer:
    """csv.writer whose text cells cannot run as a spreadsheet formula: a name, an employee id or a badge
    that begins with = + - @ (or a tab, a CR) is written with a ' before it, which spreadsheets show as
    text (OWASP's advice on CSV injection); numbers are written as they are."""

    def __init__(self, out: IO[str], delimiter: str):
        self.w = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")

    def writerow(self, row: Iterable[Any]) -> None:
        self.w.writerow(["'" + v if isinstance(v, str) and v.startswith(_FORMULA) else v for v in row])


def _writer(out: IO[str], bom: bool, delimiter: str) -> _Writer:
    if bom:
        out.write("\ufeff")
    return _Writer(out, delimiter)


def _names(store: Store, punches: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    # (device_id, employee_id) -> name, from each device's roster view.
    names = {}
    for dev in {p["device_id"] for p in punches}:
        for emp, name in store.names(dev).items():
            names[(dev, emp)] = name
    return names


def punches_csv(store: Store, out: IO[str], cols: list[str], start_ms: int | None, end_ms: int | None,
                tz: dt.tzinfo, device_id: str | None = None, bom: bool = False, delimiter: str = ",") -> int:
    """The punch report: one row per punch in [start_ms, end_ms), in time order; returns the rows."""
    rows = store.punches(device_id, start_ms, end_ms)
    names = _names(store, rows)
    w = _writer(out, bom, delimiter)
    w.writerow(cols)
    for p in rows:
        t = _civil(p["utc_ms"], tz)
        p["date"] = t.date().isoformat()
        p["time"] = t.strftime("%H:%M:%S")
        p["name"] = names.get((p["device_id"], p["employee_id"]), "")
        p["utc_iso"] = _iso(p["utc_ms"])
        p["local_iso"] = _iso(p["utc_ms"], p["utc_offset_min"])
        w.writerow(["" if p[c] is None else p[c] for c in cols])
    return len(rows)


def pairs(punches: list[dict[str, Any]], max_shift_ms: int, now_ms: int) -> list[dict[str, Any]]:
    """IN/OUT pairs (and unpaired punches) per employee, in time order (see the top of this file): dicts
    with employee_id, in, out (punch dicts or None), flags."""
    by: dict[str, list[dict[str, Any]]] = {}
    for p in punches:
        if p["employee_id"] and p["kind"] in ("in", "out"):
            by.setdefault(p["employee_id"], []).append(p)
    out = []
    for emp, ps in by.items():
        ps.sort(key=lambda p: (p["utc_ms"], p["device_id"], p["seq"]))
        open_in = None
        for p in ps:
            if p["kind"] == "in":
                if open_in is not None:
                    out.append({"employee_id": emp, "in": open_in, "out": None, "flags": ["missing_out"]})
                open_in = p
            elif open_in is not None and p["utc_ms"] - open_in["utc_ms"] <= max_shift_ms:
                out.append({"employee_id": emp, "in": open_in, "out": p, "flags": []})
                open_in = None
            else:
                if open_in is not None:
                    out.append({"employee_id": emp, "in": open_in, "out": None, "flags": ["missing_out"]})
                    open_in = None
                out.append({"employee_id": emp, "in": None, "out": p, "flags": ["missing_in"]})
        if open_in is not None:
            flag = "open" if now_ms - open_in["utc_ms"] < max_shift_ms else "missing_out"
            out.append({"employee_id": emp, "in": open_in, "out": None, "flags": [flag]})
    out.sort(key=lambda r: ((r["in"] or r["out"])["utc_ms"], r["employee_id"]))
    return out


def pairs_csv(store: Store, out: IO[str], start_ms: int, end_ms: int, tz: dt.tzinfo,
              device_id: str | None = None, bom: bool = False, delimiter: str = ",",
              max_shift_h: float = MAX_SHIFT_H, now_ms: int | None = None) -> int:
    """The pairs report over the days of [start_ms, end_ms): a row per pair or unpaired punch, anchored
    at its IN (or its OUT when it has none); returns the rows."""
    span = int(max_shift_h * 3_600_000)
    punches = store.punches(device_id, start_ms - span, end_ms + span)
    names = _names(store, punches)
    now_ms = now_ms if now_ms is not None else int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    w = _writer(out, bom, delimiter)
    w.writerow(PAIR_COLUMNS)
    n = 0
    for r in pairs(punches, span, now_ms):
        anchor = r["in"] or r["out"]
        if not start_ms <= anchor["utc_ms"] < end_ms:
            continue
        pin, pout = r["in"], r["out"]
        flags = list(r["flags"])
        t_in = _civil(pin["utc_ms"], tz) if pin else None
        t_out = _civil(pout["utc_ms"], tz) if pout else None
        if t_in and t_out and t_out.date() != t_in.date():
            flags.append("over_midnight")
        if any(p and p["quality"] in _UNSYNCED for p in (pin, pout)):
            flags.append("unsynced")
        minutes = round((pout["utc_ms"] - pin["utc_ms"]) / 60000) if pin and pout else None
        w.writerow([
            r["employee_id"], names.get((anchor["device_id"], r["employee_id"]), ""),
            (t_in or t_out).date().isoformat(),
            t_in.strftime("%H:%M:%S") if t_in else "",
            t_out.date().isoformat() if t_out else "", t_out.strftime("%H:%M:%S") if t_out else "",
            pin["device_id"] if pin else "", pout["device_id"] if pout else "",
            "" if minutes is None else minutes, "" if minutes is None else f"{minutes / 60:.2f}",
            ";".join(flags),
        ])
        n += 1
    return n


def export(store: Store, out: IO[str], report: str = "punches", start: str | None = None, end: str | None = None,
           tz_name: str = "UTC", device_id: str | None = None, cols: str | Iterable[str] | None = None,
           bom: bool = False, delimiter: str = ",", max_shift_h: float = MAX_SHIFT_H) -> int:
    """One report by name over a date range (bounds as bound_ms reads them; the pairs report needs both),
    written to out; returns the rows. ExportError for bad parameters."""
    if report not in REPORTS:
        raise ExportError(f"unknown report {report!r} (one of {', '.join(REPORTS)})")
    if delimiter not in (",", ";", "\t"):
        raise ExportError("delimiter: one of , ; or a tab")
    if not 0 < max_shift_h <= 72:
        raise ExportError("max_shift_h: more than 0, at most 72 hours")
    tz = zone(tz_name)
    start_ms = bound_ms(start, tz) if start else None
    end_ms = bound_ms(end, tz, end=True) if end else None
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ExportError(f"empty range: {end} is not after {start}")
    if report == "pairs":
        if start_ms is None or end_ms is None:
            raise ExportError("the pairs report needs a range (from and to)")
        if cols is not None:
            raise ExportError(f"the pairs report has fixed columns: {', '.join(PAIR_COLUMNS)}")
        return pairs_csv(store, out, start_ms, end_ms, tz, device_id, bom, delimiter, max_shift_h)
    return punches_csv(store, out, columns(cols), start_ms, end_ms, tz, device_id, bom, delimiter)
