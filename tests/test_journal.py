"""Journal behaviour on both backends: records, full policies, warnings, corrections, corruption."""

from __future__ import annotations

import mp
import pytest

BACKENDS = ["raw", "littlefs"]


def run(backend: str, case: str) -> object:
    """tests/journal_cases_mp.py's `case` on `backend` under micropython: the JSON it prints."""
    return mp.mp_json(mp.script("journal_cases_mp.py", {"BACKEND": backend, "CASE": case}, "main()"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_append_read_ack_reopen(backend: str) -> None:
    out = run(backend, "append_read_ack")
    assert out["jid0"] == out["jid"] and len(out["jid"]) == 8
    assert out["last"] == 50 and out["acked"] == 20
    assert out["pending"] == [21, 22, 23] and out["n"] == 50 and out["limit"] == [21, 22, 23, 24, 25]
    assert out["ok"]
    st = out["st"]
    assert st["backend"] == backend and st["pending"] == 30 and st["used"] == 50 and st["oldest_seq"] == 1
    assert st["oldest_ms"] == 1764000000000 and st["corrupt_skipped"] == 0 and st["full_policy"] == "refuse"
    assert st["capacity"] > 100
    assert out["d"] == {"seq": 1, "journal_id": out["jid"], "utc_ms": 1764000000000, "quality": 1, "uncertainty_ms": 4,
                        "badge": "04A1B200", "kind": "in", "employee": "E0", "utc_offset_min": 60}


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_refuse_warnings_then_ack_frees(backend: str) -> None:
    out = run(backend, "full_refuse")
    n = out["n"]
    assert out["err"] == "memory full" and out["again"] == "memory full"
    assert "memory 80%" in out["warn"] and "memory 90%" in out["warn"]
    assert out["warn"]["memory 80%"] < out["warn"]["memory 90%"] < n
    assert out["st"]["warnings"] == ["memory full"] and out["st"]["pending"] == n
    assert out["s"] == n + 1
    # Nothing unacknowledged was dropped to make room.
    assert out["first"] <= n // 2 + 1 and out["count"] >= n + 1 - n // 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_overwrite_policy_drops_oldest_with_counter(backend: str) -> None:
    out = run(backend, "overwrite")
    st = out["st"]
    assert out["last"] == 600 and out["contig"]
    assert st["dropped"] == out["first"] - 1 > 0
    assert st["oldest_seq"] == out["first"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_correction_applies_and_survives_restart(backend: str) -> None:
    out = run(backend, "correction")
    res = {s: (d, q) for s, d, q in out["res"]}
    assert all(res[s] == (1500, 3) for s in range(3, 7))
    assert all(res[s] == (0, 0) for s in (1, 2, 7, 8, 9, 10)) and res[11] == (0, 1)
    assert out["bad"] == "bad correction range"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_corrected_punch_has_the_offset_of_its_corrected_time(backend: str) -> None:
    out = run(backend, "correction_offset")
    assert out["got"] == out["again"] == [[1, 120, 3], [2, 60, 0]]  # seq 2 not corrected: as stamped
    assert out["plain"] == [[1, 60, 3], [2, 60, 0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrections_of_punches_to_send_are_kept_over_many_boots(backend: str) -> None:
    # 20 boots offline, each with a punch before its first sync: the 12 not yet sent keep theirs
    out = run(backend, "many_corrections")
    want = [[s, 1000 * s, 3] for s in range(9, 21)]
    assert out["got"] == want and out["again"] == want


def test_a_correction_in_many_headers_is_kept_once() -> None:
    # Every new segment header carries the latest correction, so recovery meets one correction in
    # several headers (and its record): each must count once among the _MAX_CORR (16) kept, or the
    # older corrections fall out and their punches come back uncorrected.
    out = run("raw", "correction_headers")
    assert out["head"] == 23  # the ring's last segment: 20 headers carry the latest correction
    assert out["got"] == [[s, 1000, 3] for s in range(1, 6)] + [[6, 0, 0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reformat_new_id_seq_continues(backend: str) -> None:
    out = run(backend, "reformat")
    assert out["jid_changed"] and out["s"] == 41 and out["n"] == 1
    if backend == "raw":
        assert out["floor"] == 42


def test_raw_bit_flips_skipped_and_counted() -> None:
    out = run("raw", "bit_flips")
    got = out["got"]
    assert len(got) == 58 and 5 not in got and out["bad"] == 2 == out["bad2"]
    missing = set(range(1, 61)) - set(got)
    assert got == sorted(got) and len(missing) == 2 and 5 in missing
    assert out["last"] == 61


def test_raw_corrupt_length_byte_resyncs() -> None:
    out = run("raw", "length_byte")
    assert out["got"] == list(range(2, 31)) and out["bad"] == 1


def test_littlefs_truncated_segment() -> None:
    out = run("littlefs", "truncated")
    got = out["got"]
    assert len(got) == 39 and out["bad"] == 1 and out["s"] == 41
    missing = sorted(set(range(1, 41)) - set(got))
    assert len(missing) == 1 and got == sorted(got)


def test_littlefs_filesystem_full_is_a_clear_error() -> None:
    out = run("littlefs", "fs_full")
    assert out["errs"] == ["memory full: no space left on the filesystem"]
    n = out["n"]
    assert out["got"] == list(range(1, n + 1))
    assert out["s"] == n + 1 and out["after"] == list(range(1, n + 2))


def test_bad_punch_is_rejected_cleanly() -> None:
    out = run("raw", "bad_punch")
    assert out == ["bad punch"] * 3 + [1]
