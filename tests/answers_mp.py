# MicroPython side of the answer tests: one process runs many answers through the real client and uplink.
#
# tests/test_answers.py runs this under the unix port with the compiled bundle (linted with the firmware's
# rules, lib/ruff.toml), with no settings: it runs as it is imported, on what argv[1] says.
# argv[1] names a JSON file: {"port": P, "cases": N, "mode": "client" | "uplink"}. A server on
# 127.0.0.1:P (tests/test_answers.py) answers the i-th connection with the i-th answer and closes it.
# client: one POST per case through https.Client; prints a line R [[status, body in hex, headers] or the
#   HTTPError text, whether the connection was kept].
# uplink: one Uplink.send_once() per case with three punches pending (seqs 1..3 of term-1/jsweep),
#   the journal's ack point back at 0 before each; prints a line R [the ack point after it, the error,
#   whether the connection was kept].
# A last line E {"ms": ..., "connections": ...}.
# Not collected by pytest (no test_ prefix).

import asyncio
import binascii
import json
import sys
import time

from clockterm import https, uplink
from clockterm.punch import Punch

with open(sys.argv[1]) as f:
    cfg = json.load(f)


class Journal:
    journal_id = "jsweep"

    def __init__(self):
        self.last_seq = 3
        self.acked_seq = 0

    def pending(self, after_seq=None, limit=None):
        seq = (self.acked_seq if after_seq is None else after_seq) + 1
        n = 0
        while seq <= self.last_seq and (limit is None or n < limit):
            yield Punch(1780000000000 + seq, "B%d" % seq, "in", 1, 3, None, 0, seq, self.journal_id)
            seq += 1
            n += 1

    def ack(self, through):
        self.acked_seq = through


class Clock:
    def now(self):
        return 1780000000000, 1, 3


async def client_cases(c):
    for _ in range(cfg["cases"]):
        try:
            status, hdrs, body = await c.request("POST", "/v1/punches", b'{"x":1}',
                                                 "Content-Type: application/json\r\n")
            res = [status, binascii.hexlify(body).decode(), hdrs]
        except https.HTTPError as e:
            res = str(e)
        print("R", json.dumps([res, c.stream is not None]))


async def uplink_cases(c):
    j = Journal()
    up = uplink.Uplink(j, Clock(), "term-1", "https://unused", "term-1", "pw1", client=c)
    up.backoff_min_ms = up.backoff_max_ms = 1
    for _ in range(cfg["cases"]):
        j.acked_seq = 0
        up.token = "t0k"
        up._token_exp = time.ticks_add(time.ticks_ms(), 3600000)
        up.last_error = None
        err = None
        try:
            await up.send_once()
        except https.HTTPError as e:
            err = str(e)
        print("R", json.dumps([j.acked_seq, err or up.last_error, c.stream is not None]))


async def main():
    c = https.Client("http://127.0.0.1:%d" % cfg["port"])
    c.timeout_ms = c.connect_timeout_ms = 3000
    t0 = time.ticks_ms()
    await (client_cases(c) if cfg["mode"] == "client" else uplink_cases(c))
    print("E", json.dumps({"ms": time.ticks_diff(time.ticks_ms(), t0), "connections": c.connections}))


asyncio.run(main())
