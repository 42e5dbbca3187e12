# The virtual board's machine module: pins, buses and timers with nothing attached, the host's clock, and
# resets that end the interpreter with a code the virtual board restarts it by (tools/clockterm_host/vboard.py).
import os
import time

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
RESET_EXIT = 42  # the exit code that asks the virtual board for a hard reset
_HW = os.getenv("VBOARD_HW") or "."


def _pins_low():
    # Pins held low (a button held at power-up): hw/pins_low, one number a line.
    try:
        with open(_HW + "/pins_low") as f:
            return {int(x) for x in f.read().split()}
    except (OSError, ValueError):
        return set()


_LOW = _pins_low()  # read now: the filesystem mounted at / hides the host's folders later


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, n, mode=None, pull=None, value=None):
        self.n = n
        self._v = 0 if n in _LOW else 1
        if value is not None:
            self._v = value

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = v

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self._v = 1

    def off(self):
        self._v = 0

    def irq(self, handler=None, trigger=None, hard=False):
        return None


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self._f = freq
        self._d = duty_u16

    def freq(self, f=None):
        if f is None:
            return self._f
        self._f = f

    def duty_u16(self, d=None):
        if d is None:
            return self._d
        self._d = d

    def deinit(self):
        pass


class SPI:
    def __init__(self, bus, **kw):
        pass

    def write(self, buf):
        pass

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = 0

    def write_readinto(self, wbuf, rbuf):
        self.readinto(rbuf)


class I2C:
    def __init__(self, n, scl=None, sda=None, freq=400000):
        pass

    def writeto(self, addr, buf, stop=True):
        raise OSError(19)  # ENODEV: nothing on the bus

    def writevto(self, addr, bufs, stop=True):
        raise OSError(19)

    def scan(self):
        return []


class UART:
    def __init__(self, n, **kw):
        pass

    def any(self):
        return 0

    def read(self, n=-1):
        return None

    def readinto(self, buf, n=-1):
        return None

    def write(self, buf):
        return len(buf)


class RTC:
    def datetime(self, t=None):
        if t is None:
            g = time.gmtime()
            return (g[0], g[1], g[2], g[6], g[3], g[4], g[5], 0)
        return None  # the host's clock is not set from here


link = None  # the relay's pipe (vboot.py sets it): the watchdog is kept there, past a soft reset


def _tell(word):
    if link:
        link.write(word)


class WDT:
    """As the ESP32's task watchdog: the first WDT() starts it, another sets a new timeout, and nothing
    stops it; not fed within its timeout, the board is reset (the relay keeps it: tools/clockterm_host/vboard.py)."""

    def __init__(self, id=0, timeout=5000):
        _tell(b"W%d\n" % timeout)

    def feed(self):
        _tell(b"F")


def reset_cause():
    return int(os.getenv("VBOARD_RESET") or PWRON_RESET)


def reset():
    raise SystemExit(RESET_EXIT)


def soft_reset():
    raise SystemExit(RESET_EXIT + 1)


def unique_id():
    return b"vboard"


def freq(hz=None):
    return 240000000


def idle():
    time.sleep_ms(1)
