# Helpers shared by the firmware's modules (here: a module of their own would cost its own heap).

import asyncio
import io


async def cancel_after(task, ms):
    """A timeout without asyncio.wait_for_ms: a small task that cancels `task` after ms. The caller
    cancels it when done in time and, on CancelledError, tells its own timeout (this task done) from a
    cancellation from outside (this task not done). wait_for_ms would cost its module (asyncio.funcs,
    ~0.8 KB) and, while waiting, a second task with two frames and a closure (~0.7 KB)."""
    await asyncio.sleep_ms(ms)
    task.cancel()


def forget(name):
    """Forget module `name` (a dotted name) so that the GC can free its code once nothing else holds
    it: for code needed only now and then (the config checker, the TZ parser, the roster writer).
    sys.modules and the attribute on its package hold a module."""
    import sys

    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    if pkg in sys.modules and hasattr(sys.modules[pkg], attr):
        delattr(sys.modules[pkg], attr)


def shut(stream, raw):
    """Close a connection's sockets (either may be None): its asyncio stream's (MicroPython's
    Stream.close() closes nothing: only the socket's close does) and, under TLS, the TCP socket under
    it (after a TLS error, closing the TLS socket leaves that one open: a socket lost a connection, and
    a board has a dozen). Closing a socket twice does nothing; closing never raises."""
    for s in (stream and stream.s, raw):
        if s is not None:
            try:
                s.close()
            except Exception:
                pass


class OutBuf(io.IOBase):
    """The answer buffer: one per terminal (the app's), allocated at boot, through which every body
    larger than memory is streamed: the uplink's punch batches (uplink.Uplink._build, written by
    https.Client.request), the device endpoint's answers (server.send, put, dump) and the sim's STATUS.

    Streamed bodies follow one rule, because the buffer is shared: a piece is built in the buffer and
    handed to its stream (Stream.write copies it) in the same turn of the event loop, never across an
    await; once handed over, the buffer is free, and the next piece is built in it after the drain,
    from the start (another user may have filled it meanwhile). So a large body needs no more heap
    than this buffer, and no user ever sees another's bytes.

    write(s) appends (str or bytes) and raises ValueError("over N bytes") when s does not fit, leaving
    `n` as it was before that write: a writer notes `n` before a piece of several writes, sets it back
    on ValueError, hands over what the buffer holds, and writes the piece again into the emptied
    buffer. view() is what it holds (a memoryview), reset() empties it. json.dump(obj, buf) writes into
    it token by token (io.IOBase gives the class the stream protocol json.dump needs on MicroPython):
    a fragmented heap cannot always give json.dumps the contiguous block its string needs."""

    def __init__(self, size):
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.n = 0

    def reset(self):
        self.n = 0
        return self

    def write(self, s):
        b = s.encode() if isinstance(s, str) else s
        end = self.n + len(b)
        if end > len(self.buf):
            raise ValueError("over %d bytes" % len(self.buf))
        self.mv[self.n:end] = b
        self.n = end
        return len(b)

    def view(self):
        return self.mv[:self.n]
