# The ESP32 board layer: builds RTC, flash partition, readers, indicators, link and watchdog from
# board.json. The only core-side module (with the drivers it builds) that imports machine/network.

import sys
import time

import asyncio
import machine
from micropython import const

from clockterm import log
from clockterm.clock import PORT_TO_UNIX_S, gmtime_ms

_HOLD_MS = const(3600000)  # the watchdog's timeout once a technician's Ctrl-C stopped the app (Watchdog.extend)


class RTC:
    """machine.RTC in the RTC interface: Unix ms. The internal RTC has no battery."""

    battery = False

    def __init__(self):
        self._rtc = machine.RTC()

    def now_ms(self):
        return time.time_ns() // 1000000 + PORT_TO_UNIX_S * 1000

    def set_ms(self, ms):
        year, month, day, hour, minute, second, weekday = gmtime_ms(ms)[:7]
        # machine.RTC.datetime's order: weekday before the time of day, microseconds last
        self._rtc.datetime((year, month, day, weekday, hour, minute, second, (ms % 1000) * 1000))


class Indicator:
    """Buzzer (PWM), OK/error LEDs and an optional SSD1306 display with the terminal's screen."""

    # The beep of each feedback code: Hz and ms, in turn (0 Hz: a pause). One flat tuple per code: a
    # tuple of pairs would be a heap object per pair (docs/heap.md). docs/employee-card.md says them.
    _BEEPS = {"ok": (2700, 80), "dup": (2700, 40, 0, 60, 2700, 40), "deny": (900, 400),
              "error": (900, 150, 0, 100, 900, 150, 0, 100, 900, 150)}

    def __init__(self, cfg):
        self.buzzer = None
        if cfg.get("buzzer") is not None:
            self.buzzer = machine.PWM(machine.Pin(cfg["buzzer"]), freq=2700, duty_u16=0)
        self._on = 1 if cfg.get("led_active_high", True) else 0
        self.led_ok = _out_pin(cfg.get("led_ok"), 1 - self._on)
        self.led_err = _out_pin(cfg.get("led_err"), 1 - self._on)
        self.screen = None
        d = cfg.get("display")
        if d:
            from clockterm.drivers.ssd1306 import SSD1306, Screen

            i2c = machine.I2C(d.get("i2c", 0), scl=machine.Pin(d["scl"]), sda=machine.Pin(d["sda"]),
                              freq=d.get("freq", 400000))
            rst = d.get("rst")
            self.screen = Screen(SSD1306(i2c, d.get("addr", 0x3C), d.get("width", 128), d.get("height", 64),
                                         machine.Pin(rst, machine.Pin.OUT) if rst is not None else None,
                                         d.get("flip", False)))
        self.last = None  # (code, text) of the last feedback: its text stays on the screen
        self._idle = ("", "", 0)  # time, sync state, backlog

    def feedback(self, result, text):
        self.last = (result, text)
        led = self.led_ok if result == "ok" else self.led_err
        if led:
            led.value(self._on)
        self._show(text)
        asyncio.create_task(self._beep(result, led))

    async def _beep(self, result, led):
        beep = self._BEEPS.get(result, ())
        for i in range(0, len(beep), 2):
            freq, ms = beep[i], beep[i + 1]
            if self.buzzer:
                if freq:
                    self.buzzer.freq(freq)
                self.buzzer.duty_u16(32768 if freq else 0)
            await asyncio.sleep_ms(ms)
        if self.buzzer:
            self.buzzer.duty_u16(0)
        await asyncio.sleep_ms(1500)
        if led:
            led.value(1 - self._on)

    def idle(self, lines):
        # lines: ("HH:MM SYNCED", "backlog N") from the app's housekeeping (App._idle)
        hm, _, sync = lines[0].partition(" ")
        self._idle = (hm, sync, int(lines[1].split()[-1]))  # the screen shows the backlog as a number
        self._show(self.last[1] if self.last else "")

    def _show(self, result):
        if self.screen is not None:
            t, sync, backlog = self._idle
            self.screen.show(t, sync, result, backlog)


def _out_pin(n, off):
    if n is None:
        return None
    return machine.Pin(n, machine.Pin.OUT, value=off)


