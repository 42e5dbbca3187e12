# The composition root: builds the terminal from the board and the config, runs its tasks.
#
# One supervised task per concern (network link, SNTP, uplink, each reader; the control port is a
# server). The housekeeping loop, which main() runs once everything is started, is the supervisor: it
# restarts a task that ended, with backoff, and feeds the watchdog unless a critical task is stuck in
# a crash loop; it also measures loop stalls, refreshes the idle display and clears the crash count
# (those duties guarded: none of them can stop the feeding). A global asyncio exception handler logs
# what escapes a task, under the supervised task's name where it was one.

import binascii
import gc
import hashlib
import json
import time

import asyncio
from micropython import const

from clockterm import OutBuf, forget, log

VERSION = "0.1.0"
try:  # code frozen into the image names itself (firmware/manifest.py); from ROMFS or /lib it does not
    from clockterm import code_id
except ImportError:
    code_id = None
_RESTART_MIN_MS = const(500)
_RESTART_MAX_MS = const(60000)
_DISPLAY_MS = const(10000)  # idle display refresh
_CRASH_LIMIT = const(3)  # crashes in a row that put the terminal into safe mode
_HEALTHY_MS = const(600000)  # running this long clears the crash count
_COUNT_BYTES = const(8)  # read of the crash count file (it holds a few digits)
_COUNT_MAX = const(1000)  # a crash count at or above this is a damaged file
_BOARD_BYTES = const(8192)  # read of board.json (written by the host's bundle, 1-2 KB)
_BOARD_NESTS = const(64)  # objects and lists in board.json (a board config has about 15)
_MOVED_MS = const(60000)  # a first sync that moves the clock more than this rebuilds the in/out state
# A supervised task's record in App._sup (a list: heap, see docs/heap.md), indexed by:
_SUP_NAME = const(0)
_SUP_INFO = const(1)  # its entry in App.tasks, which STATUS shows: restarts, alive, critical
_SUP_FACTORY = const(2)  # makes the task's coroutine, at each start
_SUP_TASK = const(3)  # the task; once ended, kept until its restart (_on_loop_error looks for it)
_SUP_BACKOFF_MS = const(4)  # the wait before the next restart: doubled at each, up to _RESTART_MAX_MS
_SUP_STARTED = const(5)  # ticks_ms of its last start
_SUP_RESTART_AT = const(6)  # ticks_ms at which an ended task is started again
# The answer buffer (clockterm.OutBuf), allocated at boot while the heap still has large free blocks:
# every streamed body is built in it (the uplink's batches, the endpoint's answers, the sim's STATUS);
# it must hold the HTTP head, one punch row, and the largest STATUS member.
_OUT_BYTES = const(1536)
_EP_LINE = const(160)  # the endpoint's line buffer per connection (endpoint.py: _LINE)
_EP_HEAD_MAX = const(4096)  # a request head's bytes (endpoint.py: _HEAD_MAX)
_PROBE_MS = const(1000)  # _max_block probes the heap at most this often


last = None  # the App that run() built, kept after a Ctrl-C so that its status can still be read


def load_board():
    """Import the board layer named in board.json (written into the bundle by the host). Raises
    OSError, ValueError (not JSON, too large), KeyError or TypeError (not a board config)."""
    with open("board.json", "rb") as f:
        board_cfg = f.read(_BOARD_BYTES + 1)
    if len(board_cfg) > _BOARD_BYTES or board_cfg.count(b"[") + board_cfg.count(b"{") > _BOARD_NESTS:
        raise ValueError("size")  # too large or nested for a board config: json would take more heap than there is
    board_cfg = json.loads(board_cfg)
    name = board_cfg["board"]
    if name == "sim":
        import os

        from clockterm.boards import sim

        return sim.Board(board_cfg, os.getenv("CLOCKTERM_STATE") or "state")
    from clockterm.boards import esp32

    return esp32.Board(board_cfg)


