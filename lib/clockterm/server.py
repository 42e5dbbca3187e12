# The small bounded TCP server under the device endpoint (HTTP, clockterm.endpoint) and the sim board's
# control port (lines): one layer, so that the same limits protect both.
#
# What it guarantees whatever clients do (garbage, a 1 MB line, 200 connections at once, a client that
# trickles a byte a second or never reads its answer):
# - at most `count` connections at once, each in a slot with a fixed line buffer made at start (no heap
#   grows with a client's input); a new connection when all slots are taken evicts the one that has
#   waited longest for its client (idle keep-alive or an unfinished head); when every slot is answering,
#   the newcomer waits up to 0.1 s for one to finish, then is closed (the accept loop waits with it);
# - every wait on a client has a deadline (the handler sets it with wait(): head, idle keep-alive, body,
#   a write the client does not take), enforced by expire(), which the app's housekeeping calls: a
#   connection past it is cancelled and closed;
# - the accept loop survives what a connection does (MemoryError included: that connection goes,
#   counted); it is a supervised task, started again on the same listening socket should it end.
# Answers are streamed through the app's answer buffer (clockterm.OutBuf) under its rule: each piece
# filled and handed to the stream with no await in between (send, put, dump), so a large answer needs
# no more heap than that buffer.
# A slot is a list with named indexes (_SL_*; endpoint.py has copies of the ones it reads).

import json
import socket
import time

import asyncio
from micropython import const

from clockterm import forget, log, shut

_SL_TASK = const(0)  # the connection's task, None when the slot is free
_SL_W = const(1)  # its asyncio stream
_SL_BUF = const(2)  # the slot's line buffer (made at start, reused by each connection)
_SL_AT = const(3)  # unread bytes in it: from here
_SL_END = const(4)  # to here
_SL_UNTIL = const(5)  # ticks_ms deadline of what the connection does now
_SL_BUSY = const(6)  # answering or taking a body: not evicted for a newcomer
_SL_SINCE = const(7)  # ticks_ms since when it waits for its client (eviction order)
_SL_PEER = const(8)  # the client's address (the auth failure count is kept per address)
_SL_USED = const(9)  # bytes read since the caller last set it to 0 (a head's size, a body's)
_SL_DROP = const(10)  # the start of the line readline last dropped (its caller may need its name)
_DROP_KEPT = const(20)  # bytes of it: "transfer-encoding:" fits
_SL_RAW = const(11)  # under TLS, the TCP socket (closed after the TLS one: see close)

_HEAD_MS = const(5000)  # a new connection's first deadline, until its handler sets its own
_REFUSE_TRIES = const(5)  # a newcomer finding every slot answering is tried this many times,
_REFUSE_WAIT_MS = const(20)  # ... this far apart, before it is closed
_N_CONNECTIONS = const(3)  # counts: the endpoint's metrics (endpoint.py's _N_* has the others)
_N_EVICTIONS = const(4)
_N_REFUSALS = const(5)
_N_TIMEOUTS = const(6)
_N_ERRORS = const(7)
_COUNTS = const(9)  # endpoint.py's _N_SUBSCRIBERS + 1


