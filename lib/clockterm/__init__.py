# Helpers shared by the firmware's modules (here: a module of their own would cost its own heap).

import asyncio


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
