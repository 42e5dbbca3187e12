# MicroPython side of the ESP32 board layer tests (lib/clockterm/boards/esp32.py) on the unix port,
# against the stand-ins for machine, network and esp32 in tests/fakes (no radio here).
#
# tests/test_board_esp32.py and tests/test_board_configs.py run this under the unix port with the
# compiled bundle (linted with the firmware's rules, lib/ruff.toml). They prepend the settings CASE (the
# case below to run), FAKES (the tests/fakes folder), BOARD and TERM (the board's and the terminal's
# config, JSON text) as assignments, and append a call of main(), which prints what the case saw as one
# JSON document. Not collected by pytest (no test_ prefix).

import asyncio
import json
import sys

CASE = globals().get("CASE", "build")
FAKES = globals().get("FAKES", "tests/fakes")
BOARD = globals().get("BOARD", "{}")
TERM = globals().get("TERM", "{}")

# The stand-ins go first on the path, before anything imports machine or network.
sys.path.insert(0, FAKES)
import machine  # noqa: E402 (the stand-ins' folder must be on sys.path before this import)
# (its journal partition, 32 KB of emulated NOR flash in one piece, taken first from an unfragmented
# heap: the board's own partition is not in the heap at all)
import esp32  # noqa: E402, F401
import network  # noqa: E402 (likewise)
from clockterm.boards import esp32 as board_esp32  # noqa: E402 (likewise: it imports machine)


def readers():
    """Each kind of reader built from the board config; an unknown one refused."""
    out = {}
    for reader in ({"type": "wiegand", "d0": 32, "d1": 33},
                   {"type": "mfrc522", "sck": 18, "mosi": 23, "miso": 19, "cs": 5, "rst": 22},
                   {"type": "rdm6300", "uart": 2, "rx": 16},
                   {"type": "line", "uart": 1, "rx": 9, "mode": "dec"}):
        cfg = json.loads(BOARD)
        cfg["reader"] = reader
        b = board_esp32.Board(cfg)
        b.configure(json.loads(TERM))
        (name, r), = b.readers()
        out[reader["type"]] = [name, type(r).__name__, r.poll_ms, r.poll()]
    try:
        board_esp32.build_reader({"type": "barcode"})
    except ValueError as e:
        out["bad"] = str(e)
    return out


def wifi_link():
    """The Wi-Fi link: two failed connects, up, dropped, up again (network.plan says which connect)."""
    out = {}
    board_esp32.Link.connect_ms = 300
    board_esp32.Link.backoff_min_ms = 100
    board_esp32.Link.check_ms = 100
    network.plan[:] = [False, False, True]
    b = board_esp32.Board(json.loads(BOARD))
    b.configure(json.loads(TERM))

    async def run():
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

    asyncio.run(run())
    out["connects"] = [e for e in network.log if e[0] == "connect"]
    return out


def static_ip():
    """Ethernet with a static address, the safe-mode pin, the watchdog, the RTC, the journal partition."""
    out = {}
    machine.pins_low.add(0)
    cfg = json.loads(BOARD)
    b = board_esp32.Board(cfg)
    b.configure(json.loads(TERM))
    b.link._start()
    out["ifconfig"] = [e for e in network.log if e[0] == "ifconfig"]
    out["lan"] = [e for e in network.log if e[0] == "LAN"]
    out["safe"] = b.safe_pin_held()
    machine.pins_low.clear()
    out["safe_released"] = board_esp32.Board(cfg).safe_pin_held()
    b.watchdog.extend()  # a Ctrl-C before the app fed it: no watchdog to hold back (none started)
    out["wdt_unstarted_hold"] = [e for e in machine.log if e[0] == "WDT"]
    b.watchdog.feed()
    b.watchdog.feed()
    out["wdt"] = [e for e in machine.log if e[0] == "WDT"]
    b.watchdog.extend()  # a technician's Ctrl-C: the running watchdog gets the long timeout
    out["wdt_held"] = [e for e in machine.log if e[0] == "WDT"]
    b.rtc.set_ms(1764080000123)
    out["rtc"] = [e for e in machine.log if e[0] == "RTC.datetime"]
    out["journal_size"] = b.journal_flash.ioctl(4, 0)
    machine.reset_cause_value = machine.WDT_RESET
    out["wdt_reset"] = b.watchdog_reset()
    return out


def display():
    """The idle lines and a tap's feedback, as the indicator hands them to the SSD1306 screen."""
    out = {}
    cfg = json.loads(BOARD)
    cfg["indicators"]["display"] = {"scl": 22, "sda": 21}
    b = board_esp32.Board(cfg)
    b.configure(json.loads(TERM))
    ind = b.indicator
    shown = []
    screen_show = ind.screen.show

    def record(*args):
        shown.append(list(args))
        return screen_show(*args)

    ind.screen.show = record

    async def run():
        ind.idle(("08:01 SYNCED", "backlog 3"))
        ind.feedback("ok", "IN 08:01 Ada L.")
        ind.idle(("08:02 STALE", "backlog 0"))
        await asyncio.sleep_ms(0)

    asyncio.run(run())
    out["shown"] = shown
    out["errors"] = ind.screen.d.errors
    return out


events = []  # what the buzzer, the lights and the waits of beeps() did, in order


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


class Asyncio:
    """Runs the beep at once, recording each wait."""

    def create_task(self, coro):
        for _ in coro:
            pass

    def sleep_ms(self, ms):
        events.append(["wait", ms])
        return
        yield


def beeps():
    """Each feedback code's beep and light, the waits recorded instead of slept."""
    out = {}
    cfg = json.loads(BOARD)
    b = board_esp32.Board(cfg)
    b.configure(json.loads(TERM))
    ind = b.indicator
    ind.buzzer = Buzzer()
    ind.led_ok, ind.led_err = Led("green"), Led("red")
    board_esp32.asyncio = Asyncio()
    for code in ("ok", "dup", "deny", "error"):
        ind.feedback(code, "text")
        out[code] = events[:]
        events.clear()
    return out


def build():
    """A board config as shipped: its reader polled once, whether it has a display."""
    b = board_esp32.Board(json.loads(BOARD))
    b.configure(json.loads(TERM))
    (kind, r), = b.readers()
    return [kind, type(r).__name__, r.poll(), b.indicator.screen is not None]


def main():
    cases = {"readers": readers, "wifi_link": wifi_link, "static_ip": static_ip, "display": display,
             "beeps": beeps, "build": build}
    print(json.dumps(cases[CASE]()))