class Server:
    """Connections on one port, served by handler(stream, index) (a coroutine, one task per connection;
    index: its slot), or by the run(server, stream, index) of the module that handler names (a str).
    counts: connections, evictions, refusals, timeouts, errors (_N_*: the endpoint's metrics)."""

    def __init__(self, handler, count, size, context=None):
        self.handler = handler
        self.context = context  # an ssl.SSLContext for TLS, else None
        self.tasks = [[None, None, bytearray(size), 0, 0, 0, False, 0, None, 0, b"", None] for _ in range(count)]
        self.sock = None
        self.counts = [0] * _COUNTS  # _N_*
        self.limit = 0  # bytes a long line is read through (counted from the last _SL_USED reset; 0: no limit)

    def start(self, host, port):
        """Listen (once: a restarted accept loop keeps the socket)."""
        ai = socket.getaddrinfo(host, port)[0][-1]
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(ai)
        s.listen(len(self.tasks) + 2)
        s.setblocking(False)
        self.sock = s

    async def run(self):
        """The accept loop (a supervised task)."""
        s = self.sock
        while True:
            yield asyncio.core._io_queue.queue_read(s)
            try:
                c, addr = s.accept()
            except OSError:
                continue
            try:
                # Every slot answering: one that has just sent its last piece is still marked so until its
                # task runs again, so the newcomer waits a little for one to finish before it is refused
                for _ in range(_REFUSE_TRIES):
                    if self.accept(c, addr):
                        break
                    await asyncio.sleep_ms(_REFUSE_WAIT_MS)
                else:
                    self.counts[_N_REFUSALS] += 1
                    c.close()
            except Exception as e:  # MemoryError too: this connection goes, the loop stays
                c.close()
                self.counts[_N_ERRORS] += 1
                log.warn("server", "accepting a connection: %r" % (e,))

    def accept(self, sock, addr):
        # A slot for the new connection: a free one, else the one waiting longest for its client; False
        # when every slot is answering (nothing done then).
        sl = None
        for x in self.tasks:
            if x[_SL_TASK] is None:
                sl = x
                break
        else:
            for x in self.tasks:
                if not x[_SL_BUSY] and (sl is None or time.ticks_diff(x[_SL_SINCE], sl[_SL_SINCE]) < 0):
                    sl = x
            if sl is None:
                return False  # every slot answering: the caller waits or refuses
            self.counts[_N_EVICTIONS] += 1
            self.close(self.tasks.index(sl))
        self.counts[_N_CONNECTIONS] += 1
        sock.setblocking(False)
        try:
            # TCP_NODELAY (6, 1: their values on Linux, lwIP and BSD; the unix port's socket module lacks
            # the names): an answer leaves in several writes, and Nagle would hold each after the first
            # until the client's delayed ACK (~40 ms a request)
            sock.setsockopt(6, 1, 1)
        except OSError:
            pass
        sl[_SL_RAW] = None
        if self.context is not None:
            sl[_SL_RAW] = sock
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        now = time.ticks_ms()
        sl[_SL_W] = asyncio.StreamWriter(sock, {})
        sl[_SL_AT] = sl[_SL_END] = sl[_SL_USED] = 0
        sl[_SL_BUSY] = False
        sl[_SL_SINCE] = now
        sl[_SL_UNTIL] = time.ticks_add(now, _HEAD_MS)  # until the handler, once started, sets its own
        # the client's IP: lwIP gives (ip, port), the unix port a packed sockaddr_in
        sl[_SL_PEER] = addr[0] if isinstance(addr, tuple) else bytes(addr)[4:8]
        sl[_SL_TASK] = asyncio.create_task(self._serve(self.tasks.index(sl)))
        return True

    async def _serve(self, index):
        sl = self.tasks[index]
        h = self.handler
        try:
            if isinstance(h, str):
                # A module whose run(server, stream, index) serves the connection: imported now, forgotten
                # once no connection is left (below), so that its code takes heap only while in use
                await __import__(h, None, None, (h,)).run(self, sl[_SL_W], index)
            else:
                await h(sl[_SL_W], index)
        except (OSError, EOFError, ValueError):
            pass  # the client went or broke the protocol past answering
        except Exception as e:
            self.counts[_N_ERRORS] += 1
            log.warn("server", "connection: %r" % (e,))
        finally:
            if sl[_SL_TASK] is asyncio.current_task():  # not evicted meanwhile (then the slot is another's)
                self.close(index, False)
            if isinstance(h, str) and all(x[_SL_TASK] is None for x in self.tasks):
                forget(h)

    def close(self, index, cancel=True):
        # Free a slot: its task cancelled (unless it is the caller), its sockets closed (clockterm.shut:
        # after a TLS error, plain HTTP or noise on the port, the client would wait and the board lose
        # the socket).
        sl = self.tasks[index]
        t, w, raw = sl[_SL_TASK], sl[_SL_W], sl[_SL_RAW]
        sl[_SL_TASK] = sl[_SL_W] = sl[_SL_RAW] = None
        if cancel and t is not None:
            t.cancel()
        shut(w, raw)

    def expire(self, now):
        """Close the connections whose deadline passed (the app's housekeeping calls it)."""
        for i, sl in enumerate(self.tasks):
            if sl[_SL_TASK] is not None and time.ticks_diff(now, sl[_SL_UNTIL]) > 0:
                self.counts[_N_TIMEOUTS] += 1
                self.close(i)

    def wait(self, index, ms, lock=False):
        """Set slot index's deadline ms from now; lock: it is answering or taking a body (then it is not
        evicted for a newcomer), else it waits for its client (since now, unless it already did)."""
        sl = self.tasks[index]
        now = time.ticks_ms()
        sl[_SL_UNTIL] = time.ticks_add(now, ms)
        if not lock and sl[_SL_BUSY]:
            sl[_SL_SINCE] = now
        sl[_SL_BUSY] = lock

    async def readline(self, index):
        """The next line from slot index (bytes, without its LF and a CR before it). A line longer than
        the slot's buffer is read through (up to self.limit bytes, else ValueError) and dropped: None,
        its first bytes kept in the slot's _SL_DROP. EOF: EOFError. Bytes read add up in _SL_USED."""
        sl = self.tasks[index]
        b = sl[_SL_BUF]
        dropped = False
        while True:
            p, e = sl[_SL_AT], sl[_SL_END]
            i = b.find(b"\n", p, e)
            if i >= 0:
                sl[_SL_AT] = i + 1
                sl[_SL_USED] += i + 1 - p
                if dropped:
                    return None
                return bytes(memoryview(b)[p:i - 1 if i > p and b[i - 1] == 13 else i])
            if e - p == len(b):  # full, no end of line: dropped
                if not dropped:
                    sl[_SL_DROP] = bytes(memoryview(b)[:_DROP_KEPT])
                sl[_SL_USED] += e - p
                if self.limit and sl[_SL_USED] > self.limit:
                    raise ValueError("line too long")
                dropped = True
                sl[_SL_AT] = sl[_SL_END] = p = e = 0
            # More bytes behind the unread ones, moved to the buffer's front
            if p:
                mv = memoryview(b)
                mv[:e - p] = mv[p:e]
                e -= p
                sl[_SL_AT] = 0
                sl[_SL_END] = e
            n = None
            while n is None:  # None: a TLS record not yet whole
                n = await sl[_SL_W].readinto(memoryview(b)[e:])
            if not n:
                raise EOFError
            sl[_SL_END] = e + n

    async def readinto(self, index, mv):
        """Fill mv from slot index's connection (what its line buffer holds first); returns how many
        bytes (fewer only at EOF)."""
        sl = self.tasks[index]
        n = 0
        while n < len(mv):
            p, e = sl[_SL_AT], sl[_SL_END]
            if p == e:
                k = await sl[_SL_W].readinto(mv[n:])
                if k is None:
                    continue
                if not k:
                    break
            else:
                k = min(e - p, len(mv) - n)
                mv[n:n + k] = memoryview(sl[_SL_BUF])[p:p + k]
                sl[_SL_AT] = p + k
            n += k
        return n


