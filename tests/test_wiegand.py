"""Wiegand driver on the unix port, driven by simulated pins that fire irq callbacks with timing."""

from __future__ import annotations

from pathlib import Path

import pytest
from mp import mp_json, script

REPO = Path(__file__).resolve().parents[1]

# The simulated pins and clock, the reference encoder/decoder and the cases: tests/wiegand_mp.py.


def case(name: str, timeout: float = 120, esp32: bool = False, **settings: object) -> dict:
    """wiegand_mp.py's case `name`; esp32: with tests/esp32time_mp.py in front (the board's ticks)."""
    text = script("wiegand_mp.py", {"CASE": name, **settings}, "main()")
    out = mp_json((script("esp32time_mp.py") if esp32 else "") + text, timeout=timeout)
    assert isinstance(out, dict)
    return out


def test_valid_frames_all_lengths_and_formats() -> None:
    out = case("valid")
    assert out["26/123/4567"] == [None, "123:04567", None]
    assert out["26/255/65535"][1] == "255:65535"
    assert out["26/0/1"][1] == "000:00001"
    assert out["34/4660/22136"][1] == "04660:22136"
    assert out["37/65535/524287"][1] == "65535:524287"
    assert out["37/12/345678"][1] == "00012:345678"
    assert out["hex"] == ["123456", "DEADBEEF", "000080002"]
    assert out["dec"] == [str(0x123456), str(0xDEADBEEF), str((1 << 19) | 2)]
    assert out["ok"] == 3 and out["bad"] == 0


def test_malformed_frames_rejected_and_counted() -> None:
    out = case("malformed")
    res, st = out["res"], out["st"]
    assert res[:-1] == [None] * (len(res) - 1)
    assert res[-1] == "010:00020"
    assert st["bad_parity"] == 26
    assert st["bad_length"] == 3
    assert st["overflow"] == 1
    assert st["noise"] == 2
    assert st["frames_bad"] == 32 and st["frames_ok"] == 1


def test_gap_splits_frames_and_unpolled_frame_is_counted_lost() -> None:
    out = case("gap")
    assert out["a"] == "003:00004"
    assert out["b"] is None
    assert out["st"]["lost"] == 1
    assert out["st"]["bad_length"] == 1


def test_tick_wraparound_and_hold() -> None:
    out = case("wrap_and_hold")
    assert out["res"] == ["009:00099", None, "009:00099", "009:00098"]
    assert out["held"] == 1


def test_first_tap_after_a_quiet_spell_is_read_under_esp32_ticks() -> None:
    # ticks_us wraps at 2**30 us on an ESP32: after 9-18 minutes of silence (and the same again each
    # 17.9 minutes) the gap since the last frame reads negative, or within the frame gap near a whole
    # period; a new frame must still begin, not be glued to the last one and never reported
    out = case("long_idle", esp32=True)
    assert out["res"] == ["123:04567"] * 11, out
    assert out["st"]["frames_ok"] == 11 and out["st"]["frames_bad"] == 0 and out["st"]["lost"] == 0


def test_interrupt_handlers_do_not_allocate() -> None:
    out = case("no_alloc")
    assert out["ok"] is True
    assert out["overflow_seen"] != 0  # the last burst did reach the overflow/noise branches


def test_fuzz_bit_streams_against_reference() -> None:
    out = case("fuzz", N=1500, SEED=1)
    assert out["n_mismatch"] == 0, out["mismatch"]
    assert out["ok"] == out["expect_ok"] > 100
    assert out["bad"] > 100


@pytest.mark.soak
def test_fuzz_bit_streams_soak() -> None:
    for seed in range(2, 8):
        out = case("fuzz", timeout=600, N=20000, SEED=seed)
        assert out["n_mismatch"] == 0, out["mismatch"]


def test_driver_never_imports_machine() -> None:
    # The board layer hands the driver its pins. (Read in the source: on the unix port machine is a
    # built-in module, which an import does not put in sys.modules, so a run could not tell.)
    text = (REPO / "lib" / "clockterm" / "drivers" / "wiegand.py").read_text()
    assert "import machine" not in text and "from machine" not in text
