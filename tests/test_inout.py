"""In/out state (toggle mode) that survives power cuts, reboots and roster swaps: rebuilt from the
journal over the work-day window, on the real interpreter and end to end on sim terminals."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import e2e
from clockterm_host import roster
from clockterm_host.central.cli import main as central_main
from clockterm_host.sntp_server import SntpServer
from mp import mp_json, script


def test_state_rebuilt_from_the_journal_under_micropython(tmp_path: Path) -> None:
    out = mp_json(script("inout_mp.py", {"D": str(tmp_path)}), timeout=300)
    assert out["first"] == ["IN", "IN", "OUT", "IN"], out
    assert out["after_boot"] == ["IN", "OUT", 2], out  # A was OUT, D was IN before the cut
    assert out["after_swap_tap"] == ["OUT", "IN"], out  # A kept its IN across the swap; AAAA is new
    assert out["after_swap_people"] == 1, out  # 123:45678 left the roster, A went out, AAAA came in
    assert out["aged_people"] == 0 and out["aged"] == "IN", out
    assert out["mid_tap"] == [True, "OUT", "IN"], out
    assert out["after_mid"] == ["IN", "OUT", 2], out  # 0000 and AAAA
    assert out["outage"] == [0, "IN"], out
    # A lost clock (2000-01-01): the window counts back from the newest journal segment's first punch, so
    # the last punches still decide (0000 and AAAA are in).
    assert out["lost_clock"] == [2, "2026", "OUT"], out
    assert out["status"]["inside"] == 1 and 1795500000000 < out["status"]["inside_since_ms"] < 1795700000000, out
    assert out["broken"] == ["IN", "OUT", 0, 1], out  # the second tap: the first set its bit
    # recent(): the punches of the last hour begin at seq 240; a segment holds some 25 punches, so the
    # replay starts at most a segment earlier; with the clock lost, it counts back from the newest segment.
    last, (after, since), (after_lost, since_lost) = out["recent"]
    assert last == 300 and 240 - 30 <= after < 240 and since == 1795600000000 + 239 * 60000, out["recent"]
    assert 300 - 60 - 30 <= after_lost < 300 - 25 and since_lost > 1795600000000, out["recent"]
    assert out["reassigned"] == ["IN", "IN", "IN", "OUT"], out  # the badge's new holder: IN, not OUT


# --- end to end on sim terminals: kill -9 is a power cut ----------------------------------------------

A, B, C, D = "04A1B2C3", "04D5E6F7", "123:45678", "0A0B0C0D"


def roster_csv(*badges: str) -> str:
    return "badge,employee_id,name\n" + "".join(f"{b},E{b.replace(':', '')[-6:]},Name {b[:4]}\n" for b in badges)


def kind(term: Any, badge: str) -> str:
    """Tap and give the kind the terminal chose (its display line), or the answer when refused."""
    answer = term.tap(badge)
    if not answer.startswith("OK "):
        return answer
    text = term.status()["terminal"]["last_result"]
    return "unknown" if "UNKNOWN BADGE" in text else text.split()[0]


def inside(term: Any) -> dict[str, Any]:
    """STATUS terminal (inside, inside_since_ms) once the boot's rebuild of the in/out state is done."""
    return e2e.wait_for(lambda: (lambda st: st if st["inside_since_ms"] else None)(term.status()["terminal"]), 30,
                        "the in/out state rebuilt")


def shift_rtc(state: Path, ms: int) -> None:
    # The sim board's battery RTC is host time plus an offset kept in rtc.json: move it (an outage of ms).
    path = state / "rtc.json"
    rtc = json.loads(path.read_text())
    rtc["value_ms"] += ms
    path.write_text(json.dumps(rtc))


