# MicroPython side of the ESP32 tick tests (tests/test_esp32_ticks.py): values from a server or a config
# that end up in tick arithmetic (token lifetimes, Retry-After, backoffs, intervals, the heap probe's and
# the endpoint's hold-back ages), with tests/esp32time_mp.py's ESP32Time in place of the modules' time.
# Each case prints what it saw as JSON (tokens: a line "R <json>" per answer).
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml),
# after tests/esp32time_mp.py's text (ESP32Time, esp32_offset). The test prepends its settings as
# assignments (mp.script): CASE, the case to run (a key of CASES at the end), and the case's own: PORT
# (the test's server on 127.0.0.1), ANSWERS (how many answers it gives), CLOCK_PATH (a file for the
# clock's store); then it appends a call of main(). Not collected by pytest (no test_ prefix).

import asyncio
import gc
import json

from clockterm import https, uplink

CASE = globals().get("CASE", "probe")
PORT = globals().get("PORT", 0)
ANSWERS = globals().get("ANSWERS", 0)
CLOCK_PATH = globals().get("CLOCK_PATH", "/tmp/ct-esp32-clock.json")
ESP32Time = globals().get("ESP32Time")  # tests/esp32time_mp.py's, whose text comes first


class NoJournal:
    last_seq = acked_seq = 0


async def tokens():
    # One token request per answer of the test's server; the last two answers: a token that lives a
    # week, used for a day (across the ticks wrap) and then replaced by the next one
    t = ESP32Time()
    t.manual = (1 << 30) - 5000  # 5 s before the ticks wrap
    uplink.time = t
    c = https.Client("http://127.0.0.1:%d" % PORT)
    up = uplink.Uplink(NoJournal(), None, "term-1", "https://unused", "term-1", "pw1", client=c)

    async def get():
        up.token = up.last_error = None
        try:
            ok = await up.ensure_token()
        except Exception as e:  # the answer must be taken or refused, never raise
            return repr(e)
        return [ok, up.token, t.ticks_diff(up._token_exp, t.ticks_ms()) if ok else up.last_error]

    for _ in range(ANSWERS - 2):
        print("R", json.dumps(await get()))
    print("R", json.dumps(await get()))
    out = []
    for hours in (12, 23, 24):
        t.manual = (1 << 30) - 5000 + hours * 3600000
        ok = await up.ensure_token()
        out.append([hours, ok, up.token, c.requests])
    print("R", json.dumps(out))


class OnePunch:  # a journal with one punch pending
    journal_id = "j"
    last_seq, acked_seq = 1, 0

    def pending(self, after=None, limit=None):
        from clockterm.punch import Punch
        if (after or 0) < 1:
            yield Punch(1780000000000, "B1", "in", 1, 3, None, 0, 1, "j")


class SyncedClock:  # the uplink's: a synced time
    def now(self):
        return 1780000000000, 1, 3


class FixedRTC:
    def now_ms(self):
        return 1780000000000

    def set_ms(self, ms):
        pass


async def steps():
    # Each wait from the test's server (two 429 answers) or from the config's largest values, as a
    # board would add it to its ticks
    from clockterm import sntp
    t = ESP32Time()
    t.manual = (1 << 30) - 5000
    uplink.time = sntp.time = t

    def sleepable(ms):  # what asyncio.sleep_ms does with a wait on a board: add it to the ticks
        t.ticks_add(t.ticks_ms(), ms)
        return ms

    out = {}
    c = https.Client("http://127.0.0.1:%d" % PORT)
    from clockterm import config  # the config's largest values (as validate() lets them through)
    top = {}
    for path, _, _, b, _ in config._fields():
        top[path] = b
    up = uplink.Uplink(OnePunch(), SyncedClock(), "term-1", "https://unused", "term-1", "pw1", client=c,
                       interval_s=top["central.interval_s"])
    up.token, up._token_exp = "t", t.ticks_add(t.ticks_ms(), 3600000)
    out["retry_after"] = []
    for _ in range(2):
        out["retry_after"].append(sleepable(await up.send_once()))
    up.failures = 0
    out["backoff_max"] = max(sleepable(up._backoff()) for _ in range(100))
    out["uplink_interval"] = sleepable(up.interval_ms)
    from clockterm import clock as clock_mod

    clock_mod.time = t
    cfg = {"servers": ["127.0.0.1"], "port": 123, "interval_s": top["sntp.interval_s"], "samples": 8,
           "timeout_ms": top["sntp.timeout_ms"], "max_offset_ms": 1000, "stale_after_s": top["sntp.stale_after_s"],
           "min_poll_s": top["sntp.min_poll_s"], "burst_gap_ms": top["sntp.burst_gap_ms"]}
    sup = sntp.Supervisor(clock_mod.Clock(FixedRTC(), CLOCK_PATH, t.ticks_ms), cfg)
    sup._resolve()
    delays = [sleepable(sup._after(True))]
    delays += [sleepable(sup._after(False)) for _ in range(40)]
    out["sntp_max"] = max(delays)
    out["window"] = sleepable(top["terminal.duplicate_window_s"] * 1000)
    out["burst_gap"] = sleepable(top["sntp.burst_gap_ms"])
    print(json.dumps(out))