# --- answers through the app's shared answer buffer ---------------------------------------------------
# `chunked`: True for an HTTP/1.1 chunked answer, False for plain pieces (HTTP/1.0, event streams, the
# sim's control port).

async def send(stream, out, chunked):
    """What the answer buffer (clockterm.OutBuf) holds, handed to the stream as one piece, then drained. The
    buffer is shared: emptied before the await, and again after it (another user may have filled it)."""
    n = out.n
    if n:
        if chunked:
            stream.write(b"%x\r\n" % n)
        stream.write(out.view())
        if chunked:
            stream.write(b"\r\n")
    out.reset()
    await stream.drain()
    out.reset()


async def put(stream, out, chunked, s):
    """s (str or bytes) into the answer buffer, after handing what it holds to the stream when full."""
    try:
        out.write(s)
        return
    except ValueError:
        pass
    await send(stream, out, chunked)
    try:
        out.write(s)
    except ValueError:  # larger than the whole buffer: a piece of its own
        out.reset()
        s = s.encode() if isinstance(s, str) else s
        if chunked:
            stream.write(b"%x\r\n" % len(s))
        stream.write(s)
        if chunked:
            stream.write(b"\r\n")
        await stream.drain()
        out.reset()


async def dump(stream, out, chunked, doc):
    """A dict (or (name, value) pairs: App.status) as a JSON object, one member at a time: a member
    that does not fit what is left of the buffer goes after the buffer is handed over; one larger than
    the whole buffer is stood in for by an error object, so that the document stays valid JSON."""
    sep = b"{"
    for k, v in doc.items() if isinstance(doc, dict) else doc:
        for _ in range(2):
            mark = out.n
            try:
                out.write(sep)
                json.dump(k, out)
                out.write(":")
                try:
                    j = json.dumps(v)  # whole, one write (token by token costs ~5 us a token)
                except MemoryError:
                    json.dump(v, out)  # no room for it whole: token by token
                else:
                    out.write(j)
                break
            except ValueError as e:  # the buffer full (json.dump raises no ValueError itself)
                out.n = mark  # the member's partial bytes go
                if mark:
                    await send(stream, out, chunked)
                    continue
                out.write(sep)
                json.dump(k, out)
                out.write(':{"error":"%s"}' % e)
                log.warn("server", "%s: %s" % (k, e))
                break
        sep = b","
    await put(stream, out, chunked, b"}\n" if sep == b"," else b"{}\n")
