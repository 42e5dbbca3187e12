"""The emulated NOR flash: bit semantics, counters, block protocol, power-cut injection, file backing."""

from __future__ import annotations

import mp


def test_nor_semantics_counters_and_cuts(tmp_path) -> None:
    img = tmp_path / "f.bin"
    out = mp.mp_json(mp.script("norflash_mp.py", {"IMG": str(img)}, "main()"))
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