def probe():
    # app._max_block across the wrap: reused within a second, probed anew after
    from clockterm import app
    t = ESP32Time()
    app.time = t
    t.manual = (1 << 30) - 400  # 0.4 s before the ticks wrap
    first = app._max_block()
    held = bytearray(first - 4096)  # the largest block is now smaller
    seen = [first, app._max_block()]  # within the second: the last probe's answer
    t.manual = 600  # 1 s later, across the wrap
    seen.append(app._max_block())
    del held
    gc.collect()
    t.manual = 600 + (1 << 29) + 10  # ages past 2**29 ms read as negative: a stale answer is not trusted
    seen.append(app._max_block())
    print(json.dumps(seen))


class AuthServer:  # what auth reads of clockterm.server.Server
    tasks = [[None] * 12]
    failures = []
    counts = [0] * 9
    keys = [(b"\x00" * 32, 1)]


def held():
    # endpoint.auth's hold-back of an address after five failures, across the wrap and after days
    from clockterm import endpoint
    t = ESP32Time()
    endpoint.time = t
    s = AuthServer()
    s.tasks[0][8] = b"\x7f\x00\x00\x05"  # the client's address
    t.manual = (1 << 30) - 1000  # a second before the ticks wrap
    seen = []
    for _ in range(6):  # five failures, then held back
        seen.append(endpoint.auth(s, 0, b"Bearer wrong"))
    t.manual = 40000  # 41 s later, across the wrap: past the hold
    seen.append(endpoint.auth(s, 0, b"Bearer wrong"))
    for _ in range(5):
        endpoint.auth(s, 0, b"Bearer wrong")
    t.manual = 40000 + (1 << 29) + 5000  # days later: an age past 2**29 ms reads as negative
    seen.append(endpoint.auth(s, 0, b"Bearer wrong"))
    print(json.dumps(seen))


class Reader:  # what drivers.hold reads and writes of a reader
    hold_ms = 800
    held = 0
    _hold_id = None
    _hold_t = 0


def card_hold():
    # drivers.hold: the same card again after a while, on an ESP32's ticks (2**30 ms), without and with
    # the polls that read nothing in between (a reader polls every few ms; here every 250 s). Per case:
    # [polls?, the first read, the read `later` ms after it]
    from clockterm.drivers import hold
    t = ESP32Time()
    hold.time = t
    day = 86400000
    seen = []
    for polls in (False, True):
        for later in (300, 1000, 7 * day, 10 * day, (1 << 30) + 100, (1 << 30) + 2 * day):
            r = Reader()
            t.manual = 5000
            got = [polls, hold.check(r, "04A1B2C3", t.manual)]
            end = 5000 + later
            if polls:
                while end - t.manual > 250000:
                    t.manual += 250000
                    hold.check(r, None, t.manual % ESP32Time.PERIOD)
            t.manual = end % ESP32Time.PERIOD
            got.append(hold.check(r, "04A1B2C3", t.manual))
            seen.append(got)
    print(json.dumps(seen))


async def sntp_silent():
    # sntp: three servers answer, then fall silent; a round past the answers' time (4 poll intervals)
    # forgets them, so that 2**30 ms on (the ticks wrapped) none reads as a fresh answer
    from clockterm import clock, sntp
    t = ESP32Time()
    sntp.time = t
    t.manual = 5000
    c = clock.Clock(FixedRTC(), None, ticks_ms=t.ticks_ms)
    sup = sntp.Supervisor(c, {"servers": ["a", "b", "c"], "interval_s": 64})
    sup.servers = [[n, n, 16, None, None, None, 1, 1, None, (5000, 1776000000000000, 20000, 15000, None, 2), 0, None,
                    False] for n in ("a", "b", "c")]
    sup._resolved = 5000
    seen = [[sup._live(s, 6000) is not None for s in sup.servers]]  # fresh
    t.manual = 5000 + 4 * 64000 + 1000  # past their time; each polled just now: none due
    for s in sup.servers:
        s[3] = t.manual
    seen.append(await sup.sync_once())
    t.manual = (5000 + (1 << 30) + 60000) % ESP32Time.PERIOD  # a whole period on, and a minute
    seen.append([sup._live(s, t.manual) is not None for s in sup.servers])
    print(json.dumps(seen))


CASES = {"tokens": tokens, "steps": steps, "probe": probe, "held": held, "hold": card_hold, "sntp": sntp_silent}


def main():
    run = CASES[CASE]()
    if run is not None:  # an async case: its coroutine
        asyncio.run(run)
