# MicroPython side of the HTTP client tests in a heap cut into small pieces (tests/test_https.py): the
# client connects, streams a batch and refuses an endless header line with no large block of heap free.
# Each case prints what happened as JSON.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml),
# after tests/fragment_mp.py's text (its fragment_heap). The test prepends its settings as assignments
# (mp.script): CASE, the case to run (a key of CASES at the end), and the case's own: URL and CA (the
# central, its CA file) or PORT (the test's server on 127.0.0.1); then it appends a call of main().
# Kept small: this module's code takes heap that the cut would otherwise have. Not collected by pytest
# (no test_ prefix).

import asyncio
import json

from clockterm import https

CASE = globals().get("CASE", "fragmented")
PORT = globals().get("PORT", 0)
URL = globals().get("URL", "")
CA = globals().get("CA")
fragment_heap = globals().get("fragment_heap")  # tests/fragment_mp.py's, whose text comes first

TOKEN_FORM = b"grant_type=client_credentials&client_id=term-1&client_secret=pw1"
FORM = "Content-Type: application/x-www-form-urlencoded\r\n"


async def fragmented():
    # A client built at boot, then the heap cut into pieces of about 2 KB (nothing as large as a TLS
    # context, ~3 KB, in one block): it must still connect and get its answer.
    c = https.Client(URL, cafile=CA)
    cut, pins, _plugs = fragment_heap(2000, 3100)
    st = (await c.request("POST", "/v1/oauth/token", TOKEN_FORM, FORM))[0]
    print(json.dumps({"status": st, "fragmented": cut, "pins": sum(1 for p in pins if p)}))


FRAG_HEAD = (b'{"device_id":"term-1","journal_id":"jfrag","fields":["seq","badge","kind","utc_ms",'
             b'"utc_offset_min","quality","uncertainty_ms","employee_id"],"rows":[')


def frag_row(i):
    return b'%s[%d,"F%05d","in",%d,0,"synced",3,null]' % (b"," if i else b"", i + 1, i, 1780000000000 + i)


async def frag_stream():
    # A batch of 100 rows streamed through the terminal's request buffer on a fresh TLS connection,
    # in a heap cut into pieces of about 1 KB (nothing of 1.4 KB, a piece, in one block).
    c = https.Client(URL, cafile=CA)
    buf = bytearray(1536)  # the terminal's request buffer, allocated at boot like the client
    room = 320

    def body():
        yield len(FRAG_HEAD) + sum(len(frag_row(i)) for i in range(100)) + 2
        pos = room
        buf[pos:pos + len(FRAG_HEAD)] = FRAG_HEAD
        pos += len(FRAG_HEAD)
        for i in range(100):
            r = frag_row(i)
            if pos + len(r) > len(buf):
                yield memoryview(buf)[:pos]
                pos = 0
            buf[pos:pos + len(r)] = r
            pos += len(r)
        buf[pos:pos + 2] = b"]}"
        yield memoryview(buf)[:pos + 2]

    st, _, ans = await c.request("POST", "/v1/oauth/token", TOKEN_FORM, FORM)
    token = json.loads(ans)["access_token"]
    c.close()  # the batch goes on a fresh connection: its TLS handshake still to do
    cut, _pins, _plugs = fragment_heap(1000, 1400)
    try:
        hdrs = "Authorization: Bearer %s\r\nContent-Type: application/json\r\n" % token
        st, _, ans = await c.request("POST", "/v1/punches", body, hdrs, room)
        res = [st, json.loads(ans).get("stored_through")]
    except Exception as e:
        res = repr(e)
    print(json.dumps({"fragmented": cut, "result": res}))


async def endless():
    # Two GETs answered with a header line that never ends, in a heap cut into pieces of about 1 KB
    c = https.Client("http://127.0.0.1:%d" % PORT)
    cut, _pins, _plugs = fragment_heap(1000, 2000)
    out = []
    for _ in range(2):
        try:
            await c.request("GET", "/")
            out.append("answered")
        except https.HTTPError as e:
            out.append(str(e))
        except MemoryError:
            out.append("MemoryError")
    print(json.dumps({"fragmented": cut, "results": out, "connected": c.stream is not None}))


CASES = {"fragmented": fragmented, "frag_stream": frag_stream, "endless": endless}


def main():
    asyncio.run(CASES[CASE]())
