"""MFRC522 driver on the unix port against an SPI peer emulating the chip's register file and cards."""

from __future__ import annotations

import pytest
from mp import mp_json, script

# The emulated chip and cards, and the cases: tests/mfrc522_mp.py.


def case(name: str, timeout: float = 120, **settings: object) -> dict:
    out = mp_json(script("mfrc522_mp.py", {"CASE": name, **settings}, "main()"), timeout=timeout)
    assert isinstance(out, dict)
    return out


def test_init_and_uids_of_all_cascade_levels() -> None:
    out = case("uids")
    assert out["version"] == 0x92 and out["ok"] is True
    assert out["prescaler"] == 0xA9 and out["antenna"] == 3
    assert out["empty"] == []
    assert out["04a1b2c3"] == ["04A1B2C3"]
    assert out["04112233445566"] == ["04112233445566"]
    assert out["0102030405060708090a"] == ["0102030405060708090A"]
    assert out["04a1b2c3/state"] == "halt"  # halted after reading
    assert out["st"]["frames_ok"] == 3 and out["st"]["frames_bad"] == 0


def test_held_card_reported_once_per_presentation() -> None:
    out = case("held")
    assert out["a"] == ["DEADBEEF"]
    assert out["b"] == []
    assert out["c"] == ["DEADBEEF"]
    assert out["seen"] == 35  # really selected on every poll (WUPA wakes the halted card)
    assert out["held"] == 33


def test_garbage_answers_rejected_never_raise() -> None:
    out = case("garbage")
    assert out["got"] == []
    assert out["errs"] == [[], [], []]
    assert out["both"] == []
    assert out["after"] == ["01020304"]
    assert out["st"]["frames_bad"] > 100
    assert out["st"]["collisions"] == 2  # every other poll: WUPA sends the half-selected cards idle
    assert out["st"]["frames_ok"] == 1


def test_hung_chip_is_reinitialised_and_recovers() -> None:
    out = case("hung")
    for key, v in out.items():
        assert v["first"] == ["11223344"]
        assert v["during"] == []
        assert v["after"] == ["11223344"], key
        assert v["st"]["timeouts"] == 1 and v["st"]["reinits"] == 1
    assert out["True"]["resets"] == 2  # the reset line was pulsed at start and at the re-init
    assert out["False"]["resets"] == 0 and out["False"]["soft"] == 2


def test_brownout_and_absent_chip_detected_by_periodic_check() -> None:
    out = case("brownout")
    assert out["a"] == ["AABBCCDD"]
    assert out["b"] == []
    assert out["c"] == ["AABBCCDD"]
    assert out["st1"]["reinits"] == 1
    assert out["d"] == []
    assert out["st2"]["ok"] is False and out["st2"]["init_failures"] >= 2
    assert out["e"] == ["AABBCCDD"]
    assert out["st3"]["ok"] is True


def test_unknown_version_is_not_accepted() -> None:
    out = case("unknown_version")
    assert out == {"ok": False, "poll": None, "fail": 1}


def test_fuzz_cards_and_faults() -> None:
    out = case("fuzz", N=1500, SEED=11)
    assert out["n"] == 0, out["bad"]
    assert out["ok"] > 100
    assert out["st"]["reinits"] > 10


@pytest.mark.soak
def test_fuzz_cards_and_faults_soak() -> None:
    for seed in range(20, 24):
        out = case("fuzz", timeout=600, N=20000, SEED=seed)
        assert out["n"] == 0, out["bad"]
