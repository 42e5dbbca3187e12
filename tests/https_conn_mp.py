# MicroPython side of the HTTP client tests against the test's own small servers (tests/test_https.py):
# how lib/clockterm/https.py uses a connection (writes, kept-alive connections found closed, sockets
# left open, early answers). Each case prints what happened as JSON.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): CASE, the case to run (a key of CASES at
# the end), and the case's own: PORT (the test's server on 127.0.0.1), ROOM (head room in front of a
# body), URL, CA and CONNECT_MS (the leak case's server, its CA file or None, the connect timeout in ms or
# 0 for the client's own); then it appends a call of main(). Not collected by pytest (no test_ prefix).

import asyncio
import gc
import json
import os
import time

from clockterm import https

CASE = globals().get("CASE", "idle")
PORT = globals().get("PORT", 0)
ROOM = globals().get("ROOM", 0)
URL = globals().get("URL", "")
CA = globals().get("CA")
CONNECT_MS = globals().get("CONNECT_MS", 0)


def local_url():
    return "http://127.0.0.1:%d" % PORT


class CountingClient(https.Client):
    writes = []

    async def _exchange(self, *args):  # count the writes the request makes on the stream
        s = self.stream
        if not hasattr(s, "counted"):
            write = s.write

            def counted(b):
                CountingClient.writes.append(len(b))
                write(b)
            s.write = s.counted = counted
        return await super()._exchange(*args)


async def one_write():
    # a POST of 3000 bytes after ROOM bytes of head room: how many writes it takes
    c = CountingClient("http://127.0.0.1:%d/api" % PORT)
    buf = bytearray(ROOM + 3000)
    for i in range(ROOM, len(buf)):
        buf[i] = 0x61 + i % 26
    status, _, body = await c.request("POST", "/x", memoryview(buf), "Authorization: Bearer t0k\r\n", room=ROOM)
    print(json.dumps({"status": status, "body": body.decode(), "writes": CountingClient.writes}))


async def stale():
    calls = []

    def body():  # a body built at write time, as the uplink's batch is: called again for a resend
        calls.append(1)
        return b"x" * 10 + b"body %d" % len(calls)

    c = https.Client(local_url())
    out = []
    for _ in range(2):
        status, _, answer = await c.request("POST", "/p", body, "", 10)
        out.append([status, answer.decode()])
        await asyncio.sleep_ms(300)
    print(json.dumps({"answers": out, "calls": len(calls), "connections": c.connections}))


async def idle():
    c = https.Client(local_url())
    out = []
    for _ in range(3):
        try:
            status, _, answer = await c.request("POST", "/p", b"body")
            out.append([status, answer.decode()])
        except https.HTTPError as e:
            out.append(str(e))
        await asyncio.sleep_ms(300)  # meanwhile the server closes the connection, or sends more
    print(json.dumps({"answers": out, "connections": c.connections}))


async def close():
    c = https.Client(local_url())
    status = (await c.request("GET", "/a"))[0]
    kept = c.stream is not None
    c.close()
    print(json.dumps({"status": status, "kept": kept}))
    await asyncio.sleep_ms(1500)  # alive, its objects not yet collected: the server must see the close now


async def stale_streamed():
    buf = bytearray(1000)
    calls = []

    def body():  # three pieces of 1000 bytes through one buffer, built anew for a resend
        calls.append(1)
        yield 3000
        for i in range(3):
            if i:
                time.sleep_ms(150)  # the server's reset arrives before the next piece goes
            buf[:] = b"%d" % i * 1000
            yield memoryview(buf)

    c = https.Client(local_url())
    out = []
    for _ in range(2):
        status, _, answer = await c.request("POST", "/p", body)
        out.append([status, answer.decode()])
    print(json.dumps({"answers": out, "calls": len(calls), "connections": c.connections}))


async def nagle():
    buf = bytearray(1000)

    def body():  # four pieces of 1000 bytes: four writes
        yield 4000
        for _ in range(4):
            buf[:] = b"x" * 1000
            yield memoryview(buf)

    c = https.Client(local_url())
    await c.request("POST", "/p", body)
    t0 = time.ticks_ms()
    for _ in range(10):
        await c.request("POST", "/p", body)
    print(json.dumps({"ms": time.ticks_diff(time.ticks_ms(), t0), "connections": c.connections}))


async def leak():
    # Four GETs that fail (URL, CA: None for none, CONNECT_MS): the file descriptors they leave open
    c = https.Client(URL, cafile=CA)
    if CONNECT_MS:
        c.connect_timeout_ms = CONNECT_MS
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    errors = []
    for _ in range(4):
        try:
            await c.request("GET", "/")
            errors.append("answered")
        except https.HTTPError as e:
            errors.append(str(e))
    gc.collect()
    print(json.dumps({"errors": errors, "fds_added": len(os.listdir("/proc/self/fd")) - before}))


class EarlySock:  # the connection's socket: quiet while the request goes out
    def readinto(self, b):
        return None

    def close(self):
        pass


class EarlyStream:  # the server answered 413 early, then stopped reading: the second piece's write fails
    def __init__(self):
        self.writes = 0
        self.answer = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\n\r\nno"
        self.s = EarlySock()

    def write(self, b):
        self.writes += 1
        if self.writes > 1:
            raise OSError(104)  # ECONNRESET

    async def drain(self):
        pass

    async def readinto(self, b):
        n = min(len(b), len(self.answer))
        b[:n] = self.answer[:n]
        self.answer = self.answer[n:]
        return n


async def early():
    buf = bytearray(100)

    def body():
        yield 150  # the length: three pieces of 50
        for i in range(3):
            buf[:] = b"x" * 100
            yield memoryview(buf)[:50 if i else 100]  # the first with 50 bytes of room

    c = https.Client("http://127.0.0.1:9")  # nothing listens there: a resend could not connect
    c.stream = EarlyStream()
    try:
        st, _, ans = await c.request("POST", "/v1/punches", body, "", 50)
        out = [st, bytes(ans).decode(), c.stream is None]
    except https.HTTPError as e:
        out = str(e)
    print(json.dumps(out))


CASES = {"one_write": one_write, "stale": stale, "idle": idle, "close": close, "stale_streamed": stale_streamed,
         "nagle": nagle, "leak": leak, "early": early}


def main():
    asyncio.run(CASES[CASE]())
