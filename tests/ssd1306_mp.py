# MicroPython side of the SSD1306 driver and screen layout tests: a fake I2C peer emulating the
# controller, following the datasheet: control byte 0x80 (one command byte follows) or 0x00 (a command
# stream), 0x40 (display data); horizontal addressing within the column/page window set by 0x21/0x22.
# It records the GDDRAM a panel would show and the state the commands set.
#
# tests/test_ssd1306.py runs this under the unix port with the compiled bundle (linted with the
# firmware's rules, lib/ruff.toml). It prepends the setting CASE (the case below to run) as an
# assignment and appends a call of main(), which prints what the case saw as one JSON document.
# Not collected by pytest (no test_ prefix).

import framebuf
import json

from clockterm.drivers.ssd1306 import SSD1306, SSD1306_I2C, Screen, layout

CASE = globals().get("CASE", "init")

ARGS = {0x20: 1, 0x21: 2, 0x22: 2, 0xA8: 1, 0xD3: 1, 0xDA: 1, 0xD5: 1, 0xD9: 1, 0xDB: 1, 0x81: 1, 0x8D: 1}


class FakeOled:
    def __init__(self, addr=0x3C, fail=False):
        self.addr = addr
        self.ram = bytearray(128 * 8)
        self.pending = []
        self.mode = 2          # page addressing after reset
        self.col = (0, 127)
        self.page = (0, 7)
        self.c = 0
        self.p = 0
        self.on = False
        self.pump = False
        self.mux = 63
        self.segremap = False
        self.writes = 0
        self.fail = fail

    def writeto(self, addr, buf):
        if self.fail:
            raise OSError(19)
        if addr != self.addr:
            raise OSError(19)   # ENODEV: nobody acknowledges
        self.writes += 1
        buf = bytes(buf)
        ctl = buf[0]
        if ctl == 0x40:
            for b in buf[1:]:
                self.data(b)
        elif ctl in (0x80, 0x00):
            for b in buf[1:]:
                self.command(b)
        else:
            raise AssertionError("bad control byte %x" % ctl)

    def command(self, b):
        self.pending.append(b)
        op = self.pending[0]
        if len(self.pending) <= ARGS.get(op, 0):
            return
        args = self.pending[1:]
        self.pending = []
        if op == 0x20:
            self.mode = args[0]
        elif op == 0x21:
            self.col = (args[0], args[1])
            self.c = args[0]
        elif op == 0x22:
            self.page = (args[0], args[1])
            self.p = args[0]
        elif op == 0xAF:
            self.on = True
        elif op == 0xAE:
            self.on = False
        elif op == 0x8D:
            self.pump = args[0] == 0x14
        elif op == 0xA8:
            self.mux = args[0]
        elif op in (0xA0, 0xA1):
            self.segremap = op == 0xA1

    def data(self, b):
        self.ram[self.p * 128 + self.c] = b
        if self.mode != 0:
            raise AssertionError("data in a mode the driver did not set up")
        self.c += 1
        if self.c > self.col[1]:
            self.c = self.col[0]
            self.p += 1
            if self.p > self.page[1]:
                self.p = self.page[0]

    def pixel(self, x, y):
        return (self.ram[(y // 8) * 128 + x] >> (y % 8)) & 1


def region_matches(oled, text, x0, y0):
    # Render text with framebuf's font at (x0, y0) on a blank reference and compare that area.
    w = len(text) * 8
    ref = bytearray(w)
    fb = framebuf.FrameBuffer(ref, w, 8, framebuf.MONO_VLSB)
    fb.text(text, 0, 0, 1)
    for y in range(8):
        for x in range(w):
            if fb.pixel(x, y) != oled.pixel(x0 + x, y0 + y):
                return False
    return True


def lit(oled, x0, y0, x1, y1):
    n = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            n += oled.pixel(x, y)
    return n


def init():
    """Init, a frame sent, a second one after the window moved; a flipped panel."""
    oled = FakeOled()
    d = SSD1306(oled)
    st = {"on": oled.on, "pump": oled.pump, "mux": oled.mux, "mode": oled.mode, "remap": oled.segremap}
    d.fb.fill(0)
    d.fb.pixel(0, 0, 1)
    d.fb.pixel(127, 63, 1)
    d.fb.text("A", 60, 30, 1)
    d.show()
    st["same"] = oled.ram == bytes(memoryview(d._buf)[1:])
    st["corners"] = [oled.pixel(0, 0), oled.pixel(127, 63), oled.pixel(1, 0)]
    # a second show after the window moved elsewhere still lands at the origin
    oled.c, oled.p = 50, 3
    d.fb.fill(0)
    d.fb.pixel(5, 9, 1)
    d.show()
    st["second"] = [oled.pixel(5, 9), lit(oled, 0, 0, 128, 64)]
    f = FakeOled()
    SSD1306(f, flip=True)
    st["flip_remap"] = f.segremap
    return st


def screen():
    """The screen's layout: time, sync state, result, backlog; a big result; a long one."""
    oled = FakeOled()
    s = Screen(SSD1306(oled))
    s.show("08:01", "SYNC", "IN 08:01 Ada L.", 12)
    r = {}
    r["time"] = region_matches(oled, "08:01", 0, 0)
    r["sync"] = region_matches(oled, "SYNC", 128 - 32, 0)
    r["result1"] = region_matches(oled, "IN 08:01 Ada L.", 0, 16)  # 15 characters: one line
    r["below_result"] = lit(oled, 0, 26, 128, 56)
    r["queue"] = region_matches(oled, "QUEUE 12", 0, 56)
    r["rule"] = lit(oled, 0, 10, 128, 11)
    s.show("23:59", "NO SYNC", "OK", 0)
    r["big_lit"] = lit(oled, 0, 16, 128, 40)
    r["big_small_text_absent"] = region_matches(oled, "OK", 56, 20)
    r["no_queue"] = lit(oled, 0, 56, 128, 64)
    r["nosync"] = region_matches(oled, "NO SYNC", 128 - 56, 0)
    r["layout_long"] = layout("12:00", "STALE", "UNKNOWN BADGE 0123456789ABCDEF0123", 100000)
    return r


def i2c_errors():
    """A bus that fails, then works; a controller at another address."""
    oled = FakeOled(fail=True)
    d = SSD1306(oled)
    s = Screen(d)
    a = s.show("08:00", "SYNC", "OK", 0)
    b = s.show("08:00", "SYNC", "OK", 0)
    oled.fail = False
    c = s.show("08:00", "SYNC", "OK", 0)
    wrong = SSD1306(FakeOled(addr=0x3D))
    return {"a": a, "b": b, "c": c, "errors": d.errors, "on": oled.on, "wrong_ok": wrong.ok}


def classic():
    """The classic SSD1306_I2C(width, height, i2c, addr) signature."""
    oled = FakeOled(addr=0x3D)
    d = SSD1306_I2C(128, 64, oled, 0x3D)
    d.fill(0)
    d.text("HELLO", 8, 24)
    d.show()
    return {"hello": region_matches(oled, "HELLO", 8, 24), "lit": lit(oled, 0, 0, 128, 64) > 10}


def main():
    cases = {"init": init, "screen": screen, "i2c_errors": i2c_errors, "classic": classic}
    print(json.dumps(cases[CASE]()))
