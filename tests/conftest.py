"""Shared pytest fixtures: the compiled bundle, the reference central API."""

from __future__ import annotations

import os
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


# The deployed layout: `make frozen-test` runs this suite with CLOCKTERM_FROZEN=1 on the unix port built
# with lib/ frozen in (firmware/unix/build.sh). Tests of the ROMFS and /lib deploys (marked romfs_layout)
# have no board to run on there; tests marked frozen need that interpreter, and fail without it.
FROZEN = bool(os.environ.get("CLOCKTERM_FROZEN"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not FROZEN:
        return
    skip = pytest.mark.skip(reason="a ROMFS or /lib deploy: the frozen image refuses it (test_frozen_image.py)")
    for item in items:
        if "romfs_layout" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    """Under CLOCKTERM_FROZEN, the interpreter must carry lib/ as it is now (clockterm.code_id.ID): passes of an
    older build would be about other code. Checked once, before any test (in the controlling process
    only: pytest-xdist's workers would lose the message)."""
    if not FROZEN or hasattr(config, "workerinput"):
        return
    from clockterm_host import bundle

    built = bundle.built_from(bundle.tool("micropython"))
    if built != bundle.code_id():
        raise pytest.UsageError(f"{bundle.tool('micropython')} carries code {built!r}, lib/ is {bundle.code_id()}: "
                                "build it again (firmware/unix/build.sh)")
