"""The ESP32 board layer on the unix port, against stand-ins for machine/network/esp32 (no radio here)."""

from __future__ import annotations

import json
from pathlib import Path

from mp import mp_json, script

FAKES = str(Path(__file__).resolve().parent / "fakes")


def _board(reader: dict, network_cfg: dict | None = None, **extra) -> str:
    cfg = {"board": "t", "chip": "esp32", "heap": "100K",
           "flash": {"size_mb": 4, "journal": {"backend": "raw", "partition": "journal", "size_kb": 128}},
           "reader": reader, "indicators": {"buzzer": 25, "led_ok": 26, "led_err": 27, "display": None},
           "network": network_cfg or {"type": "wifi"}, "watchdog_ms": 8000, "safe_mode_pin": 0}
    cfg.update(extra)
    return json.dumps(cfg)


TERM_CFG = json.dumps({"network": {"wifi_ssid": "shop", "wifi_password": "pw", "static_ip": None}})


def case(name: str, board: str, term: str = TERM_CFG, timeout: float = 120) -> dict:
    """Run a case of tests/board_esp32_mp.py on the board config `board` and the terminal config `term`."""
    settings = {"CASE": name, "FAKES": FAKES, "BOARD": board, "TERM": term}
    out = mp_json(script("board_esp32_mp.py", settings, "main()"), timeout=timeout)
    assert isinstance(out, dict)
    return out


def test_readers_are_built_from_the_board_config():
    out = case("readers", _board({"type": "x"}))
    assert out["wiegand"] == ["wiegand", "Wiegand", 20, None]
    assert out["mfrc522"][:2] == ["mfrc522", "MFRC522"] and out["mfrc522"][3] is None
    assert out["rdm6300"] == ["rdm6300", "RDM6300", 20, None]
    assert out["line"] == ["line", "LineReader", 20, None]
    assert out["bad"] == "reader.type: unknown reader 'barcode'"


def test_wifi_link_reconnects_with_backoff():
    out = case("wifi_link", _board({"type": "wiegand", "d0": 32, "d1": 33}), timeout=60)
    assert out["up"]["up"] is True and out["up"]["failures"] == 2 and out["up"]["ip"] == "192.0.2.10"
    # dropped: noticed within a check, counted, and reconnected after the (reset) short backoff
    assert out["down"]["up"] is True and out["down"]["failures"] == 3
    assert out["connects"] == [["connect", "shop"]] * 4


def test_static_ip_ethernet_watchdog_rtc_and_safe_mode():
    static = json.dumps({"network": {"static_ip": "10.1.2.3/16", "gateway": "10.1.0.1", "dns": "10.1.0.2"}})
    out = case("static_ip", _board({"type": "wiegand", "d0": 36, "d1": 39},
                                   {"type": "ethernet", "phy": "LAN8720", "mdc": 23, "mdio": 18, "power": 12}),
               static)
    assert out["ifconfig"] == [["ifconfig", ["10.1.2.3", "255.255.0.0", "10.1.0.1", "10.1.0.2"]]]
    assert out["lan"] == [["LAN", ["mdc", "mdio", "phy_addr", "phy_type", "power"]]]
    assert out["safe"] is True and out["safe_released"] is False
    assert out["wdt_unstarted_hold"] == []  # held before any feed: none started
    assert out["wdt"] == [["WDT", 8000]]  # started once, on the first feed
    assert out["wdt_held"] == [["WDT", 8000], ["WDT", 3600000]]  # a Ctrl-C: an hour for the technician
    # 2025-11-25 14:13:20.123 UTC, a Tuesday (weekday 1)
    assert out["rtc"] == [["RTC.datetime", [2025, 11, 25, 1, 14, 13, 20, 123000]]]
    assert out["journal_size"] == 8
    assert out["wdt_reset"] is True


def test_display_shows_idle_state_and_feedback() -> None:
    # The app's idle lines and a tap's feedback reach the SSD1306 screen: time, sync state, the
    # result, the backlog as a number (a backlog taken as text made every later feedback raise).
    out = case("display", _board({"type": "wiegand", "d0": 32, "d1": 33}))
    assert out["shown"] == [["08:01", "SYNCED", "", 3], ["08:01", "SYNCED", "IN 08:01 Ada L.", 3],
                            ["08:02", "STALE", "IN 08:01 Ada L.", 0]], out
    assert out["errors"] == 0


def test_feedback_beeps_and_lights() -> None:
    # Each feedback code's beep (buzzer frequency, on and off, with the waits between) and light, the
    # light going off 1.5 s after the beep; the waits recorded instead of slept.
    out = case("beeps", _board({"type": "wiegand", "d0": 32, "d1": 33}))
    end = [["wait", 1500]]
    assert out["ok"] == [["green", 1], ["hz", 2700], ["on"], ["wait", 80], ["off"]] + end + [["green", 0]]
    assert out["dup"] == [["red", 1], ["hz", 2700], ["on"], ["wait", 40], ["off"], ["wait", 60], ["hz", 2700],
                          ["on"], ["wait", 40], ["off"]] + end + [["red", 0]]
    assert out["deny"] == [["red", 1], ["hz", 900], ["on"], ["wait", 400], ["off"]] + end + [["red", 0]]
    beep = [["hz", 900], ["on"], ["wait", 150]]
    assert out["error"] == [["red", 1]] + beep + [["off"], ["wait", 100]] + beep + [["off"], ["wait", 100]] + beep \
        + [["off"]] + end + [["red", 0]]
