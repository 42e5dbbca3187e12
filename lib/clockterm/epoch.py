# Epoch handling: the firmware speaks Unix-epoch UTC milliseconds everywhere; ports differ.
#
# Newer MicroPython ports count time.time() from 1970, older ones (and some builds) from 2000.
# time.gmtime(0) tells which; this module converts once, here, so nothing else has to care.

import time
from micropython import const

_Y2K_S = const(946684800)  # seconds from 1970-01-01 to 2000-01-01

# Seconds to add to a port-epoch time to get Unix time.
PORT_TO_UNIX_S = 0 if time.gmtime(0)[0] == 1970 else _Y2K_S


def gmtime_ms(ms):
    """Broken-down UTC (year, month, mday, hour, minute, second, weekday, yearday) of Unix ms."""
    return time.gmtime(ms // 1000 - PORT_TO_UNIX_S)


def iso_ms(ms):
    """ISO 8601 UTC with milliseconds: 2026-11-25T14:13:20.123Z."""
    t = gmtime_ms(ms)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t[0], t[1], t[2], t[3], t[4], t[5], ms % 1000)
