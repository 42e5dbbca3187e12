# Logging for the terminal: one line per event on the console, the last errors kept for status.

import time
from micropython import const

_KEEP = const(8)  # last error lines kept for the status endpoint
_KEEP_CHARS = const(150)  # of each: 8 of them fit the 1.5 KB answer buffer as one STATUS member

# [ticks_ms at the last line, ms since boot then]: the seconds are added up line by line, so that they
# run on past the ticks' wrap (12.4 days on an ESP32, where a difference is right within 6.2: the
# terminal logs far more often than that); printed from integers (an ESP32's 32-bit floats keep 7
# digits: a day's seconds would lose their ms)
_t0 = [time.ticks_ms(), 0]
errors = []  # last _KEEP error lines, oldest first
counts = {"warn": 0, "error": 0}


def _line(level, tag, msg):
    # Print one log line (seconds since boot, level, tag, message) and return it.
    t = time.ticks_ms()
    _t0[1] += time.ticks_diff(t, _t0[0])
    _t0[0] = t
    line = "%5d.%03d %s %s: %s" % (_t0[1] // 1000, _t0[1] % 1000, level, tag, msg)
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