class App:
    def __init__(self, board, cfg, cfg_error=None):
        # The config is not kept: each part takes what it needs (the whole document would stay in the heap).
        self.board = board
        self.device_id = cfg["device_id"]
        self.cfg_error = cfg_error
        self.tasks = {}  # name -> {"restarts": n, "alive": bool, "critical": bool}: STATUS shows it
        self._sup = []  # one record per supervised task (see supervise)
        self.stall_ms_max = 0
        board.configure(cfg)
        root = board.fs_root
        from clockterm.clock import Clock

        self.clock = Clock(board.rtc, root + "/clock.json")
        from clockterm import tz

        self.tz = tz.TZ(cfg["tz"])
        from clockterm.journal import open_journal

        jcfg = board.board_cfg["flash"]["journal"]
        floor = root + "/journal.floor"  # seq floor kept apart, survives a reformat
        if jcfg["backend"] == "raw":
            self.journal = open_journal("raw", cfg["journal"]["full_policy"], floor_path=floor,
                                        bdev=board.journal_flash)
        else:
            self.journal = open_journal("littlefs", cfg["journal"]["full_policy"], floor_path=floor,
                                        root=root + "/journal", capacity_bytes=jcfg["size_kb"] * 1024)
        # A corrected punch's offset is its corrected time's. Set on the class (the terminal has one
        # journal): an attribute of the instance grew its dict by 96 bytes, which the ROMFS layout's
        # config PUT could not spare (bench.heapmap)
        type(self.journal).tz = self.tz
        from clockterm.roster import Roster

        self.roster = Roster(root + "/roster.bin")
        if self.roster.error:
            log.error("roster", "%s: no badge is known until a good roster arrives" % self.roster.error)
        from clockterm.terminal import Terminal

        self.terminal = Terminal(self.clock, self.journal, self.roster, self.tz, board.indicator, cfg["terminal"])
        self.clock.on_first_sync = self._correct_presync
        from clockterm import sntp

        self.sntp = sntp.Supervisor(self.clock, cfg["sntp"])
        from clockterm.uplink import Uplink

        self.out = OutBuf(_OUT_BYTES)
        c = cfg["central"]
        ca = c.get("ca") or None
        if ca and not ca.startswith("/"):
            # A CA file provisioned beside the config: on a board "/ca.pem"; on the sim board the config
            # is a host file, and so is its CA (say the one `clockterm central serve` made)
            ca = board.config_path.rpartition("/")[0] + "/" + ca
        self.uplink = Uplink(self.journal, self.clock, cfg["device_id"], c["url"], c["client_id"],
                             c["client_secret"], cafile=ca, batch_max=c["batch_max"], interval_s=c["interval_s"],
                             roster=self.roster, fs_root=root, config_path=board.config_path,
                             good_config_path=board.good_config_path, buf=self.out)
        self.terminal.on_punch = self.uplink.kick
        self.servers = []  # the server.Server instances (the endpoint, the sim's control port): their deadlines
        self.endpoint = None
        if cfg["endpoint"]["port"]:
            try:
                self.endpoint = self.listen(board, cfg["endpoint"])
            except Exception as e:  # (OSError, ValueError: the certificate; MemoryError) taps go on without it
                log.error("endpoint", "not started: %r" % (e,))

    def listen(self, board, endpoint):
        """The device endpoint's server, listening, from the config's endpoint section: HTTPS with the
        config's certificate and key (files beside the config), plain HTTP only when
        endpoint.allow_plain_http says so. Its connections are served by clockterm.endpoint (imported
        at a first connection and forgotten after the last: its code takes heap only while in use).
        The endpoint's state lives on the server: the app, the tokens as (SHA-256, scope bits: 1 read,
        2 admin; a plaintext token of an older config is hashed here, not kept), health without a
        token, the auth failures per address, the head limit."""
        ctx = None
        if endpoint.get("cert") and endpoint.get("key"):
            import tls

            from clockterm.https import load

            ctx = tls.SSLContext(tls.PROTOCOL_TLS_SERVER)
            where = board.config_path.rpartition("/")[0] + "/"  # files named relative to the config's folder
            ctx.load_cert_chain(*[load(p if p.startswith("/") else where + p)
                                  for p in (endpoint["cert"], endpoint["key"])])  # (DER: see https.load)
        elif not endpoint.get("allow_plain_http"):
            raise ValueError("endpoint.cert and endpoint.key, or endpoint.allow_plain_http: true, are needed")
        from clockterm.server import Server

        e = Server("clockterm.endpoint", endpoint.get("connections") or 3, _EP_LINE, ctx)
        e.app = self
        e.keys = []
        # (Names split at run time: "admin", "tokens" and "0.0.0.0" are not otherwise interned, and each
        # interned name is kept for good: docs/heap.md, "Interned names")
        w = "read, admin".split(", ")
        for t in endpoint.get("endpoint.tokens".split(".")[1]) or ():
            d = t.get("sha256")
            d = binascii.unhexlify(d) if d else hashlib.sha256(t["token"].encode()).digest()
            e.keys.append((d, (3 if w[1] in t["scopes"] else 0) | (1 if w[0] in t["scopes"] else 0)))
        e.free = bool(endpoint.get("health_public"))
        e.failures = []  # [address, failures in a row, ticks_ms of the last]
        e.limit = _EP_HEAD_MAX
        e.start(" 127.0.0.1 0.0.0.0".split()[board.name != "sim"], endpoint["port"])  # (the sim: this host only)
        log.info("endpoint", "%s on port %d" % ("https" if ctx else "http (plain)", endpoint["port"]))
        return e

    # --- supervision --------------------------------------------------------------------------

    def supervise(self, name, factory, critical=True):
        """Run factory() as a task; housekeeping restarts it, with backoff, whenever it ends."""
        info = {"restarts": 0, "alive": True, "critical": critical}
        self.tasks[name] = info
        # What housekeeping needs to restart it (no coroutine of its own: a frame each for nothing).
        now = time.ticks_ms()
        self._sup.append([name, info, factory, asyncio.create_task(factory()), _RESTART_MIN_MS, now, now])

    def _restart(self, now):
        # Housekeeping's supervision step: an ended task is counted, said (a crash was said already, by
        # _on_loop_error, as it escaped) and started again once its backoff is over.
        for sup in self._sup:
            info = sup[_SUP_INFO]
            if info["alive"]:
                if sup[_SUP_TASK].done():
                    info["alive"] = False
                    info["restarts"] += 1
                    # What ended it, as MicroPython's asyncio keeps it: StopIteration for a return,
                    # CancelledError (no Exception) for a cancel, else the crash, said already.
                    e = sup[_SUP_TASK].data
                    if isinstance(e, StopIteration) or not isinstance(e, Exception):
                        log.warn(sup[_SUP_NAME], "task ended; restarting")
                    if time.ticks_diff(now, sup[_SUP_STARTED]) > _RESTART_MAX_MS:
                        sup[_SUP_BACKOFF_MS] = _RESTART_MIN_MS  # it ran a good while: not a crash loop
                    sup[_SUP_RESTART_AT] = time.ticks_add(now, sup[_SUP_BACKOFF_MS])
                    sup[_SUP_BACKOFF_MS] = min(sup[_SUP_BACKOFF_MS] * 2, _RESTART_MAX_MS)
            elif time.ticks_diff(now, sup[_SUP_RESTART_AT]) >= 0:
                # Marked running before the start: a start that fails (no heap for the coroutine) is
                # then found ended at the next turn, and backs off like any other end.
                info["alive"] = True
                sup[_SUP_STARTED] = now
                sup[_SUP_TASK] = asyncio.create_task(sup[_SUP_FACTORY]())

    def _on_loop_error(self, loop, context):
        # The loop's exception handler: what escaped a task (a supervised task's crash among them).
        e = context.get("exception")
        f = context.get("future")
        tag = "loop"
        for sup in self._sup:
            if sup[_SUP_TASK] is f:  # found even after housekeeping saw it end: kept until its restart
                tag = sup[_SUP_NAME]
        if e is not None:
            log.exc(tag, e)
        else:
            log.error(tag, context.get("message", "unknown error"))

    def _correct_presync(self, delta):
        # The first sync of this boot: record the correction of the punches stamped before it (same
        # boot, so the ticks anchor makes their true time known), and, when the clock moved by more
        # than a minute, rebuild the in/out state over the work-day window as the true time places it.
        # Called from Clock.correct itself.
        term = self.terminal
        if not -_MOVED_MS <= delta <= _MOVED_MS:
            term.refresh_at = time.ticks_ms()
        if term.presync_first is None:
            return
        try:
            self.journal.correct(term.presync_first, term.presync_last, delta)
            log.info("clock", "corrected seqs %d..%d by %d ms" % (term.presync_first, term.presync_last, delta))
        except Exception as e:  # a full or failing journal: the punches stay flagged unsynced, honestly
            log.exc("clock", e)

    def _idle(self):
        utc_ms, q, _ = self.clock.now()
        from clockterm.clock import gmtime_ms
        from clockterm.punch import QUALITY

        t = gmtime_ms(utc_ms + self.tz.offset_s(utc_ms // 1000) * 1000)
        j = self.journal
        self.board.indicator.idle(("%02d:%02d %s" % (t[3], t[4], QUALITY[q].upper()),
                                   "backlog %d" % (j.last_seq - j.acked_seq)))

    # --- status -------------------------------------------------------------------------------

    def status(self):
        """The status document, member by member: (name, value) pairs, each made when it is asked for,
        so that a caller that streams them (the endpoint, the sim's STATUS) holds one member at a time;
        dict(app.status()) makes the whole document. The heap figures come first, after a collection:
        the live heap before any of the document is made."""
        gc.collect()
        yield "heap", dict(free=gc.mem_free(), alloc=gc.mem_alloc(), max_block=_max_block())
        yield "version", 1
        yield "firmware", VERSION
        yield "code", code_id and code_id.ID
        yield "device_id", self.device_id
        yield "board", self.board.name
        yield "uptime_s", self.clock.mono_ms() // 1000
        yield "loop", dict(stall_ms_max=self.stall_ms_max)
        yield "clock", self.clock.status()
        yield "journal", self.journal.status()
        yield "terminal", self.terminal.status()
        yield "roster", self.roster.status()
        yield "link", self.board.link.status()
        yield "sntp", self.sntp.status()
        yield "uplink", self.uplink.status()
        yield "tasks", self.tasks
        yield "config_error", str(self.cfg_error) if self.cfg_error else None
        yield "config_pending", self.uplink.config_pending  # a newer central overlay waits for a reboot
        yield "errors", log.errors

    # --- run ----------------------------------------------------------------------------------

    async def main(self):
        """Start the tasks, then run the housekeeping loop for ever (in this task: one more would cost
        heap for nothing). It ends only by a bug of its own: the caller resets the board."""
        loop = asyncio.get_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        board = self.board
        # The servers' accept loops, supervised; housekeeping sweeps their connections' deadlines.
        if board.control is not None:
            srv = board.control.start(self.terminal.tap, self.status, self.out)
            self.servers.append(srv)
            self.supervise("control", srv.run)
        if self.endpoint is not None:
            self.servers.append(self.endpoint)
            self.supervise("endpoint", self.endpoint.run, False)
        for name, reader in board.readers():
            self.supervise("reader." + name, lambda r=reader: poll_reader(r, self.terminal.tap))
        if hasattr(board.link, "run"):  # a link with work to do (Wi-Fi, Ethernet); the sim's is always up
            self.supervise("link", board.link.run)
        self.supervise("sntp", self.sntp.run)
        self.supervise("uplink", self.uplink.run)
        wdt = board.watchdog
        asyncio.create_task(wdt.watch())
        gc.collect()
        log.info("app", "terminal %s up (%s, firmware %s, heap free %d)"
                 % (self.device_id, board.name, VERSION, gc.mem_free()))
        # Housekeeping, every 20 ms:
        # - the longest event-loop stall seen: how late a 20 ms sleep wakes up (a stall delays every
        #   task, the tap path's control port and readers included);
        # - the watchdog, fed every timeout/4 unless a critical task is stuck in a crash loop (20
        #   restarts); should this loop die, the feeding stops with it;
        # - supervision: each task that ended is restarted once its backoff is over (_restart);
        # - the crash count, cleared once the terminal has run healthy for _HEALTHY_MS;
        # - the duplicate window's expired slots, and the idle display (local time, sync state,
        #   backlog), every _DISPLAY_MS;
        # - the in/out state's rebuild, a few punches a turn when one is due (Terminal.step).
        every = wdt.timeout_ms // 4
        up = time.ticks_ms()
        fed = time.ticks_add(up, -every)  # the first feed at the first turn: an ESP32 arms its WDT there
        shown = time.ticks_add(up, -_DISPLAY_MS)  # and the idle display
        healthy = False
        while True:
            t0 = time.ticks_ms()
            await asyncio.sleep_ms(20)
            now = time.ticks_ms()
            late = time.ticks_diff(now, t0) - 20
            if late > self.stall_ms_max:
                self.stall_ms_max = late
            if time.ticks_diff(now, fed) >= every:
                fed = now
                for t in self.tasks.values():
                    if t["critical"] and t["restarts"] >= 20:
                        break
                else:
                    wdt.feed()
            # The other duties may fail (a bug in a restart, a display that NACKs, a full filesystem):
            # say it, and keep feeding the watchdog. Supervision first, so that they cannot starve it.
            try:
                self._restart(now)
                for srv in self.servers:
                    srv.expire(now)  # connections past their deadline
                if not healthy and time.ticks_diff(now, up) > _HEALTHY_MS:
                    healthy = True
                    if _crash_count(board):
                        _crash_count(board, 0)  # written only when there is something to clear: spare the flash
                if time.ticks_diff(now, shown) >= _DISPLAY_MS:
                    shown = now
                    self.terminal.expire()  # the duplicate window's old slots (ticks wrap)
                    self._idle()
                self.terminal.step()  # a step of an in/out state rebuild, when one is due
            except Exception as e:
                log.exc("housekeeping", e)


async def poll_reader(reader, tap):
    """A reader's task: poll it every reader.poll_ms and send each badge down the tap path.

    Interrupt handlers in the drivers only fill buffers; poll() never raises on bad input, so a
    driver fault that escapes here is a bug, logged and restarted by the supervisor.
    """
    while True:
        badge = reader.poll()
        if badge:
            tap(badge)
        await asyncio.sleep_ms(reader.poll_ms)


_probed = [None, 0]  # _max_block's last answer and the ticks_ms of its probe


def _max_block():
    # The largest block the heap can give (to 64 bytes), probed by allocation: a fragmented heap fails
    # a big allocation with plenty free, so this, not heap.free, says what still fits. A probe costs
    # a dozen allocations, each failed one a collection (~0.5 ms, most of a STATUS): within _PROBE_MS
    # of the last, its answer is given again (the age checked both ways: ticks wrap).
    now = time.ticks_ms()
    if _probed[0] is not None and 0 <= time.ticks_diff(now, _probed[1]) < _PROBE_MS:
        return _probed[0]
    lo, hi = 0, gc.mem_free()
    while hi - lo > 64:
        mid = (lo + hi) // 2
        try:
            bytearray(mid)
            lo = mid
        except MemoryError:
            hi = mid
    _probed[0], _probed[1] = lo, now
    return lo


def _crash_count(board, add=None):
    # The crash count lives on flash so that it survives the reset that follows a crash. A file that
    # does not hold a count the board could have written (damaged) counts as none: a few bytes are
    # read, whatever its size (a crash loop is still caught: the next crashes count from there).
    path = board.fs_root + "/crashes"
    try:
        with open(path, "rb") as f:
            n = int(f.read(_COUNT_BYTES) or 0)
        if not 0 <= n < _COUNT_MAX:
            n = 0
    except (OSError, ValueError):
        n = 0
    if add is not None:
        n = 0 if add == 0 else n + add
        with open(path, "w") as f:
            f.write(str(n))
    return n


def load_modules():
    """Import the modules the running terminal holds, one by one with a collection after each, so that
    the code objects pack together at the bottom of the heap instead of leaving holes between them that
    later fragment it (a fragmented heap fails large allocations with plenty free). Then the modules
    loaded only now and then (the endpoint's, the uplink's pulls, the roster writer's checks), imported
    once and forgotten: their names stay interned for good, so the interned-name (qstr) pool has its
    final size from boot on. Otherwise a first import later, in the middle of a request on a fragmented
    heap, could be the one that grows the pool (a new pool is twice the last: about 7 KB on a 64-bit
    host, 4 KB on an ESP32) and fail with MemoryError (docs/heap.md, "Interned names"). The config
    module and the TZ parser are imported at every boot anyway."""
    # (One string each, split here: a string constant per name would be held with this module.)
    for name in "punch journal clock tz roster terminal sntp https uplink server".split():
        __import__("clockterm." + name)
        gc.collect()
    for name in "endpoint pulls roster_file".split():
        try:
            __import__("clockterm." + name)
        except Exception as e:  # only a head start: their own users load them and say what fails
            log.error("boot", "%s: %s" % (name, repr(e)))
        forget("clockterm." + name)
        gc.collect()


def run():
    """Entry point called by main.py: safe mode, config, then the app until the board resets."""
    load_modules()
    try:
        board = load_board()
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, ImportError) as e:
        # No board: no pins, no flash to count crashes on. Said, and nothing started (the REPL free).
        log.error("boot", "board.json unusable, nothing started: %r" % (e,))
        return
    board.mount_fs()
    if board.watchdog_reset():
        _crash_count(board, 1)  # the last run ended by the watchdog: that was a crash too
    why = None
    if board.safe_pin_held():
        why = "safe-mode pin held at boot"
    elif _crash_count(board) >= _CRASH_LIMIT:
        why = "%d crashes in a row" % _crash_count(board)
    if why:
        board.safe_mode(why)  # returns with the app stopped and the REPL free
        return
    global last
    try:
        app = last = _build(board)
        if app is not None:
            asyncio.run(app.main())
    except KeyboardInterrupt:
        # A technician's Ctrl-C: `last` keeps the stopped app for `clockterm check --port`; the
        # watchdog, which cannot be stopped, is held back for the technician's session
        board.watchdog.extend()
    except Exception as e:
        log.exc("app", e)
        _crash_count(board, 1)
        board.reset()


def _build(board):
    # The config (local, with the central's overlay) and the App built from it; None when the config
    # is refused. A function of its own so that the config document dies with its frame: each part
    # of the App took what it needs (the whole document would otherwise stay in the heap).
    from clockterm import config

    good = []  # the config's bytes, to keep as the last good one once the App is built
    try:
        cfg, err = config.load(board.config_path, board.good_config_path, good)
    except config.ConfigError as e:
        board.fatal("config refused: %s" % e)
        return None
    if err is not None:
        log.error("config", "new config refused, last good kept: %s" % err)
    # The central's config overlay (docs/uplink.md, "Config"), pulled by the uplink in an earlier boot:
    # laid over the local config when present and valid; otherwise the local config alone, and why.
    try:
        cfg = config.merge_overlay(cfg, config.loads(config.read(board.fs_root + "/config.central.json", "overlay"),
                                                     "overlay"))
        log.info("config", "central overlay applied")
    except OSError:
        pass  # no overlay: the local config as it is
    except config.ConfigError as e:
        why = "central overlay refused, local config in force: %s" % e
        log.error("config", why)
        err = why if err is None else "%s; %s" % (err, why)
    del config
    forget("clockterm.config")  # needed again only to check a config overlay the uplink pulls
    gc.collect()
    app = App(board, cfg, err)
    # The config that booted, kept as the last good one: here, once the App is built (written before,
    # its file buffers left holes in the heap where the TLS context must fit). Written only when it
    # changed (flash wear), through a temporary file and a rename.
    path = board.good_config_path
    if good and path:
        cfg = None
        try:
            with open(path, "rb") as f:
                if f.read(len(good[0]) + 1) == good[0]:
                    return app
        except OSError:
            pass
        try:
            with open(path + ".tmp", "wb") as f:
                f.write(good[0])
            import os

            os.rename(path + ".tmp", path)
        except OSError as e:  # a full filesystem: the terminal runs, the older copy stays
            log.error("config", "last good config not kept: %s" % e)
    return app

