"""The ESP32 board layer on the unix port, against stand-ins for machine/network/esp32 (no radio here)."""

from __future__ import annotations

import json
from pathlib import Path

from mp import mp_json

FAKES = str(Path(__file__).resolve().parent / "fakes")

PRELUDE = f"""
import sys, json
sys.path.insert(0, {FAKES!r})
import asyncio, machine, network
from clockterm.boards import esp32 as board_esp32
out = {{}}
"""


def _board(reader: dict, network_cfg: dict | None = None, **extra) -> str:
    cfg = {"board": "t", "chip": "esp32", "heap": "100K",
           "flash": {"size_mb": 4, "journal": {"backend": "raw", "partition": "journal", "size_kb": 128}},
           "reader": reader, "indicators": {"buzzer": 25, "led_ok": 26, "led_err": 27, "display": None},
           "network": network_cfg or {"type": "wifi"}, "watchdog_ms": 8000, "safe_mode_pin": 0}
    cfg.update(extra)
    return json.dumps(cfg)


TERM_CFG = json.dumps({"network": {"wifi_ssid": "shop", "wifi_password": "pw", "static_ip": None}})


def test_readers_are_built_from_the_board_config():
    script = PRELUDE + f"""
for reader in ({{"type": "wiegand", "d0": 32, "d1": 33}},
               {{"type": "mfrc522", "sck": 18, "mosi": 23, "miso": 19, "cs": 5, "rst": 22}},
               {{"type": "rdm6300", "uart": 2, "rx": 16}},
               {{"type": "line", "uart": 1, "rx": 9, "mode": "dec"}}):
    cfg = json.loads({_board({"type": "x"})!r})
    cfg["reader"] = reader
    b = board_esp32.Board(cfg)
    b.configure(json.loads({TERM_CFG!r}))
    (name, r), = b.readers()
    out[reader["type"]] = [name, type(r).__name__, r.poll_ms, r.poll()]
try:
    board_esp32.build_reader({{"type": "barcode"}})
except ValueError as e:
    out["bad"] = str(e)
print(json.dumps(out))
"""
    out = mp_json(script)
    assert out["wiegand"] == ["wiegand", "Wiegand", 20, None]
    assert out["mfrc522"][:2] == ["mfrc522", "MFRC522"] and out["mfrc522"][3] is None
    assert out["rdm6300"] == ["rdm6300", "RDM6300", 20, None]
    assert out["line"] == ["line", "LineReader", 20, None]
    assert out["bad"] == "reader.type: unknown reader 'barcode'"


def test_wifi_link_reconnects_with_backoff():
    script = PRELUDE + f"""
board_esp32.Link.connect_ms = 300
board_esp32.Link.backoff_min_ms = 100
board_esp32.Link.check_ms = 100
network.plan[:] = [False, False, True]
b = board_esp32.Board(json.loads({_board({"type": "wiegand", "d0": 32, "d1": 33})!r}))
b.configure(json.loads({TERM_CFG!r}))
async def main():
    t = asyncio.create_task(b.link.run())
    for _ in range(400):
        await asyncio.sleep_ms(50)
        if b.link.up:
            break
    out["up"] = b.link.status()
    b.link.nic.drop()
    await asyncio.sleep_ms(300)
    out["down"] = b.link.status()
    t.cancel()
asyncio.run(main())
out["connects"] = [e for e in network.log if e[0] == "connect"]
print(json.dumps(out))
"""
    out = mp_json(script, timeout=60)
    assert out["up"]["up"] is True and out["up"]["failures"] == 2 and out["up"]["ip"] == "192.0.2.10"
    # dropped: noticed within a check, counted, and reconnected after the (reset) short backoff
    assert out["down"]["up"] is True and out["down"]["failures"] == 3
    assert out["connects"] == [["connect", "shop"]] * 4


