"""The tap path end to end on a sim terminal: roster, toggling, unknown badges, duplicates, full journal
(whose error lines make a STATUS answer larger than the answer buffer)."""

from __future__ import annotations

import json
import re

from clockterm_host import roster
from clockterm_host.defaults import default_config
from clockterm_host.runner import Terminal
from clockterm_host.sim import free_port

ROSTER = "badge,employee_id,name\n04A1B2C3,E100,Ada L.\n04D5E6F7,E200,Grace H.\n123:45678,E300,Wiegand W.\n"


def start(tmp_path, roster_csv: str | None = ROSTER, **changes) -> Terminal:
    cfg = default_config("sim")
    cfg["sim"]["control_port"] = free_port()
    cfg["sntp"]["port"] = free_port()
    for section, values in changes.items():
        cfg[section].update(values)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    state = tmp_path / "state"
    if roster_csv:
        roster.install_sim(state, roster.read_csv(roster_csv))
    return Terminal(path, state).start()


def test_known_badges_toggle_in_and_out(tmp_path):
    term = start(tmp_path, terminal={"duplicate_window_s": 0})
    try:
        assert term.tap("04A1B2C3").startswith("OK 1 ")
        assert term.tap("04D5E6F7").startswith("OK 2 ")
        assert term.tap("04A1B2C3").startswith("OK 3 ")
        assert term.tap("123:45678").startswith("OK 4 ")
        out = term.console()
        lines = re.findall(r"\[display\] (.*?)  \[beep:(\w+)\]", out)
        assert [(t.split()[0], t.split(" ", 2)[2], b) for t, b in lines] == [
            ("IN", "Ada L.", "ok"), ("IN", "Grace H.", "ok"), ("OUT", "Ada L.", "ok"), ("IN", "Wiegand W.", "ok")]
        st = term.status()
        assert st["roster"] == {"badges": 3, "error": None}
        assert st["journal"]["last_seq"] == 4
    finally:
        term.stop()


def test_unknown_badge_policies(tmp_path):
    term = start(tmp_path / "a", terminal={"unknown_badge": "deny"})
    try:
        assert term.tap("DEADBEEF") == "DENY unknown badge"
        assert "[display] UNKNOWN BADGE  [beep:deny]" in term.console()
        assert term.tap("04A1B2C3").startswith("OK 1 ")
        assert term.status()["terminal"]["counts"]["unknown_denied"] == 1
    finally:
        term.stop()
    term = start(tmp_path / "b", terminal={"unknown_badge": "record"})
    try:
        assert term.tap("DEADBEEF").startswith("OK 1 ")
    finally:
        term.stop()


def test_fixed_kind_and_duplicate_window(tmp_path):
    term = start(tmp_path, terminal={"kind_mode": "out", "duplicate_window_s": 3600})
    try:
        assert term.tap("04A1B2C3").startswith("OK 1 ")
        assert term.tap("04A1B2C3") == "DENY duplicate"
        assert term.tap("04D5E6F7").startswith("OK 2 ")
        assert re.findall(r"\[display\] (OUT) \d\d:\d\d Ada L\.", term.console()) == ["OUT"]
    finally:
        term.stop()


def test_full_journal_is_refused_with_memory_full(tmp_path):
    # A tiny journal partition with no uplink to empty it: it fills, then every tap is refused
    # with DENY memory full, and nothing already stored is lost.
    term = start(tmp_path, roster_csv=None, sim={"journal_kb": 16}, terminal={"duplicate_window_s": 0})
    try:
        oks = 0
        answer = ""
        for i in range(5000):
            answer = term.tap(f"{i:08X}")
            if not answer.startswith("OK"):
                break
            oks += 1
        assert answer == "DENY memory full"
        assert oks > 100
        assert term.tap("04A1B2C3") == "DENY memory full"
        assert "MEMORY FULL" in term.console()
        st = term.status()
        assert st["journal"]["last_seq"] == oks
        assert st["terminal"]["counts"]["full"] == 2
        term.kill()
        term.start()
        assert term.status()["journal"]["last_seq"] == oks
        assert term.tap("04A1B2C4") == "DENY memory full"
        # Each refusal is an error line kept for STATUS (the last 8): the answer grows past the 1.5 KB
        # answer buffer (app._OUT_BYTES) and still comes back whole, one line of JSON.
        badges = [f"{i:020X}" for i in range(8)]
        for b in badges:
            assert term.tap(b) == "DENY memory full"
        line = term.send("STATUS")
        assert len(line) > 2048
        st = json.loads(line)
        assert [e.rsplit(" ", 2)[-2] for e in st["errors"]] == badges
        assert st["journal"]["last_seq"] == oks and st["terminal"]["counts"]["full"] == 9
    finally:
        term.stop()


def test_duplicate_window_ring_under_micropython() -> None:
    from mp import mp_json, script

    out = mp_json(script("tap_path_mp.py", {"CASE": "ring"}, "main()"))
    assert out["first"] == ["OK", "DENY", "OK", "OK", "OK", "DENY"], out  # "abc" is "ABC" normalized
    assert out["still"] == "DENY" and out["evicted"] == "OK", out
    assert out["expired"] == "OK", out
    assert out["full"] <= 256, out  # no heap kept per badge (as str objects: 16 x 64 bytes, 1120 seen)


def test_duplicate_window_survives_ticks_wrapping() -> None:
    # ticks_ms wraps every ~12.4 days on an ESP32 (2**30 ms; never on this 64-bit host): a badge
    # tapped again a week later must not be taken for a duplicate of its last punch.
    from mp import mp_json, script

    out = mp_json(script("tap_path_mp.py", {"CASE": "wrap"}, "main()"))
    assert out["taps"] == ["OK", "OK", "DENY"], out
    assert out["after_wrap"] == "OK", out
