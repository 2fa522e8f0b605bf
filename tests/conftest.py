"""Shared fixtures: a data folder per test, the fixture modules on BP_MODULES_PATH."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURE_MODULES = Path(__file__).parent / "fixtures" / "modules"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def env() -> dict[str, str]:
    """Environment for a test server: fixture modules first, then the repo's modules."""
    return {"BP_MODULES_PATH": str(FIXTURE_MODULES)}


@pytest.fixture
def echo() -> Iterator[Any]:
    """The echo fixture module's python package, with its recorders emptied."""
    sys.path.insert(0, str(FIXTURE_MODULES / "echo"))
    import echo_module

    for recorder in (echo_module.CALLS, echo_module.SENT, echo_module.FAIL_NEXT_SENDS, echo_module.FAILED_IDS,
                     echo_module.HOLD, echo_module.HOLD_SENDS, echo_module.SOCKETS, echo_module.CLAIM_CORE_PATHS):
        recorder.clear()
    yield echo_module
    for recorder in (echo_module.CALLS, echo_module.SENT, echo_module.FAIL_NEXT_SENDS, echo_module.FAILED_IDS,
                     echo_module.HOLD, echo_module.HOLD_SENDS, echo_module.SOCKETS, echo_module.CLAIM_CORE_PATHS):
        recorder.clear()
