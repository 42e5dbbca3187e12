"""Roster pulls by the uplink: conditional GET with the ETag kept on flash, streamed into the sorted
roster file and swapped in atomically; a bad roster leaves the old one in force."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clockterm_host.central import Handle
from mp import mp_json, script
from test_uplink import config, run


def import_roster(h: Handle, csv_text: str) -> None:
    assert h.admin("/roster", csv_text.encode())["stored"] == csv_text.strip().count("\n")


def pull(h: Handle, fs: Path, lookup: list[str], **kw: Any) -> dict[str, Any]:
    cfg = config(h, initial=3, fs_root=str(fs), stay=True, deadline_ms=1500, lookup=lookup, **kw)
    return run(cfg)


def test_roster_pulled_applied_and_not_downloaded_again(central: Handle, tmp_path: Path) -> None:
    fs = tmp_path / "fs"
    fs.mkdir()
    # Unsorted, mixed case at central: the wire order must be the device's (upper-cased) order.
    rows = [(f"b{i:05d}" if i % 2 else f"B{i:05d}", f"E{i}", f"Name, {i}") for i in range(2500, 0, -1)]
    import_roster(central, "badge,employee_id,name\n" + "".join(f'{b},{e},"{n}"\n' for b, e, n in rows))
    out = pull(central, fs, ["B00001", "B02500", "B01234", "NOPE"])
    assert out["roster_pulls"] == 1 and out["roster_error"] is None, out
    assert out["roster"] == {"badges": 2500, "error": None}
    assert out["lookups"]["B00001"][:2] == ["E1", "Name, 1"]
    assert out["lookups"]["B02500"][:2] == ["E2500", "Name, 2500"]
    assert out["lookups"]["B01234"][:2] == ["E1234", "Name, 1234"]
    assert out["lookups"]["NOPE"] is None
    assert out["acked"] == 3  # punches went first, and still went
    assert out["heap_peak"] < 30_000  # streamed: 2,500 rows never sat in RAM
    etag = (fs / "roster.etag").read_text()
    assert etag.startswith('"') and not (fs / "roster.bin.new").exists()
    before = (fs / "roster.bin").stat().st_mtime_ns

    # A reboot with the same roster at central: a 304, nothing rewritten.
    out = pull(central, fs, ["B00001"], journal_id="j2")
    assert out["roster_pulls"] == 0 and out["roster_error"] is None, out
    assert out["lookups"]["B00001"][:2] == ["E1", "Name, 1"]
    assert (fs / "roster.bin").stat().st_mtime_ns == before

    # A changed roster is fetched and replaces the old one whole.
    import_roster(central, "badge,employee_id,name\nFF01,E9,Zed\n")
    out = pull(central, fs, ["B00001", "FF01"], journal_id="j3")
    assert out["roster_pulls"] == 1 and out["roster"]["badges"] == 1
    assert out["lookups"]["B00001"] is None and out["lookups"]["FF01"][:2] == ["E9", "Zed"]
    assert (fs / "roster.etag").read_text() != etag


def test_bad_roster_keeps_the_old_one(central: Handle, tmp_path: Path) -> None:
    fs = tmp_path / "fs"
    fs.mkdir()
    import_roster(central, "badge,employee_id,name\nA1,E1,Ann\nA2,E2,Al\n")
    assert pull(central, fs, ["A1"])["roster"]["badges"] == 2
    etag = (fs / "roster.etag").read_text()
    # A central that does not check (the reference one refuses it: tests/test_roster_rules.py) serves a badge
    # longer than the device's 20 bytes in the middle of the roster: the terminal rejects it whole.
    central.store.import_roster([("A1", "E1", "Ann"), ("A" + "9" * 20, "E3", "Long"), ("B1", "E4", "Bo")])
    out = pull(central, fs, ["A1", "B1"], journal_id="j2")
    assert out["roster_pulls"] == 0 and "row 2: badge" in out["roster_error"], out
    assert out["roster"] == {"badges": 2, "error": None}
    assert out["lookups"]["A1"][:2] == ["E1", "Ann"] and out["lookups"]["B1"] is None
    assert (fs / "roster.etag").read_text() == etag  # asked again next time
    assert not (fs / "roster.bin.new").exists()
    assert out["acked"] == 3 and json.dumps(out["last_error"]).count("roster") == 1


def test_a_damaged_etag_file_is_no_etag(central: Handle, tmp_path: Path) -> None:
    # roster.etag broken on flash (not UTF-8, a line break that would add a header of its own): the
    # pull goes without If-None-Match, takes the whole roster and writes the new ETag, instead of
    # failing at every try.
    fs = tmp_path / "fs"
    fs.mkdir()
    import_roster(central, "badge,employee_id,name\nA1,E1,Ada L.\n")
    for damaged in (b'"v1"\xff\xfe', b'"v1"\r\nX-Injected: 1'):
        (fs / "roster.etag").write_bytes(damaged)
        out = pull(central, fs, ["A1"])
        assert out["roster_pulls"] == 1 and out["roster_error"] is None, out
        assert out["lookups"]["A1"][:2] == ["E1", "Ada L."]
        assert (fs / "roster.etag").read_bytes().startswith(b'"') and b"\r" not in (fs / "roster.etag").read_bytes()


def test_pulls_whose_code_cannot_load(tmp_path: Path) -> None:
    """The pulls' module is loaded for them only: when it cannot be (a MemoryError on a cut-up heap), both
    pulls fail with that error in roster_error and config_error, and the uplink itself has not failed (no
    backoff, no failure counted: the punches go on)."""
    out = mp_json(script("uplink_pulls_mp.py", {"FS": str(tmp_path)}, "main()"))
    assert out == {"failures": 0, "state": "idle", "roster_error": "roster: memory allocation failed",
                   "config_error": "config: memory allocation failed"}, out
