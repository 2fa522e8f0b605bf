"""Throttled log lines and generated secret files."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from botpress_py.logthrottle import LogThrottle
from botpress_py.secretfiles import load_or_create_secret


def test_repeats_within_the_interval_are_counted_not_written(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    throttle = LogThrottle(10, clock=lambda: now[0])
    logger = logging.getLogger("test.throttle")
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        written = [throttle.log(logger, logging.WARNING, "sig", "bad signature from %s", "x") for _ in range(50)]
        throttle.log(logger, logging.WARNING, "other", "another kind")
        now[0] += 10.5
        throttle.log(logger, logging.WARNING, "sig", "bad signature from %s", "y")
    assert written == [True] + [False] * 49
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad signature from x", "another kind",
                     "bad signature from y (repeated 49 more times in the last 10s)"]


def test_a_disabled_level_costs_nothing_and_is_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(10)
    logger = logging.getLogger("test.throttle.quiet")
    with caplog.at_level(logging.WARNING, logger="test.throttle.quiet"):
        assert throttle.log(logger, logging.DEBUG, "k", "hidden") is False
        assert throttle.log(logger, logging.WARNING, "k", "shown") is True
    assert [r.getMessage() for r in caplog.records] == ["shown"]


def test_secret_is_created_0600_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "web.key"
    first = load_or_create_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["web.key"]  # no temporary left behind


def test_a_loose_secret_file_is_tightened_and_a_broken_one_explained(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("ab" * 32)
    os.chmod(path, 0o644)
    assert load_or_create_secret(path) == bytes.fromhex("ab" * 32)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("not hex")
    with pytest.raises(ValueError, match="delete the file"):
        load_or_create_secret(path)


async def test_server_context_secret_is_per_module_and_survives_restart(data_dir: Path, env: dict) -> None:
    from botpress_py.testing import run_server

    async with run_server(data_dir, env, modules=["echo"]) as server:
        key = server.module_contexts["echo"].secret("visitor-tokens")
    async with run_server(data_dir, env, modules=["echo"]) as server:
        assert server.module_contexts["echo"].secret("visitor-tokens") == key
        with pytest.raises(ValueError):
            server.module_contexts["echo"].secret("../escape")
    assert (data_dir / "secrets" / "echo.visitor-tokens.key").is_file()
