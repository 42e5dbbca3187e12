# The sim board: the host implementation of the board layer, for `clockterm run` and the tests.
#
# Everything a real board has, made of host parts: a virtual RTC (host clock plus offset and drift,
# volatile or battery-backed), emulated NOR flash persisted in the state folder (a LittleFS image for
# files and a raw partition for the journal), console indicators, an always-up network link, a
# watchdog that ends the process when it starves, and the tap control port on 127.0.0.1 that stands
# in for the badge reader. Killing the process is a power cut; starting it again is a power-up.

import json
import os
import sys
import time

import asyncio
from micropython import const

from clockterm import log
from clockterm.boards.norflash import NorFlash, mount_lfs
from clockterm.outbuf import OutBuf, Overflow

_SECTOR = const(4096)
_LINE_MAX = const(64)  # longest control-port line accepted
_OUT_MAX = const(3072)  # longest control-port answer (STATUS)


def _host_ms():
    # The host's true UTC in ms: the reference the virtual RTC is built on.
    return time.time_ns() // 1000000


class SimRTC:
    """Host clock + offset + drift (ppm). Battery-backed: its state survives in rtc.json."""

    def __init__(self, path, offset_ms=0, drift_ppm=0.0, battery=True):
        self.path = path
        self.drift_ppm = drift_ppm
        self.battery = battery
        state = None
        if battery:
            try:
                with open(path) as f:
                    state = json.load(f)
            except (OSError, ValueError):
                state = None
        if state is None:
            # First power-up (or no battery): a battery RTC starts at true time + the configured
            # offset, a volatile one at the year 2000.
            # (a volatile RTC comes up at 2000-01-01, like an ESP32 after power loss)
            start = _host_ms() + offset_ms if battery else 946684800000
            state = {"host_ms": _host_ms(), "value_ms": start}
            self._save(state)
        self._host0 = state["host_ms"]
        self._value0 = state["value_ms"]

    def _save(self, state):
        if not self.battery:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.rename(tmp, self.path)

    def now_ms(self):
        elapsed = _host_ms() - self._host0
        return self._value0 + elapsed + int(elapsed * self.drift_ppm / 1000000)

    def set_ms(self, ms):
        self._host0 = _host_ms()
        self._value0 = ms
        self._save({"host_ms": self._host0, "value_ms": ms})


class ConsoleIndicator:
    """Buzzer, LEDs and display, printed to the console (one line per change)."""

    def __init__(self):
        self.last = None

    def feedback(self, code, text):
        # code: "ok", "deny", "dup", "error"; text: the display's result line.
        self.last = (code, text)
        print("[display] %s  [beep:%s]" % (text, code))

    def idle(self, items):
        print("[display] " + " | ".join(items))


class SimLink:
    """The host's network is always up."""

    up = True

    def status(self):
        return {"type": "sim", "up": True}

    async def run(self):
        while True:
            await asyncio.sleep(3600)


