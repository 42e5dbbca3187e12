"""Power cut at every flash operation of a wrapping workload, for both journal backends.

One micropython run per case sweeps all cut points in-process (tests/journal_mp.py); after each cut
the journal is recovered from the image and checked against what the caller was told: every punch
whose append returned is there, bit-exact and in order, no seq is reused, the acked point neither
goes back behind a returned ack nor past the highest one asked for, and the journal keeps working.
"""

from __future__ import annotations

import json

import mp
import pytest


def sweep(backend: str, np_: int, torn: bool, sample: int, recut: int, policy: str = "refuse") -> dict:
    settings = {"BACKEND": backend, "POLICY": policy}
    r = mp.run_mp(mp.script("journal_mp.py", settings, f"main({np_}, {torn}, {sample}, {recut})"), timeout=900)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"{backend} torn={torn}: {res['cuts']} cut points tried ({res['recuts']} cut again after "
          f"recovery) over {res['ops']} flash operations, {res['wraps']:.1f} ring wraps")
    return res


def check(res: dict, np_: int, sample: int) -> None:
    assert res["last_seq"] == np_
    assert res["wraps"] >= 3, res
    assert res["cuts"] >= res["ops"] // sample - 1, res
    assert res["recuts"] > 0


@pytest.mark.parametrize("torn", [True, False], ids=["torn", "clean"])
def test_raw_every_cut_point(torn: bool) -> None:
    res = sweep("raw", 300, torn, 1, 5)
    check(res, 300, 1)


@pytest.mark.parametrize("torn", [True, False], ids=["torn", "clean"])
def test_littlefs_cut_points_sample(torn: bool) -> None:
    res = sweep("littlefs", 460, torn, 11, 3)
    check(res, 460, 11)


@pytest.mark.soak
@pytest.mark.parametrize("torn", [True, False], ids=["torn", "clean"])
@pytest.mark.parametrize("backend", ["raw", "littlefs"])
def test_every_cut_point_soak(backend: str, torn: bool) -> None:
    np_ = 1000 if backend == "raw" else 600
    res = sweep(backend, np_, torn, 1, 4)
    check(res, np_, 1)
