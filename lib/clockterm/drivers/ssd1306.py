# SSD1306 128x64 (or 128x32) OLED over I2C, with the terminal's screen layout on top of framebuf.
#
# SSD1306(i2c, addr=0x3C, width=128, height=64, rst=None, flip=False)
#   i2c: an I2C-like object with writeto(addr, buf) (machine.I2C / SoftI2C on the board, a fake
#   controller in tests); rst: optional Pin-like reset line. One preallocated buffer holds the
#   0x40 data prefix and the whole frame, so show() is a single I2C write with no allocation.
#   fb: the framebuf.FrameBuffer to draw on; show(); power(on); contrast(0..255).
#   The display is not critical: I2C errors are counted in `errors`, never raised.
#
# Screen(display) -> show(time_str, sync, result, backlog): the terminal's screen:
#   line 0: local time on the left, the clock's sync state on the right (the app shows SYNCED,
#   UNSYNCED or STALE), a rule, the last result in double size when it fits 8 characters, else on
#   two normal lines ("IN 08:01 Ada L.", "UNKNOWN BADGE", "MEMORY FULL"; one line on a 128x32
#   panel), and at the bottom the backlog (an int; "QUEUE 12", nothing when 0; 128x64 only).
#   docs/employee-card.md shows each screen, rendered from the bytes show() sends (make card).

from micropython import const
import framebuf

_CHAR = const(8)  # framebuf's built-in font: 8x8 pixels
_SCALE = const(2)


class SSD1306:
    """The OLED controller over I2C; see the module comment."""

    def __init__(self, i2c, addr=0x3C, width=128, height=64, rst=None, flip=False):
        self._i2c = i2c
        self.addr = addr
        self.width = width
        self.height = height
        self.pages = height // 8
        self.flip = flip
        self._rst = rst
        self._buf = bytearray(1 + width * self.pages)
        self._buf[0] = 0x40  # control byte: the rest is display data
        self.fb = framebuf.FrameBuffer(memoryview(self._buf)[1:], width, height, framebuf.MONO_VLSB)
        self._c = bytearray(2)
        self._c[0] = 0x80  # control byte: one command byte follows
        self.errors = 0
        self.ok = False
        self.init()

    def _cmd(self, c):
        self._c[1] = c
        self._i2c.writeto(self.addr, self._c)

    def init(self):
        """Reset (when wired) and configure the controller; False when it does not answer."""
        try:
            if self._rst is not None:
                self._rst.value(0)
                self._rst.value(1)
            seg, com = (0xA0, 0xC0) if self.flip else (0xA1, 0xC8)
            for c in (0xAE,  # display off while configuring
                      0x20, 0x00,  # horizontal addressing: one write fills the frame row by row
                      0x40,  # start line 0
                      seg, com,  # orientation
                      0xA8, self.height - 1,  # multiplex ratio
                      0xD3, 0x00,  # no vertical offset
                      0xDA, 0x12 if self.height == 64 else 0x02,  # COM pins layout
                      0xD5, 0x80,  # clock divide / oscillator
                      0xD9, 0xF1,  # pre-charge (internal charge pump)
                      0xDB, 0x30,  # VCOMH deselect level
                      0x81, 0xCF,  # contrast
                      0xA4,  # display follows RAM
                      0xA6,  # not inverted
                      0x8D, 0x14,  # charge pump on
                      0xAF):  # display on
                self._cmd(c)
            self.ok = True
        except OSError:
            self.errors += 1
            self.ok = False
        return self.ok

    def show(self):
        """Send the frame buffer to the display."""
        try:
            if not self.ok and not self.init():
                return False
            for c in (0x21, 0, self.width - 1, 0x22, 0, self.pages - 1):
                self._cmd(c)
            self._i2c.writeto(self.addr, self._buf)
            return True
        except OSError:
            self.errors += 1
            self.ok = False  # re-init on the next show(): the panel may have lost power
            return False

    def power(self, on):
        try:
            self._cmd(0xAF if on else 0xAE)
        except OSError:
            self.errors += 1

    def contrast(self, v):
        try:
            self._cmd(0x81)
            self._cmd(v & 0xFF)
        except OSError:
            self.errors += 1


def layout(time_str, sync, result, backlog, width=128, height=64):
    """The screen as (x, y, text, scale) items: pure, so it is tested without a display."""
    cols = width // _CHAR
    items = [(0, 0, time_str[:cols], 1)]
    room = cols - len(time_str) - 1
    if room > 0:
        s = sync[:room]
        items.append((width - len(s) * _CHAR, 0, s, 1))
    result = result or ""
    y = 16 if height == 64 else 12
    if len(result) * _CHAR * _SCALE <= width:
        items.append(((width - len(result) * _CHAR * _SCALE) // 2, y + 4, result, _SCALE))
    else:
        first, rest = _wrap(result, cols)
        items.append((0, y, first, 1))
        if rest and height == 64:
            items.append((0, y + 12, rest[:cols], 1))
    if height == 64:
        items.append((0, height - _CHAR, ("QUEUE %d" % backlog)[:cols] if backlog else "", 1))
    return items


def _wrap(text, cols):
    if len(text) <= cols:
        return text, ""
    cut = text.rfind(" ", 0, cols + 1)
    if cut <= 0:
        cut = cols
    return text[:cut].rstrip(), text[cut:].strip()


class Screen:
    """The terminal's screen on an SSD1306; see the module comment."""

    def __init__(self, display):
        self.d = display
        self._glyph = bytearray(_CHAR)  # one 8x8 character, scaled up by hand for big text
        self._gfb = framebuf.FrameBuffer(self._glyph, _CHAR, _CHAR, framebuf.MONO_VLSB)

    def show(self, time_str, sync, result, backlog):
        d = self.d
        fb = d.fb
        fb.fill(0)
        for x, y, text, scale in layout(time_str, sync, result, backlog, d.width, d.height):
            if scale == 1:
                fb.text(text, x, y, 1)
            else:
                self._big(text, x, y, scale)
        fb.hline(0, 10, d.width, 1)
        return d.show()

    def _big(self, text, x, y, scale):
        fb = self.d.fb
        g = self._gfb
        for ch in text:
            g.fill(0)
            g.text(ch, 0, 0, 1)
            for py in range(_CHAR):
                for px in range(_CHAR):
                    if g.pixel(px, py):
                        fb.fill_rect(x + px * scale, y + py * scale, scale, scale, 1)
            x += _CHAR * scale


class SSD1306_I2C(SSD1306):
    """The classic micropython-lib signature and drawing methods, for callers written against it."""

    def __init__(self, width, height, i2c, addr=0x3C, external_vcc=False):
        super().__init__(i2c, addr, width, height)
        fb = self.fb
        self.fill = fb.fill
        self.pixel = fb.pixel
        self.text = fb.text
        self.hline = fb.hline
        self.vline = fb.vline
        self.rect = fb.rect
        self.fill_rect = fb.fill_rect
        self.blit = fb.blit
        self.scroll = fb.scroll
