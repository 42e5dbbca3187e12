"""Malformed answers move no ack: the firmware's HTTP client (lib/clockterm/https.py) and uplink under
micropython against a server that answers whatever bytes a case says.

Named cases check each framing rule with its error; the sweep takes good answers recorded from the real
central (Content-Length and chunked), mutates or cuts every byte of them, and runs each through the
uplink in one micropython process: an ack moves only when the answer, read under the same rules by an
independent parser here, is well framed and says the punches were stored; a malformed answer fails
and closes the connection. `make test` runs a sample; `make soak` every case.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import ssl
import tempfile
from collections.abc import Iterator
from typing import Any

import mp
import pytest
from canned import answering
from clockterm_host.central import Handle

DRIVER = mp.script("answers_mp.py")  # the client and uplink side, run once per batch of answers
_TOKEN = b'{"access_token":"t0k2","expires_in":3600}'
TOKEN_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOKEN), _TOKEN)


def token_aside(head: bytes) -> bytes | None:
    """A good token for an uplink that asks for one (it dropped its token after a 401)."""
    return TOKEN_ANSWER if head.startswith(b"POST /v1/oauth/token") else None


def run_cases(answers: list[bytes], mode: str) -> dict[str, Any]:
    with answering(answers, token_aside) as port, tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump({"port": port, "cases": len(answers), "mode": mode}, f)
        f.flush()
        r = mp.run_mp(DRIVER, args=[f.name], timeout=900)
    lines = [json.loads(ln[2:]) for ln in r.stdout.splitlines() if ln[:2] in ("R ", "E ")]  # not the log's
    out = lines.pop()
    assert len(lines) == len(answers), r.stdout[-2000:]
    out["results"] = lines
    return out


# --- named cases: each framing rule --------------------------------------------------------------

H = b"HTTP/1.1 200 OK\r\n"
CL5 = H + b"content-length: 5\r\n\r\nhello"
CHUNKED = H + b"transfer-encoding: chunked\r\n\r\n"

OK = [  # (name, answer, status, body, connection kept)
    ("Content-Length", CL5, 200, b"hello", True),
    ("chunked", CHUNKED + b"5\r\nhello\r\n0\r\n\r\n", 200, b"hello", True),
    ("chunks of upper-case hex with leading zeros", CHUNKED + b"000A\r\nhello hell\r\n2\r\no!\r\n00\r\n\r\n", 200,
     b"hello hello!", True),
    ("chunk extension and a trailer", CHUNKED + b"5;name=v\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n", 200, b"hello",
     True),
    ("Content-Length twice with the same value", H + b"content-length: 5\r\nContent-Length: 5\r\n\r\nhello", 200,
     b"hello", True),
    ("103 Early Hints before the answer", b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + CL5, 200, b"hello",
     True),
    ("a kept header too long to keep: dropped", H + b'etag: "' + b"e" * 400 + b'"\r\n' + CL5[len(H):], 200,
     b"hello", True),
    ("a long header that is not kept", H + b"content-security-policy: " + b"x" * 3000 + b"\r\n" + CL5[len(H):], 200,
     b"hello", True),
    ("HTTP/1.0: not kept alive", b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello", 200, b"hello", False),
    ("Connection: close", H + b"connection: close\r\ncontent-length: 5\r\n\r\nhello", 200, b"hello", False),
    ("a status line without a reason", b"HTTP/1.1 200\r\ncontent-length: 5\r\n\r\nhello", 200, b"hello", True),
    ("a tab in a value, UTF-8 in a header not kept", H + b"content-length:\t5 \r\nx-a: caf\xc3\xa9\xff\r\n\r\nhello",
     200, b"hello", True),
    ("an error page up to the close", b"HTTP/1.1 503 Unavailable\r\n\r\nbusy", 503, b"busy", False),
    ("a 304 with the length of what it does not send", b"HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n\r\n",
     304, b"", True),
]

BAD = [  # (name, answer, the error says)
    ("chunk followed by two bytes other than CRLF", CHUNKED + b"5\r\nhelloXX0\r\n\r\n", "malformed chunk"),
    ("chunk followed by a bare LF", CHUNKED + b"5\r\nhello\n0\r\n\r\n", "malformed answer line"),
    ("chunk longer than its size", CHUNKED + b"5\r\nhello!\r\n0\r\n\r\n", "malformed chunk"),
    ("chunk size with a sign", CHUNKED + b"+5\r\nhello\r\n0\r\n\r\n", "malformed chunk"),
    ("negative chunk size", CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n", "malformed chunk"),
    ("chunk size with 0x", CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", "malformed chunk"),
    ("chunk size with a space in front", CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n", "malformed chunk"),
    ("chunk size with junk behind", CHUNKED + b"5 x\r\nhello\r\n0\r\n\r\n", "malformed chunk"),
    ("chunk size with an underscore", CHUNKED + b"0_5\r\nhello\r\n0\r\n\r\n", "malformed chunk"),
    ("empty chunk size line", CHUNKED + b"\r\nhello\r\n0\r\n\r\n", "malformed chunk"),
    ("chunk size over 8 hex digits", CHUNKED + b"000000005\r\nhello\r\n0\r\n\r\n", "malformed chunk"),
    ("chunked without its last chunk", CHUNKED + b"5\r\nhello\r\n", "closed mid-answer"),
    ("chunked without the blank line after the last chunk", CHUNKED + b"5\r\nhello\r\n0\r\n", "closed mid-answer"),
    ("Content-Length with a sign", H + b"content-length: +5\r\n\r\nhello", "malformed framing"),
    ("negative Content-Length", H + b"content-length: -5\r\n\r\nhello", "malformed framing"),
    ("Content-Length as a list", H + b"content-length: 5, 5\r\n\r\nhello", "malformed framing"),
    ("Content-Length in hex", H + b"content-length: 0x5\r\n\r\nhello", "malformed framing"),
    ("empty Content-Length", H + b"content-length: \r\n\r\nhello", "malformed framing"),
    ("Content-Length over 9 digits", H + b"content-length: 0000000005\r\n\r\nhello", "malformed framing"),
    ("Content-Length twice with different values", H + b"content-length: 5\r\ncontent-length: 4\r\n\r\nhello",
     "malformed header"),
    ("Transfer-Encoding and Content-Length", H + b"transfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n", "malformed framing"),
    ("transfer-coding gzip", H + b"transfer-encoding: gzip\r\n\r\nhello", "malformed framing"),
    ("chunked, then gzip", H + b"transfer-encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "malformed framing"),
    ("Transfer-Encoding twice", H + b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n", "malformed header"),
    ("fewer bytes than announced", H + b"content-length: 9\r\n\r\nhello", "closed mid-answer"),
    ("bytes after the answer on a kept-alive connection", CL5 + b"HTTP/1.1 200 OK\r\n", "bytes after the answer"),
    ("a 204 with a body", b"HTTP/1.1 204 No Content\r\n\r\nhello", "bytes after the answer"),
    ("HTTP/2 status line", b"HTTP/2 200 OK\r\ncontent-length: 5\r\n\r\nhello", "not an HTTP answer"),
    ("two-digit status", b"HTTP/1.1 20 OK\r\ncontent-length: 5\r\n\r\nhello", "not an HTTP answer"),
    ("four-digit status", b"HTTP/1.1 2000 OK\r\ncontent-length: 5\r\n\r\nhello", "not an HTTP answer"),
    ("no space after the status", b"HTTP/1.1 200OK\r\ncontent-length: 5\r\n\r\nhello", "not an HTTP answer"),
    ("lower-case protocol", b"http/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", "not an HTTP answer"),
    ("HTTP/1.2", b"HTTP/1.2 200 OK\r\ncontent-length: 5\r\n\r\nhello", "not an HTTP answer"),
    ("ICY", b"ICY 200 OK\r\ncontent-length: 5\r\n\r\nhello", "not an HTTP answer"),
    ("status 099", b"HTTP/1.1 099 x\r\ncontent-length: 5\r\n\r\nhello", "not an HTTP answer"),
    ("status 600", b"HTTP/1.1 600 x\r\ncontent-length: 5\r\n\r\nhello", "not an HTTP answer"),
    ("101 Switching Protocols", b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n", "not an HTTP answer"),
    ("a bare CR in a header", H + b"x-a: b\rc\r\ncontent-length: 5\r\n\r\nhello", "malformed answer line"),
    ("a NUL in a header", H + b"x-a: b\x00c\r\ncontent-length: 5\r\n\r\nhello", "malformed answer line"),
    ("a bare CR in the status line", b"HTTP/1.1 200 O\rK\r\ncontent-length: 5\r\n\r\nhello", "malformed answer line"),
    ("a header without a colon", H + b"x-a b\r\ncontent-length: 5\r\n\r\nhello", "malformed header"),
    ("a space before the colon", H + b"content-length : 5\r\n\r\nhello", "malformed header"),
    ("a folded header (obs-fold)", H + b"x-a: b\r\n c\r\ncontent-length: 5\r\n\r\nhello", "malformed header"),
    ("a header name with a parenthesis", H + b"x(a): b\r\ncontent-length: 5\r\n\r\nhello", "malformed header"),
    ("a kept header that is not UTF-8", H + b"etag: \xff\r\ncontent-length: 5\r\n\r\nhello", "malformed header"),
    ("lines ended by a bare LF", b"HTTP/1.1 200 OK\ncontent-length: 5\n\nhello", "malformed answer line"),
    ("a 200 only the close delimits", H + b"content-type: application/json\r\n\r\nhello", "malformed framing"),
    ("too many headers", H + b"x-a: 1\r\n" * 40 + b"content-length: 5\r\n\r\nhello", "too many headers"),
    ("a Content-Length line over the read buffer", H + b"content-length: " + b"0" * 200 + b"5\r\n\r\nhello",
     "too long"),
    ("a header not kept over 4 KB", H + b"x-a: " + b"x" * 5000 + b"\r\ncontent-length: 5\r\n\r\nhello", "too long"),
    ("a status line over the read buffer", b"HTTP/1.1 200 " + b"O" * 400 + b"\r\ncontent-length: 5\r\n\r\nhello",
     "too long"),
    ("endless interim answers", b"HTTP/1.1 100 Continue\r\n\r\n" * 6 + CL5, "not an HTTP answer"),
    ("no answer at all", b"", "closed before the answer"),
]


def test_each_framing_rule() -> None:
    answers = [a for _, a, *_ in OK] + [a for _, a, _ in BAD]
    out = run_cases(answers, "client")["results"]
    for (name, _, status, body, kept), (res, connected) in zip(OK, out[:len(OK)], strict=True):
        assert isinstance(res, list), (name, res)
        assert (res[0], bytes.fromhex(res[1]), connected) == (status, body, kept), (name, res, connected)
    for (name, _, says), (res, connected) in zip(BAD, out[len(OK):], strict=True):
        assert isinstance(res, str) and says in res, (name, res)
        assert not connected, (name, "connection kept after a malformed answer")


# --- the sweep: recorded answers, every byte mutated or cut ---------------------------------------

class Malformed(Exception):
    """The answer breaks a framing rule (the firmware must fail the request)."""


KEPT = {b"content-length", b"transfer-encoding", b"connection", b"retry-after", b"etag"}
NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TEXT = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # a line's bytes: no control byte but HTAB
STATUS = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: .*)?", re.S)
LINE_MAX = 128 - 2  # a line the client keeps must fit its read buffer with its CRLF
FRAMING = {b"content-length", b"transfer-encoding"}  # kept headers that may not be dropped when long


def parse_answer(data: bytes) -> tuple[int, bytes, bool]:
    """(status, body, connection kept) of one answer under the client's rules (see lib/clockterm/https.py);
    raises Malformed. An independent reading, here in CPython, to judge the firmware's."""
    pos = 0

    def line(kept: bool = True) -> bytes:
        nonlocal pos
        i = data.find(b"\n", pos)
        if i < 0:
            raise Malformed("cut")
        ln, pos = data[pos:i], i + 1
        if not ln.endswith(b"\r") or not TEXT.fullmatch(ln[:-1]):
            raise Malformed("line")
        if kept and len(ln) - 1 > LINE_MAX:
            raise Malformed("long line")
        return ln[:-1]

    def fields(keep: bool) -> dict[bytes, str]:
        hdrs: dict[bytes, str] = {}
        for _ in range(33):
            ln = line(False)
            if not ln:
                return hdrs
            name, colon, value = ln.partition(b":")
            if not colon or not NAME.fullmatch(name):
                raise Malformed("header")
            name = name.lower()
            if keep and name in KEPT:
                if len(ln) > LINE_MAX:
                    if name in FRAMING:
                        raise Malformed("long line")
                    continue  # dropped, as a header not kept
                try:
                    v = value.decode().strip(" \t")
                except UnicodeDecodeError:
                    raise Malformed("header") from None
                if name in hdrs and (hdrs[name] != v or name == b"transfer-encoding"):
                    raise Malformed("twice")
                hdrs[name] = v
        raise Malformed("too many headers")

    for _ in range(5):
        m = STATUS.fullmatch(line())
        if not m:
            raise Malformed("status")
        status, keep = int(m[2]), m[1] == b"1"
        hdrs = fields(True)
        if status == 101:
            raise Malformed("101")
        if status >= 200:
            break
    else:
        raise Malformed("interim")
    for t in hdrs.get(b"connection", "").lower().split(","):
        keep = {"close": False, "keep-alive": True}.get(t.strip(), keep)
    te, cl = hdrs.get(b"transfer-encoding"), hdrs.get(b"content-length")
    if te is not None and cl is not None:
        raise Malformed("malformed framing")
    body = b""
    if status in (204, 304):
        pass
    elif te is not None:
        if te.lower() != "chunked":
            raise Malformed("coding")
        while True:
            size, semi, _ = line().partition(b";")
            if semi:
                size = size.rstrip(b" \t")
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size):
                raise Malformed("chunk size")
            n = int(size, 16)
            if not n:
                break
            if len(data) - pos < n:
                raise Malformed("cut")
            body += data[pos:pos + n]
            pos += n
            if line():
                raise Malformed("chunk end")
        fields(False)
    elif cl is not None:
        if not re.fullmatch(r"[0-9]{1,9}", cl):
            raise Malformed("length")
        n = int(cl)
        if len(data) - pos < n:
            raise Malformed("cut")
        body, pos = data[pos:pos + n], pos + n
    elif status == 200:
        raise Malformed("no length")
    else:
        body, pos, keep = data[pos:], len(data), False
    if keep and pos != len(data):
        raise Malformed("bytes after")
    return status, body, keep


