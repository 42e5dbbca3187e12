# A stand-in for the ESP32's machine module, for testing the board layer on the unix port only.
# It records what the board layer asks of the hardware; it is never part of the bundle.


log = []  # (what, args) in call order
pins_low = set()  # pins that read 0 (e.g. a held safe-mode button)
reset_cause_value = 1
PWRON_RESET = 1
WDT_RESET = 3


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, n, mode=None, pull=None, value=None):
        self.n = n
        self.mode = mode
        self._v = 0 if n in pins_low else 1
        if value is not None:
            self._v = value
        log.append(("Pin", n, mode))

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = v

    def irq(self, handler=None, trigger=None, hard=False):
        self.handler = handler


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.pin = pin
        self.f = freq
        self.d = duty_u16
        log.append(("PWM", pin.n))

    def freq(self, f=None):
        if f is not None:
            self.f = f
        return self.f

    def duty_u16(self, d=None):
        if d is not None:
            self.d = d
        return self.d


class SPI:
    def __init__(self, bus, **kw):
        log.append(("SPI", bus, sorted(kw)))

    def write(self, buf):
        pass

    def write_readinto(self, wbuf, rbuf):
        for i in range(len(rbuf)):
            rbuf[i] = 0


class UART:
    def __init__(self, n, **kw):
        log.append(("UART", n, kw.get("rx"), kw.get("baudrate")))

    def readinto(self, buf):
        return None

    def any(self):
        return 0


class I2C:
    def __init__(self, n, scl=None, sda=None, freq=400000):
        log.append(("I2C", n, scl.n, sda.n))

    def writeto(self, addr, buf):
        return len(buf)

    def writevto(self, addr, bufs):
        return None


class RTC:
    def __init__(self):
        pass

    def datetime(self, t=None):
        if t is not None:
            log.append(("RTC.datetime", t))


class WDT:
    def __init__(self, timeout=5000):
        log.append(("WDT", timeout))

    def feed(self):
        pass


def reset_cause():
    return reset_cause_value


def reset():
    log.append(("reset",))
    raise SystemExit("reset")


def unique_id():
    return b"\x01\x02\x03\x04\x05\x06"



