"""RDM6300 and line readers on the unix port, fed by a simulated UART byte stream."""

from __future__ import annotations

import pytest
from mp import mp_json, script

# The simulated UART, the reference parsers and the cases: tests/uart_reader_mp.py.


def case(name: str, timeout: float = 120, **settings: object) -> dict:
    out = mp_json(script("uart_reader_mp.py", {"CASE": name, **settings}, "main()"), timeout=timeout)
    assert isinstance(out, dict)
    return out


def test_rdm6300_formats_and_checksum() -> None:
    out = case("rdm6300")
    assert out["hex"] == ["1A0012D687"]
    assert out["dec"] == ["0001234567"]
    assert out["fc"] == ["018:54919"]
    # bad checksum, non-hex inside, missing ETX: rejected; lower-case hex accepted; double STX resyncs
    assert out["mixed"] == ["1A0012D687", "1A0012D687"]
    assert out["st"]["frames_bad"] == 4
    assert out["st"]["frames_ok"] == 2


def test_rdm6300_hold_suppresses_a_held_card() -> None:
    out = case("hold")
    ids = [s[1] for s in out["seen"]]
    assert ids == ["01AABBCCDD", "01AABBCCDD", "0111223344"]
    assert out["held"] == 19 + 2 + 1


def test_uart_errors_are_counted_not_raised() -> None:
    out = case("uart_errors")
    assert out["got"] == ["0200000005"] * 5
    assert out["errors"] > 0


def test_line_reader_modes_and_limits() -> None:
    out = case("lines")
    assert out["hex"] == ["04A1B2C3", "0012345678", "00FF"]
    assert out["hex_bad"] == 4  # inner space, too short, too long, non-hex
    assert out["dec"] == ["0012345678", "99999"]
    assert out["dec_bad"] == 2


def test_fuzz_byte_streams_against_reference() -> None:
    out = case("fuzz", N=600, SEED=7)
    assert out["n"] == 0, out["mism"]
    assert out["total_ok"] > 200


@pytest.mark.soak
def test_fuzz_byte_streams_soak() -> None:
    for seed in range(100, 106):
        out = case("fuzz", timeout=600, N=6000, SEED=seed)
        assert out["n"] == 0, out["mism"]
