"""Shared pytest fixtures: the compiled bundle, micropython runner."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import mp  # noqa: E402


@pytest.fixture(scope="session")
def sim_bundle() -> Path:
    return mp.device_dir("sim")