def test_static_ip_ethernet_watchdog_rtc_and_safe_mode():
    script = PRELUDE + f"""
machine.pins_low.add(0)
cfg = json.loads({_board({"type": "wiegand", "d0": 36, "d1": 39},
                         {"type": "ethernet", "phy": "LAN8720", "mdc": 23, "mdio": 18, "power": 12})!r})
b = board_esp32.Board(cfg)
b.configure({{"network": {{"static_ip": "10.1.2.3/16", "gateway": "10.1.0.1", "dns": "10.1.0.2"}}}})
b.link._start()
out["ifconfig"] = [e for e in network.log if e[0] == "ifconfig"]
out["lan"] = [e for e in network.log if e[0] == "LAN"]
out["safe"] = b.safe_pin_held()
machine.pins_low.clear()
out["safe_released"] = board_esp32.Board(cfg).safe_pin_held()
b.watchdog.feed(); b.watchdog.feed()
out["wdt"] = [e for e in machine.log if e[0] == "WDT"]
b.rtc.set_ms(1764080000123)
out["rtc"] = [e for e in machine.log if e[0] == "RTC.datetime"]
out["journal_size"] = b.journal_flash.ioctl(4, 0)
machine.reset_cause_value = machine.WDT_RESET
out["wdt_reset"] = b.watchdog_reset()
print(json.dumps(out))
"""
    out = mp_json(script)
    assert out["ifconfig"] == [["ifconfig", ["10.1.2.3", "255.255.0.0", "10.1.0.1", "10.1.0.2"]]]
    assert out["lan"] == [["LAN", ["mdc", "mdio", "phy_addr", "phy_type", "power"]]]
    assert out["safe"] is True and out["safe_released"] is False
    assert out["wdt"] == [["WDT", 8000]]  # started once, on the first feed
    # 2025-11-25 14:13:20.123 UTC, a Tuesday (weekday 1)
    assert out["rtc"] == [["RTC.datetime", [2025, 11, 25, 1, 14, 13, 20, 123000]]]
    assert out["journal_size"] == 8
    assert out["wdt_reset"] is True


def test_display_shows_idle_state_and_feedback() -> None:
    # The app's idle lines and a tap's feedback reach the SSD1306 screen: time, sync state, the
    # result, the backlog as a number (a backlog taken as text made every later feedback raise).
    script = PRELUDE + f"""
cfg = json.loads({_board({"type": "wiegand", "d0": 32, "d1": 33})!r})
cfg["indicators"]["display"] = {{"scl": 22, "sda": 21}}
b = board_esp32.Board(cfg)
b.configure(json.loads({TERM_CFG!r}))
ind = b.indicator
shown = []
screen_show = ind.screen.show
def record(*args):
    shown.append(list(args))
    return screen_show(*args)
ind.screen.show = record
async def main():
    ind.idle(("08:01 SYNCED", "backlog 3"))
    ind.feedback("ok", "IN 08:01 Ada L.")
    ind.idle(("08:02 STALE", "backlog 0"))
    await asyncio.sleep_ms(0)
asyncio.run(main())
out["shown"] = shown
out["errors"] = ind.screen.d.errors
print(json.dumps(out))
"""
    out = mp_json(script)
    assert out["shown"] == [["08:01", "SYNCED", "", 3], ["08:01", "SYNCED", "IN 08:01 Ada L.", 3],
                            ["08:02", "STALE", "IN 08:01 Ada L.", 0]], out
    assert out["errors"] == 0


def test_feedback_beeps_and_lights() -> None:
    # Each feedback code's beep (buzzer frequency, on and off, with the waits between) and light, the
    # light going off 1.5 s after the beep; the waits recorded instead of slept.
    script = PRELUDE + f"""
cfg = json.loads({_board({"type": "wiegand", "d0": 32, "d1": 33})!r})
b = board_esp32.Board(cfg)
b.configure(json.loads({TERM_CFG!r}))
ind = b.indicator
events = []
class Buzzer:
    def freq(self, f):
        events.append(["hz", f])
    def duty_u16(self, d):
        events.append(["on" if d else "off"])
class Led:
    def __init__(self, name):
        self.name = name
    def value(self, v):
        events.append([self.name, v])
class Asyncio:  # runs the beep at once, recording each wait
    def create_task(self, coro):
        for _ in coro:
            pass
    def sleep_ms(self, ms):
        events.append(["wait", ms])
        return
        yield
ind.buzzer = Buzzer()
ind.led_ok, ind.led_err = Led("green"), Led("red")
board_esp32.asyncio = Asyncio()
for code in ("ok", "dup", "deny", "error"):
    ind.feedback(code, "text")
    out[code] = events[:]
    events.clear()
print(json.dumps(out))
"""
    out = mp_json(script)
    end = [["wait", 1500]]
    assert out["ok"] == [["green", 1], ["hz", 2700], ["on"], ["wait", 80], ["off"]] + end + [["green", 0]]
    assert out["dup"] == [["red", 1], ["hz", 2700], ["on"], ["wait", 40], ["off"], ["wait", 60], ["hz", 2700],
                          ["on"], ["wait", 40], ["off"]] + end + [["red", 0]]
    assert out["deny"] == [["red", 1], ["hz", 900], ["on"], ["wait", 400], ["off"]] + end + [["red", 0]]
    beep = [["hz", 900], ["on"], ["wait", 150]]
    assert out["error"] == [["red", 1]] + beep + [["off"], ["wait", 100]] + beep + [["off"], ["wait", 100]] + beep \
        + [["off"]] + end + [["red", 0]]
