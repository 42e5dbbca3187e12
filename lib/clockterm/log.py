# Logging for the terminal: one line per event on the console, the last errors kept for status.

import time
from micropython import const

_KEEP = const(8)  # last error lines kept for the status endpoint
_KEEP_CHARS = const(150)  # of each: 8 of them fit the 1.5 KB answer buffer as one STATUS member

_t0 = time.ticks_ms()
errors = []  # last _KEEP error lines, oldest first
counts = {"warn": 0, "error": 0}


def _line(level, tag, msg):
    # Print one log line (seconds since boot, level, tag, message) and return it.
    line = "%9.3f %s %s: %s" % (time.ticks_diff(time.ticks_ms(), _t0) / 1000, level, tag, msg)
    print(line)
    return line


def info(tag, msg):
    _line("I", tag, msg)


def warn(tag, msg):
    counts["warn"] += 1
    _line("W", tag, msg)


def error(tag, msg):
    counts["error"] += 1
    line = _line("E", tag, msg)
    errors.append(line[:_KEEP_CHARS])  # the console has it whole
    if len(errors) > _KEEP:
        errors.pop(0)


def exc(tag, e):
    """Log an exception with its type and, where the port can, its traceback."""
    error(tag, "%s: %s" % (type(e).__name__, e))
    try:
        import sys

        sys.print_exception(e)
    except (ImportError, AttributeError):
        pass
