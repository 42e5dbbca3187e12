"""SSD1306 driver and screen layout on the unix port, against a fake I2C emulating the controller's RAM."""

from __future__ import annotations

from mp import mp_json, script

# The fake controller, the helpers that read its RAM and the cases: tests/ssd1306_mp.py.


def case(name: str) -> dict:
    out = mp_json(script("ssd1306_mp.py", {"CASE": name}, "main()"))
    assert isinstance(out, dict)
    return out


def test_init_and_frame_transfer() -> None:
    out = case("init")
    assert out["on"] and out["pump"] and out["mux"] == 63 and out["mode"] == 0 and out["remap"]
    assert out["same"] is True
    assert out["corners"] == [1, 1, 0]
    assert out["second"] == [1, 1]
    assert out["flip_remap"] is False


def test_screen_layout_renders_time_sync_result_backlog() -> None:
    out = case("screen")
    assert out["time"] and out["sync"] and out["result1"] and out["queue"]
    assert out["below_result"] == 0
    assert out["rule"] == 128
    assert out["big_lit"] > 40 and out["big_small_text_absent"] is False
    assert out["no_queue"] == 0
    assert out["nosync"] is True
    for x, _y, text, scale in out["layout_long"]:
        assert x + len(text) * 8 * scale <= 128  # nothing runs off the panel
    texts = [i[2] for i in out["layout_long"]]
    assert texts[2:] == ["UNKNOWN BADGE", "0123456789ABCDEF", "QUEUE 100000"]


def test_i2c_errors_are_counted_and_recovered() -> None:
    out = case("i2c_errors")
    assert out["a"] is False and out["b"] is False and out["c"] is True
    assert out["errors"] >= 3 and out["on"] is True
    assert out["wrong_ok"] is False


def test_classic_signature_draws_through_the_same_buffer() -> None:
    out = case("classic")
    assert out == {"hello": True, "lit": True}
