# MicroPython side of the HTTP client tests against the real central (tests/test_https.py): each case
# drives lib/clockterm/https.py and prints what happened as JSON.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): CASE, the case to run (a key of CASES at
# the end), and the case's own: CFG_FILE (a JSON file of steps or of a body to stream), URL and CA (the
# central, its CA file), SILENT_PORT (a server that never answers); then it appends a call of main().
# The cases against the test's own small servers are in tests/https_conn_mp.py, those in a cut heap in
# tests/https_heap_mp.py (each module's code takes heap from the cases: they are kept apart).
# Not collected by pytest (no test_ prefix).

import asyncio
import gc
import json
import time

from clockterm import https

CASE = globals().get("CASE", "driver")
CFG_FILE = globals().get("CFG_FILE", "")
URL = globals().get("URL", "")
CA = globals().get("CA")
SILENT_PORT = globals().get("SILENT_PORT", 0)

FORM = "Content-Type: application/x-www-form-urlencoded\r\n"


async def driver():
    # CFG_FILE: {"url", "ca", "steps", "tune"}; runs the steps through one Client
    with open(CFG_FILE) as f:
        cfg = json.load(f)
    c = https.Client(cfg["url"], cafile=cfg.get("ca"))
    for k, v in cfg.get("tune", {}).items():
        setattr(c, k, v)
    out = []
    token = None
    gc.collect()
    base = gc.mem_alloc()
    peak = 0
    for step in cfg["steps"]:
        hdrs = ""
        if token or step.get("bearer"):
            hdrs = "Authorization: Bearer %s\r\n" % (step.get("bearer") or token)
        body = step.get("body")
        if step.get("form"):
            body = step["form"].encode()
            hdrs += "Content-Type: application/x-www-form-urlencoded\r\n"
        elif body is not None:
            body = json.dumps(body).encode()
            hdrs += "Content-Type: application/json\r\n"
        try:
            status, _, answer = await c.request(step["method"], step["path"], body, hdrs)
            res = {"status": status, "body": answer.decode(), "connected": c.stream is not None}
            if step.get("token") and status == 200:
                token = json.loads(answer)["access_token"]
        except https.HTTPError as e:
            res = {"error": str(e), "connected": c.stream is not None}
        peak = max(peak, gc.mem_alloc() - base)
        out.append(res)
    c.close()
    print(json.dumps({"results": out, "connections": c.connections, "requests": c.requests,
                      "heap_delta_peak": peak}))


async def attempt(c, path="/v1/health"):
    t0 = time.ticks_ms()
    try:
        st = (await c.request("GET", path))[0]
    except https.HTTPError as e:
        st = str(e)
    return st, time.ticks_diff(time.ticks_ms(), t0)


async def timers():
    out = {}
    # A server that takes the TCP connection and never answers the TLS handshake (which runs at the
    # first write, under the request's timeout): a timeout, and no connection kept.
    c = https.Client("https://127.0.0.1:%d" % SILENT_PORT, cafile=CA)
    c.timeout_ms = 400
    out["silent"] = await attempt(c)
    out["silent_connected"] = c.stream is not None
    # A request that ends in time leaves no timer behind: the task is not cancelled later.
    c = https.Client(URL, cafile=CA)
    c.connect_timeout_ms = c.timeout_ms = 300
    out["fast"] = (await attempt(c))[0]
    try:
        await asyncio.sleep_ms(700)
        out["after"] = "not cancelled"
    except asyncio.CancelledError:
        out["after"] = "cancelled by a stale timer"
    # A request cancelled from outside: CancelledError (not an HTTP timeout), the connection closed.
    c.timeout_ms = 5000
    t = asyncio.create_task(c.request("GET", "/v1/slow"))
    await asyncio.sleep_ms(300)  # the central stalls: the request is waiting for its answer
    t.cancel()
    try:
        await t
        out["outside"] = "finished"
    except asyncio.CancelledError:
        out["outside"] = "cancelled"
    except https.HTTPError as e:
        out["outside"] = "HTTPError " + str(e)
    out["outside_connected"] = c.stream is not None
    print(json.dumps(out))


async def streamed():
    # A streamed body (a function that returns a generator: the length, then pieces filled into one
    # small shared buffer, the first with head room), as the uplink streams a batch larger than its
    # buffer. CFG_FILE: {"url", "ca", "body", "form", "extras"}: a request per extra, whose length
    # is announced that many bytes off.
    with open(CFG_FILE) as f:
        cfg = json.load(f)
    room = 320
    buf = bytearray(room + 500)
    writes = []

    def pieces(body, extra):
        # body in pieces of up to 500 bytes through buf; the length announced is len(body) + extra
        def gen():
            yield len(body) + extra
            i, start = 0, room
            while i < len(body):
                k = min(len(buf) - start, len(body) - i)
                buf[start:start + k] = body[i:i + k]
                yield memoryview(buf)[:start + k]
                i += k
                start = 0
        return gen

    c = https.Client(cfg["url"], cafile=cfg["ca"])
    status, _, answer = await c.request("POST", "/v1/oauth/token", cfg["form"].encode(), FORM)
    hdrs = "Authorization: Bearer %s\r\nContent-Type: application/json\r\n" % json.loads(answer)["access_token"]
    out = []
    for extra in cfg["extras"]:
        s0 = c.stream
        if s0 is not None and not hasattr(s0, "counted"):  # count the writes on the stream
            write = s0.write

            def counted(b, write=write):
                writes.append(len(b))
                write(b)
            s0.write = s0.counted = counted
        del writes[:]
        try:
            status, _, answer = await c.request("POST", "/v1/punches", pieces(cfg["body"].encode(), extra),
                                                hdrs, room)
            res = {"status": status, "body": answer.decode()}
        except https.HTTPError as e:
            res = {"error": str(e)}
        res["connected"] = c.stream is not None
        res["writes"] = list(writes) if s0 is not None else None
        out.append(res)
    print(json.dumps({"results": out, "connections": c.connections}))


CASES = {"driver": driver, "timers": timers, "streamed": streamed}


def main():
    asyncio.run(CASES[CASE]())