def test_toggle_state_across_kill_9_roster_swaps_and_a_long_outage(tmp_path: Path) -> None:
    cfg = e2e.config(terminal={"duplicate_window_s": 0, "shift_max_h": 2})  # no time server: the RTC's time
    term = e2e.terminal(tmp_path, cfg, start=False)
    roster.install_sim(term.state, roster.read_csv(roster_csv(A, B, C)))
    term.start()
    try:
        assert [kind(term, b) for b in (A, B, A, C)] == ["IN", "IN", "OUT", "IN"]
        term.kill()  # power cut
        term.start()
        st = inside(term)
        assert st["inside"] == 2 and 7190 < e2e.host_ms() / 1000 - st["inside_since_ms"] / 1000 < 7300, st
        assert [kind(term, b) for b in (A, B)] == ["IN", "OUT"]
        # A new roster while off: badges that sort before A move every index, B leaves, D joins.
        term.kill()
        roster.install_sim(term.state, roster.read_csv(roster_csv("0000", "0001", A, C, D)))
        term.start()
        assert inside(term)["inside"] == 2  # A and C
        assert [kind(term, b) for b in (A, C, D, B)] == ["OUT", "OUT", "IN", "unknown"]
        # Three hours off (the work-day rule is two): every IN is stale, the next tap is IN again.
        term.kill()
        shift_rtc(term.state, 3 * 3_600_000)
        term.start()
        st = inside(term)
        assert st["inside"] == 0, st
        assert kind(term, D) == "IN"
        # Half an hour off: still inside.
        term.kill()
        shift_rtc(term.state, 1_800_000)
        term.start()
        assert kind(term, D) == "OUT"
    finally:
        term.stop()


def test_state_through_the_central_roster_swap_and_export(tmp_path: Path) -> None:
    # The real path: the terminal pulls its roster from the central once its clock is synced; a new roster
    # there is swapped in while it runs (here after a power cut: the boot rebuild is made for the roster on
    # flash, then the pulled one replaces it). Then the day's punches come back out of the central's export.
    central = e2e.start_central(tmp_path)
    sntp = SntpServer().start()
    term = None
    try:
        central.store.import_roster_csv(roster_csv(A, B, C))
        cfg = e2e.config(sntp.port, central, sntp={"min_poll_s": 1, "timeout_ms": 300},
                         terminal={"duplicate_window_s": 0})
        term = e2e.terminal(tmp_path, cfg)
        e2e.wait_for(lambda: term.status()["roster"]["badges"] == 3, 30, "the first roster pulled")
        assert [kind(term, b) for b in (A, B, A, C, A)] == ["IN", "IN", "OUT", "IN", "IN"]
        central.store.import_roster_csv(roster_csv("0000", "0001", "0002", A, C, D))
        term.kill()
        term.start()
        e2e.wait_for(lambda: term.status()["roster"]["badges"] == 6, 30, "the new roster pulled")
        # A and C, at their new places; B left the roster (rebuilt in the background after the swap)
        e2e.wait_for(lambda: term.status()["terminal"]["inside"] == 2, 30, "the rebuild after the swap")
        assert [kind(term, b) for b in (A, D, C)] == ["OUT", "IN", "OUT"]
        seqs = term.status()["journal"]["last_seq"]
        e2e.wait_for(lambda: central.store.count() == seqs, 30, "every punch at the central")
        out = tmp_path / "pairs.csv"
        today = dt.datetime.now(dt.timezone.utc).date()
        first, last = (today - dt.timedelta(days=1)).isoformat(), (today + dt.timedelta(days=1)).isoformat()
        assert central_main(["central", "export", "--state", str(central.state), "--report", "pairs",
                             "--from", first, "--to", last, "-o", str(out)]) == 0
        rows = list(csv.DictReader(out.open(newline="")))
        got = sorted((r["employee_id"], bool(r["in_time"]), bool(r["out_time"]), r["flags"]) for r in rows)
        ea, eb, ec, ed = (f"E{b.replace(':', '')[-6:]}" for b in (A, B, C, D))
        assert got == sorted([(ea, True, True, ""), (ea, True, True, ""), (eb, True, False, "open"),
                              (ec, True, True, ""), (ed, True, False, "open")]), got
        out = tmp_path / "punches.csv"
        assert central_main(["central", "export", "--state", str(central.state), "--from", first, "--to", last,
                             "--columns", "seq,kind,name", "-o", str(out)]) == 0
        rows = list(csv.DictReader(out.open(newline="")))
        assert [r["kind"] for r in rows] == ["in", "in", "out", "in", "in", "out", "in", "out"]
        assert [int(r["seq"]) for r in rows] == list(range(1, 9)) and rows[0]["name"] == "Name 04A1"
    finally:
        if term is not None:
            term.stop()
        sntp.stop()
        central.stop()

