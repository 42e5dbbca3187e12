# MicroPython side of the emulated NOR flash test (lib/clockterm/boards/norflash.py, and cutflash.py
# for the counters and power cuts): bit semantics, counters, the block protocol and power-cut injection,
# in RAM and backed by a file.
#
# tests/test_norflash.py runs this under the unix port with the compiled bundle (linted with the
# firmware's rules, lib/ruff.toml). It prepends the setting IMG (the path of the image file to make)
# as an assignment and appends a call of main(), which prints what each flash showed as one JSON
# document. Not collected by pytest (no test_ prefix).

import json

from clockterm.boards.cutflash import CutFlash, PowerCut

IMG = globals().get("IMG", "/tmp/norflash_mp.bin")


def semantics(fl):
    """One chip through erase, programming, the block protocol, counters and power cuts."""
    b = bytearray(4)
    fl.read(0, b)
    r = {"erased": list(b)}
    fl.program(10, b"\x0f\xf0")
    fl.program(10, b"\x3c\x3c")  # NOR: only clears bits
    fl.read(10, b)
    r["and"] = list(b[:2])
    fl.erase(0)
    fl.read(10, b)
    r["after_erase"] = list(b[:2])
    fl.writeblocks(1, b"\x00" * 8, 4)
    bb = bytearray(8)
    fl.readblocks(1, bb, 4)
    r["wb"] = list(bb)
    r["ioctl"] = [fl.ioctl(4, 0), fl.ioctl(5, 0), fl.ioctl(6, 1)]
    r["counters"] = [fl.programs, fl.bytes_programmed, fl.erases, fl.ops]
    fl.reset_counters()
    fl.cut_after(1, torn=True)
    fl.program(0, b"\x00" * 8)
    try:
        fl.program(16, b"\x00" * 8)
        r["cut"] = False
    except PowerCut:
        r["cut"] = True
    bb = bytearray(8)
    fl.read(16, bb)
    r["torn"] = list(bb)
    fl.program(32, b"\x00" * 4)
    fl.erase(0)
    fl.read(0, bb)
    r["dead"] = list(bb)
    g = CutFlash(256, 4)
    g.erase(0)
    g.program(0, b"\x00" * 256)
    g.cut_after(0, torn=True)
    try:
        g.erase(0)
    except PowerCut:
        pass
    c = bytearray(256)
    g.read(0, c)
    r["half_erase"] = [c[0], c[127], c[128], c[255]]
    h = CutFlash(256, 4)
    h.cut_after(0, torn=False)
    try:
        h.program(0, b"\x00\x00")
    except PowerCut:
        pass
    h.read(0, bb)
    r["clean"] = list(bb[:2])
    return r


def main():
    res = {}
    for name, fl in (("ram", CutFlash(256, 4)), ("file", CutFlash(256, 4, path=IMG))):
        res[name] = semantics(fl)
        fl.close()
    again = CutFlash(256, 4, path=IMG)
    b = bytearray(2)
    again.read(0, b)
    res["persisted"] = list(b)
    try:
        CutFlash(256, 8, path=IMG)
        res["size_check"] = False
    except ValueError:
        res["size_check"] = True
    print(json.dumps(res))
