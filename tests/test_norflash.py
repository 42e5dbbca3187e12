"""The emulated NOR flash: bit semantics, counters, block protocol, power-cut injection, file backing."""

from __future__ import annotations

import mp


def test_nor_semantics_counters_and_cuts(tmp_path) -> None:
    img = tmp_path / "f.bin"
    out = mp.mp_json(f"""
import json
from clockterm.boards.cutflash import CutFlash, PowerCut
res = {{}}
for name, fl in (("ram", CutFlash(256, 4)), ("file", CutFlash(256, 4, path={str(img)!r}))):
    b = bytearray(4)
    fl.read(0, b); r = {{"erased": list(b)}}
    fl.program(10, b"\\x0f\\xf0"); fl.program(10, b"\\x3c\\x3c")   # NOR: only clears bits
    fl.read(10, b); r["and"] = list(b[:2])
    fl.erase(0); fl.read(10, b); r["after_erase"] = list(b[:2])
    fl.writeblocks(1, b"\\x00" * 8, 4); bb = bytearray(8); fl.readblocks(1, bb, 4); r["wb"] = list(bb)
    r["ioctl"] = [fl.ioctl(4, 0), fl.ioctl(5, 0), fl.ioctl(6, 1)]
    r["counters"] = [fl.programs, fl.bytes_programmed, fl.erases, fl.ops]
    fl.reset_counters()
    fl.cut_after(1, torn=True)
    fl.program(0, b"\\x00" * 8)
    try:
        fl.program(16, b"\\x00" * 8); r["cut"] = False
    except PowerCut:
        r["cut"] = True
    bb = bytearray(8); fl.read(16, bb); r["torn"] = list(bb)
    fl.program(32, b"\\x00" * 4); fl.erase(0); fl.read(0, bb); r["dead"] = list(bb)
    g = CutFlash(256, 4); g.erase(0); g.program(0, b"\\x00" * 256); g.cut_after(0, torn=True)
    try:
        g.erase(0)
    except PowerCut:
        pass
    c = bytearray(256); g.read(0, c); r["half_erase"] = [c[0], c[127], c[128], c[255]]
    h = CutFlash(256, 4); h.cut_after(0, torn=False)
    try:
        h.program(0, b"\\x00\\x00")
    except PowerCut:
        pass
    h.read(0, bb); r["clean"] = list(bb[:2])
    res[name] = r
    fl.close()
again = CutFlash(256, 4, path={str(img)!r}); b = bytearray(2); again.read(0, b)
res["persisted"] = list(b)
try:
    CutFlash(256, 8, path={str(img)!r}); res["size_check"] = False
except ValueError:
    res["size_check"] = True
print(json.dumps(res))
""")
    for name in ("ram", "file"):
        r = out[name]
        assert r["erased"] == [255] * 4
        assert r["and"] == [0x0C, 0x30] and r["after_erase"] == [255, 255]
        assert r["wb"] == [0] * 8 and r["ioctl"] == [4, 256, 0]
        assert r["counters"] == [3, 12, 2, 5]
        assert r["cut"] and r["torn"] == [0, 0, 0, 0, 255, 255, 255, 255]
        assert r["dead"] == [0] * 8  # writes and erases after the cut are ignored
        assert r["half_erase"] == [255, 255, 0, 0] and r["clean"] == [255, 255]
    assert out["persisted"] == [0, 0] and out["size_check"]