class Link:
    """Wi-Fi station or Ethernet, supervised: reconnect with exponential backoff and jitter."""

    connect_ms = 20000  # one connection attempt gives up after this
    backoff_min_ms = 1000  # reconnect delay, doubled per failure up to backoff_max_ms, with jitter
    backoff_max_ms = 60000
    check_ms = 2000  # how often a connected link is checked

    def __init__(self, board_net, cfg_net):
        import network

        self.kind = board_net.get("type", "wifi")
        self.cfg = cfg_net
        self.up = False
        self.failures = 0
        self.last_error = None
        self.ip = None
        if self.kind == "ethernet":
            phy = getattr(network, "PHY_" + board_net.get("phy", "LAN8720"))
            kw = {"mdc": machine.Pin(board_net["mdc"]), "mdio": machine.Pin(board_net["mdio"]),
                  "phy_type": phy, "phy_addr": board_net.get("phy_addr", 0)}
            if board_net.get("power") is not None:
                kw["power"] = machine.Pin(board_net["power"])
            self.nic = network.LAN(**kw)
        else:
            self.nic = network.WLAN(network.STA_IF)

    def _start(self):
        nic = self.nic
        nic.active(True)
        ip = self.cfg.get("static_ip")
        if ip:
            addr, _, bits = ip.partition("/")
            mask = _mask(int(bits or 24))
            nic.ifconfig((addr, mask, self.cfg.get("gateway") or "0.0.0.0", self.cfg.get("dns") or "0.0.0.0"))
        if self.kind == "wifi":
            nic.connect(self.cfg.get("wifi_ssid") or "", self.cfg.get("wifi_password") or "")

    async def run(self):
        delay = self.backoff_min_ms
        while True:
            try:
                self._start()
                t0 = time.ticks_ms()
                while not self.nic.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < self.connect_ms:
                    await asyncio.sleep_ms(200)
                if self.nic.isconnected():
                    self.up = True
                    self.ip = self.nic.ifconfig()[0]
                    log.info("link", "%s up, ip %s" % (self.kind, self.ip))
                    delay = self.backoff_min_ms
                    while self.nic.isconnected():
                        await asyncio.sleep_ms(self.check_ms)
                    log.warn("link", "%s down" % self.kind)
                else:
                    self.last_error = "connect timeout"
            except OSError as e:
                self.last_error = "OSError %s" % e
                log.warn("link", self.last_error)
            self.up = False
            self.failures += 1
            await asyncio.sleep_ms(delay // 2 + _jitter(delay // 2))
            delay = min(delay * 2, self.backoff_max_ms)

    def status(self):
        return {"type": self.kind, "up": self.up, "ip": self.ip, "failures": self.failures,
                "last_error": self.last_error}


def _mask(bits):
    m = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    return "%d.%d.%d.%d" % (m >> 24, (m >> 16) & 255, (m >> 8) & 255, m & 255)


def _jitter(n):
    import random

    return random.getrandbits(16) % (n + 1)


class Watchdog:
    """machine.WDT: once started it cannot be stopped; the app feeds it while its tasks are alive."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self._wdt = None

    def feed(self):
        if self._wdt is None:
            self._wdt = machine.WDT(timeout=self.timeout_ms)
        self._wdt.feed()

    async def watch(self):
        return  # the hardware counts down by itself (the sim board's watchdog needs a task to look)

    def extend(self):
        """The app stopped by a technician's Ctrl-C: the watchdog, once started, runs on at the REPL (and
        through a soft reset), and would reset the board in the middle of the technician's session
        (a deploy, an export). Its timeout is set to _HOLD_MS instead: long enough for any session,
        which clockterm's commands end with a reset; a board left stopped starts again after it."""
        if self._wdt is not None:
            self._wdt = machine.WDT(timeout=_HOLD_MS)  # a new timeout for the running watchdog
            self._wdt.feed()