class SimWatchdog:
    """Ends the process like a watchdog reset when it is not fed within timeout_ms."""

    def __init__(self, timeout_ms, path):
        self.timeout_ms = timeout_ms
        self.path = path  # marker file written before the "reset", so the next boot knows
        self._fed = time.ticks_ms()
        self.feeds = 0

    def feed(self):
        # A feed that comes too late does not save the board: the hardware would have reset already
        # (after a stalled event loop the feeding task can run before the checking one).
        self._check()
        self._fed = time.ticks_ms()
        self.feeds += 1

    def _check(self):
        if time.ticks_diff(time.ticks_ms(), self._fed) > self.timeout_ms:
            log.error("wdt", "not fed for %d ms: reset" % self.timeout_ms)
            with open(self.path, "w") as f:
                f.write("1")
            sys.exit(3)

    async def run(self):
        while True:
            await asyncio.sleep_ms(self.timeout_ms // 4)
            self._check()


class ControlPort:
    """The tap injection port: `TAP <badge>` -> `OK <seq> <iso>` | `DENY <reason>` | `ERR <reason>`.

    Also `STATUS` -> one line of JSON. One command per line; lines over _LINE_MAX bytes are refused.
    """

    def __init__(self, port):
        self.port = port
        self.server = None
        self.out = OutBuf(_OUT_MAX)

    async def start(self, tap, status):
        self.tap = tap
        self.status = status
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        log.info("sim", "control port on 127.0.0.1:%d" % self.port)

    async def _client(self, reader, w):
        lines = _Lines(reader)
        try:
            while True:
                try:
                    line = await lines.next()
                except ValueError:
                    w.write(b"ERR line too long\n")
                    await w.drain()
                    continue
                if line is None:
                    break
                # The answer line goes into self.out (preallocated; STATUS is a few KB of JSON).
                out = self.out.reset()
                try:
                    words = line.decode().split()
                except UnicodeError:
                    words = ()
                if len(words) == 2 and words[0] == "TAP":
                    out.write(self.tap(words[1]))
                elif len(words) == 1 and words[0] == "STATUS":
                    try:
                        json.dump(self.status(), out)
                    except Overflow as e:
                        out.reset().write("ERR " + str(e))
                else:
                    out.write("ERR bad command")
                out.write(b"\n")
                w.write(self.out.view())
                await w.drain()
        except OSError as e:
            log.warn("sim", "control client: OSError %s" % e)
        finally:
            w.close()
            try:
                await w.wait_closed()
            except OSError:
                pass


class _Lines:
    """Lines from a stream, never holding more than _LINE_MAX bytes of one: a longer line raises
    ValueError once its end has been read and thrown away (hostile input costs no heap)."""

    def __init__(self, reader):
        self.r = reader
        self.buf = b""

    async def next(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = self.buf[:i]
                self.buf = self.buf[i + 1:]
                if len(line) > _LINE_MAX:
                    raise ValueError("line too long")
                return line
            if len(self.buf) > _LINE_MAX:
                self.buf = b""
                while True:  # skip to the end of the over-long line
                    chunk = await self.r.read(256)
                    if not chunk:
                        return None
                    j = chunk.find(b"\n")
                    if j >= 0:
                        self.buf = chunk[j + 1:]
                        raise ValueError("line too long")
            chunk = await self.r.read(_LINE_MAX)
            if not chunk:
                return None
            self.buf += chunk


class Board:
    """The sim board, built from the board config, the terminal config and the state folder."""

    name = "sim"
    fs_root = "/flash"

    def __init__(self, board_cfg, state_dir):
        self.board_cfg = board_cfg
        self.state_dir = state_dir
        try:
            os.mkdir(state_dir)
        except OSError:
            pass
        self.config_path = os.getenv("CLOCKTERM_CONFIG") or state_dir + "/config.json"
        self.good_config_path = None  # the host file is the source of truth; see app.load_config
        self.cfg = None
        fl = board_cfg["flash"]
        self.fs_flash = NorFlash(_SECTOR, fl["fs_kb"] * 1024 // _SECTOR, path=state_dir + "/fs.bin")
        self.journal_flash = None
        self.indicator = ConsoleIndicator()
        self.link = SimLink()
        self.watchdog = SimWatchdog(board_cfg.get("watchdog_ms", 8000), state_dir + "/wdt_reset")
        self.control = None
        self.rtc = None

    def mount_fs(self):
        """Mount the LittleFS image at /flash, formatting it on first use or when unmountable."""
        if mount_lfs(self.fs_flash, self.fs_root):
            log.warn("sim", "fs.bin had no filesystem: formatted")

    def configure(self, cfg):
        """Build the parts that depend on the terminal config."""
        self.cfg = cfg
        sim = cfg.get("sim") or {}
        self.rtc = SimRTC(self.state_dir + "/rtc.json", sim.get("rtc_offset_ms", 0),
                          sim.get("rtc_drift_ppm", 0.0), sim.get("rtc_battery", True))
        self.control = ControlPort(sim.get("control_port", 7001))
        # The journal partition; a test may shrink it (sim.journal_kb) to reach a full journal fast.
        jcfg = self.board_cfg["flash"]["journal"]
        if "journal_kb" in sim:
            jcfg["size_kb"] = sim["journal_kb"]
        if jcfg["backend"] == "raw":
            self.journal_flash = NorFlash(_SECTOR, jcfg["size_kb"] * 1024 // _SECTOR,
                                          path=self.state_dir + "/journal.bin")

    def readers(self):
        # The sim board's reader is the control port, started by the app with the tap function.
        return ()

    def safe_pin_held(self):
        # The sim's "safe-mode pin" is a file in the state folder, made by a test or a person.
        try:
            os.stat(self.state_dir + "/SAFE_MODE")
            return True
        except OSError:
            return False

    def watchdog_reset(self):
        # The sim watchdog exits with code 3 after writing this marker; it is read once.
        try:
            os.remove(self.state_dir + "/wdt_reset")
            return True
        except OSError:
            return False

    def safe_mode(self, msg):
        log.error("boot", "SAFE MODE (%s): app not started" % msg)
        sys.exit(4)

    def reset(self):
        sys.exit(1)

    def fatal(self, msg):
        """A condition the terminal cannot run with: on the host, say it and exit 2."""
        log.error("boot", msg)
        sys.exit(2)