def expected_ack(answer: bytes) -> tuple[set[int], bool]:
    """The ack points the uplink may move to on this answer (0: none) and whether the connection stays.

    A malformed answer: none, and the connection closed. A well-framed one: what its body says, read
    as strict JSON here. MicroPython's json is lenient (it takes `"a"::1`, `"a" 1` or `"a":}`); a body that
    only it can read may ack what it names as stored_through, which the central did store (the sweep
    starts from answers saying 3 for seqs 1..3): that is a property of the JSON reader, not of the
    framing this sweep is about."""
    try:
        status, body, keep = parse_answer(answer)
    except Malformed:
        return {0}, False
    if status != 200:
        return {0}, keep
    try:
        d = json.loads(body)
    except ValueError:
        m = re.search(rb'"stored_through"\D{0,3}0*([123])\b', body)
        return ({0, int(m[1])} if m else {0}), keep
    st = d.get("stored_through") if isinstance(d, dict) else None
    ok = (isinstance(st, int) and not isinstance(st, bool) and 1 <= st <= 3 and d.get("device_id") == "term-1"
          and d.get("journal_id") == "jsweep")
    return {st if ok else 0}, keep


def record(central: Handle) -> dict[str, bytes]:
    """Good answers of the real central to a batch of seqs 1..3 (term-1, journal jsweep): with a
    Content-Length, and chunked (the central's "chunked" fault: the answer in chunks of 7 bytes)."""
    ctx = ssl.create_default_context(cafile=str(central.ca_path))

    def exchange(s: ssl.SSLSocket, path: str, body: bytes, ctype: str, token: str = "") -> bytes:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: {ctype}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        s.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            while more := s.recv(65536):  # the whole answer, then the kept-alive connection goes quiet
                data += more
        return data

    with socket.create_connection(("127.0.0.1", central.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        ans = exchange(s, "/v1/oauth/token", b"grant_type=client_credentials&client_id=term-1&client_secret=pw1",
                       "application/x-www-form-urlencoded")
        token = json.loads(parse_answer(ans)[1])["access_token"]
        batch = json.dumps({"device_id": "term-1", "journal_id": "jsweep",
                            "fields": ["seq", "badge", "kind", "utc_ms", "utc_offset_min", "quality",
                                       "uncertainty_ms", "employee_id"],
                            "rows": [[i, f"B{i}", "in", 1780000000000 + i, 0, "synced", 3, None] for i in (1, 2, 3)]},
                           separators=(",", ":")).encode()
        length = exchange(s, "/v1/punches", batch, "application/json", token)
        central.set_faults(queue=[{"do": "chunked"}])
        chunked = exchange(s, "/v1/punches", batch, "application/json", token)
    assert b"transfer-encoding: chunked" in chunked.lower() and b"content-length" in length.lower()
    return {"length": length, "chunked": chunked}


REPLACE = (0x00, 0x09, 0x0A, 0x0D, 0x20, 0x2B, 0x2D, 0x30, 0x39, 0x3A, 0x3B, 0x41, 0x61, 0x7F, 0xFF)


def mutations(good: bytes) -> Iterator[tuple[str, bytes]]:
    """Every cut of the answer, every byte deleted, and every byte replaced by each of REPLACE, by its
    case twin and by its neighbour value."""
    for i in range(len(good)):
        yield f"cut at {i}", good[:i]
        yield f"byte {i} deleted", good[:i] + good[i + 1:]
        for r in {*REPLACE, good[i] ^ 0x20, good[i] ^ 0x01} - {good[i]}:
            yield f"byte {i} = {r:#04x}", good[:i] + bytes([r]) + good[i + 1:]


def sweep(central: Handle, sample: int | None) -> None:
    answers = record(central)
    for name, good in answers.items():  # the recordings themselves: read as stored through 3
        assert expected_ack(good) == ({3}, True), (name, good)
    cases = [(f"{name}: {what}", a) for name, good in answers.items() for what, a in mutations(good)]
    if sample is not None:
        cases = random.Random(15).sample(cases, sample)
    cases += [(name, good) for name, good in answers.items()]  # and the good ones: they must ack
    out = run_cases([a for _, a in cases], "uplink")
    wrong = []
    for (what, answer), (acked, err, connected) in zip(cases, out["results"], strict=True):
        want, keep = expected_ack(answer)
        if acked not in want or connected != keep:
            wrong.append((what, answer, acked, want, err, connected, keep))
    assert not wrong, f"{len(wrong)} of {len(cases)} wrong, e.g. {wrong[:5]}"
    moved = sum(1 for _, (acked, _, _) in zip(cases, out["results"], strict=True) if acked)
    assert moved >= len(answers), "the good answers must move the ack"
    print(f"{len(cases)} answers in {out['ms']} ms, {moved} moved the ack")


def test_mutated_answers_sample(central: Handle) -> None:
    sweep(central, 1000)


@pytest.mark.soak
def test_every_mutated_answer_soak(central: Handle) -> None:
    sweep(central, None)