def build_reader(cfg):
    """A reader driver from the board config's reader section: (name, reader)."""
    kind = cfg["type"]
    if kind == "wiegand":
        from clockterm.drivers.wiegand import Wiegand

        r = Wiegand(machine.Pin(cfg["d0"], machine.Pin.IN, machine.Pin.PULL_UP),
                    machine.Pin(cfg["d1"], machine.Pin.IN, machine.Pin.PULL_UP),
                    bits=tuple(cfg.get("bits", (26, 34, 37))), id_format=cfg.get("id_format", "fc"),
                    gap_us=cfg.get("gap_us", 25000), hold_ms=cfg.get("hold_ms", 0))
    elif kind == "mfrc522":
        from clockterm.drivers.mfrc522 import MFRC522

        spi = machine.SPI(cfg.get("spi", 2), baudrate=cfg.get("baudrate", 4000000), polarity=0, phase=0,
                          sck=machine.Pin(cfg["sck"]), mosi=machine.Pin(cfg["mosi"]),
                          miso=machine.Pin(cfg["miso"]))
        rst = cfg.get("rst")
        r = MFRC522(spi, machine.Pin(cfg["cs"], machine.Pin.OUT, value=1),
                    machine.Pin(rst, machine.Pin.OUT, value=1) if rst is not None else None,
                    hold_ms=cfg.get("hold_ms", 800), check_ms=cfg.get("check_ms", 5000))
    elif kind in ("rdm6300", "line"):
        from clockterm.drivers import uart_reader

        uart = machine.UART(cfg.get("uart", 1), baudrate=cfg.get("baudrate", 9600), rx=cfg["rx"],
                            tx=cfg.get("tx"), timeout=0)
        if kind == "rdm6300":
            r = uart_reader.RDM6300(uart, id_format=cfg.get("id_format", "hex"), hold_ms=cfg.get("hold_ms", 800))
        else:
            r = uart_reader.LineReader(uart, mode=cfg.get("mode", "hex"), min_len=cfg.get("min_len", 4),
                                       max_len=cfg.get("max_len", 20), hold_ms=cfg.get("hold_ms", 0))
    else:
        raise ValueError("reader.type: unknown reader %r" % kind)
    if "poll_ms" in cfg:
        r.poll_ms = cfg["poll_ms"]
    return kind, r


class Board:
    """An ESP32 terminal built from board.json; the config comes from /config.json."""

    fs_root = ""
    config_path = "/config.json"
    good_config_path = "/config.good.json"

    def __init__(self, board_cfg):
        self.board_cfg = board_cfg
        self.name = board_cfg["board"]
        self.rtc = RTC()
        self.indicator = None
        self.link = None
        self.control = None
        self.watchdog = Watchdog(board_cfg.get("watchdog_ms", 8000))
        self.journal_flash = None
        self._readers = ()

    def mount_fs(self):
        pass  # the firmware mounted its LittleFS at / before boot.py

    def configure(self, cfg):
        bc = self.board_cfg
        self.indicator = Indicator(bc.get("indicators") or {})
        self.link = Link(bc.get("network") or {"type": "wifi"}, cfg.get("network") or {})
        if bc["flash"]["journal"]["backend"] == "raw":
            import esp32

            label = bc["flash"]["journal"].get("partition", "journal")
            found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=label)
            if not found:
                self.fatal("no flash partition %r for the journal (flash the partition table)" % label)
            self.journal_flash = found[0]
        reader = bc.get("reader")
        self._readers = (build_reader(reader),) if reader else ()

    def readers(self):
        return self._readers

    def safe_pin_held(self):
        n = self.board_cfg.get("safe_mode_pin")
        if n is None:
            return False
        p = machine.Pin(n, machine.Pin.IN, machine.Pin.PULL_UP)
        time.sleep_ms(20)
        return p.value() == self.board_cfg.get("safe_mode_level", 0)  # held at boot

    def watchdog_reset(self):
        return machine.reset_cause() == machine.WDT_RESET

    def safe_mode(self, why):
        log.error("boot", "SAFE MODE (%s): app not started, REPL free" % why)

    def reset(self):
        time.sleep_ms(200)
        machine.reset()

    def fatal(self, msg):
        # Without a usable config there is nothing to run: stay in safe mode for a technician.
        log.error("boot", msg)
        self.safe_mode("fatal")
        sys.exit()

