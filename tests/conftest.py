"""Shared pytest fixtures: the compiled bundle, the reference central API."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import mp  # noqa: E402
from clockterm_host.central import Handle, start_background  # noqa: E402


@pytest.fixture(scope="session")
def sim_bundle() -> Path:
    return mp.device_dir("sim")


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Handle]:
    """The reference central API over HTTPS (its own CA), knowing devices term-1 and term-2."""
    h = start_background(tmp_path / "central", devices="term-1:pw1,term-2:pw2")
    try:
        yield h
    finally:
        h.stop()
