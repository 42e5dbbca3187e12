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

_SECTOR = const(4096)
_LINE_MAX = const(64)  # longest control-port line accepted
_SLOTS = const(3)  # control-port connections at once (a newcomer evicts the one idle longest)
_LINE_WAIT_MS = const(60000)  # a control-port connection waits this long for its next line
_ANSWER_MS = const(10000)  # an answer must be taken within this


def _host_ms():
    # The host's true UTC in ms: the reference the virtual RTC is built on.
    return time.time_ns() // 1000000


class Board:
    """The sim board, built from the board config, the terminal config and the state folder.

    Its small parts are the board itself (a class each would cost heap for nothing): it is its own
    RTC (now_ms/set_ms), indicator (feedback/idle), network link (status), watchdog (timeout_ms,
    feed/watch) and control port (start).
    """

    name = "sim"
    fs_root = "/flash"
    up = True  # the link: the host's network is always up

    def __init__(self, board_cfg, state_dir):
        self.board_cfg = board_cfg
        self.state_dir = state_dir
        try:
            os.mkdir(state_dir)
        except OSError:
            pass
        self.config_path = os.getenv("CLOCKTERM_CONFIG") or state_dir + "/config.json"
        # As on a board, the last config that loaded is kept on the flash: a config file that breaks
        # later (the host's check run by `clockterm run` is bypassed) boots with it
        self.good_config_path = self.fs_root + "/config.good.json"
        fl = board_cfg["flash"]
        self.fs_flash = NorFlash(_SECTOR, fl["fs_kb"] * 1024 // _SECTOR, path=state_dir + "/fs.bin")
        self.journal_flash = None
        self.rtc = self.indicator = self.link = self.watchdog = self  # the roles this class plays itself
        self.control = None
        self.timeout_ms = board_cfg.get("watchdog_ms", 8000)  # the watchdog's
        self._fed = time.ticks_ms()

    # --- RTC: host clock + offset + drift (ppm); battery-backed, its state survives in rtc.json ------

    def _rtc_save(self, host_ms, value_ms):
        self._host0 = host_ms
        self._value0 = value_ms
        if self.battery:
            path = self.state_dir + "/rtc.json"
            with open(path + ".tmp", "w") as f:
                json.dump({"host_ms": host_ms, "value_ms": value_ms}, f)
            os.rename(path + ".tmp", path)

    def now_ms(self):
        elapsed = _host_ms() - self._host0
        return self._value0 + elapsed + int(elapsed * self.drift_ppm / 1000000)

    def set_ms(self, ms):
        self._rtc_save(_host_ms(), ms)

    # --- indicator: buzzer, LEDs and display, printed to the console (one line per change) ---------

    def feedback(self, code, text):
        # code: "ok", "deny", "dup", "error"; text: the display's result line.
        print("[display] %s  [beep:%s]" % (text, code))

    def idle(self, items):
        print("[display] " + " | ".join(items))

    # --- link ----------------------------------------------------------------------------------------

    def status(self):
        return {"type": "sim", "up": True}

    # --- watchdog: ends the process like a watchdog reset when not fed within timeout_ms -------------

    def feed(self):
        # A feed that comes too late does not save the board: the hardware would have reset already
        # (after a stalled event loop the feeding task can run before the checking one).
        self._starved()
        self._fed = time.ticks_ms()

    def extend(self):
        pass  # a Ctrl-C ends the sim terminal's process: nothing is left to reset

    def _starved(self):
        if time.ticks_diff(time.ticks_ms(), self._fed) > self.timeout_ms:
            log.error("wdt", "not fed for %d ms: reset" % self.timeout_ms)
            with open(self.state_dir + "/wdt_reset", "w") as f:  # so that the next boot knows
                f.write("1")
            sys.exit(3)

    async def watch(self):
        # The checking task: the hardware counts down by itself; here a task must look.
        while True:
            await asyncio.sleep_ms(self.timeout_ms // 4)
            self._starved()

    # --- control port: the tap injection port on 127.0.0.1 ------------------------------------------
    # `TAP <badge>` -> `OK <seq> <iso>` | `DENY <reason>` | `ERR <reason>`; `STATUS` -> one line of
    # JSON. One command per line; a line over _LINE_MAX bytes is refused once its end has been read
    # and thrown away (hostile input costs no heap). Served by clockterm.server, as the endpoint is:
    # the same slots, eviction and deadlines protect it.

    def start(self, tap, status, out):
        """Listen; returns the server (clockterm.server.Server), whose accept loop (run) and deadlines
        (expire) the app drives. out: the app's answer buffer (a clockterm.OutBuf, shared with the uplink and
        the endpoint: filled and handed to the stream's write() with no await in between, so that no
        user sees another's bytes)."""
        from clockterm.server import Server

        self.tap = tap
        self.app_status = status
        self.out = out
        self.server = Server(self._client, _SLOTS, _LINE_MAX + 2)
        self.server.start("127.0.0.1", self.port)
        log.info("sim", "control port on 127.0.0.1:%d" % self.port)
        return self.server

    async def _client(self, w, index):
        from clockterm.server import dump, put, send

        srv = self.server
        while True:
            srv.wait(index, _LINE_WAIT_MS)
            line = await srv.readline(index)
            srv.wait(index, _ANSWER_MS, True)
            # The answer line goes into self.out (preallocated, shared: see start()).
            out = self.out.reset()
            words = ()
            if line is None or len(line) > _LINE_MAX:
                out.write(b"ERR line too long")
            else:
                try:
                    words = line.decode().split()
                except UnicodeError:
                    pass
                if len(words) == 2 and words[0] == "TAP":
                    out.write(self.tap(words[1]))
                elif len(words) == 1 and words[0] == "STATUS":
                    # A few KB of JSON, more than the buffer: streamed one top-level member at a time.
                    try:
                        doc = self.app_status()
                    except Exception as e:  # nothing of the answer is out: an ERR line, the connection goes on
                        log.exc("sim", e)
                        out.write("ERR status: %r" % (e,))
                    else:
                        await dump(w, out, False, doc)  # the line ends with the document's LF
                        doc = None
                        await send(w, out, False)
                        continue
                else:
                    out.write("ERR bad command")
            await put(w, out, False, b"\n")
            await send(w, out, False)

    # --- the board layer ------------------------------------------------------------------------------

    def mount_fs(self):
        """Mount the LittleFS image at /flash, formatting it on first use or when unmountable."""
        if mount_lfs(self.fs_flash, self.fs_root):
            log.warn("sim", "fs.bin had no filesystem: formatted")

    def configure(self, cfg):
        """Build the parts that depend on the terminal config."""
        sim = cfg.get("sim") or {}
        # The RTC: the host's clock with an offset and a drift; battery-backed, its state kept in rtc.json
        self.drift_ppm = sim.get("rtc_drift_ppm", 0.0)
        self.battery = sim.get("rtc_battery", True)
        state = None
        if self.battery:
            try:
                with open(self.state_dir + "/rtc.json") as f:
                    state = json.load(f)
            except (OSError, ValueError):
                state = None
        if state is None:
            # First power-up (or no battery): a battery RTC starts at true time + the configured
            # offset, a volatile one at 2000-01-01, like an ESP32 after power loss.
            self._rtc_save(_host_ms(), _host_ms() + sim.get("rtc_offset_ms", 0) if self.battery else 946684800000)
        else:
            self._host0 = state["host_ms"]
            self._value0 = state["value_ms"]
        self.control = self
        self.port = sim.get("control_port", 7001)
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
