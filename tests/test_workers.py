"""``botpress-py start --workers N``: what it refuses, as a real process, and the workers' arguments.

The workers serving on PostgreSQL (shared port, restart, clean stop with no lost event) are
tested with the Graph emulator in modules/channel-messenger/tests/test_start_workers.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from botpress_py.workers import MAX_WORKERS, worker_argv, workers_refusal

REPO = Path(__file__).resolve().parents[1]


def run_start(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("BP_") and k not in ("DATABASE_URL", "CLUSTER_ENABLED")}
    return subprocess.run([sys.executable, "-m", "botpress_py", "start", "--data", str(data_dir), "--port", "0",
                           "--host", "127.0.0.1", *extra], cwd=REPO, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60, check=False)


def test_workers_on_sqlite_refuse_with_the_reason_and_the_fix(tmp_path: Path) -> None:
    done = run_start(tmp_path / "data", "--workers", "2")
    assert done.returncode == 2
    assert "--workers needs PostgreSQL" in done.stderr
    assert "DATABASE_URL=postgresql://" in done.stderr  # how to fix
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "storage").exists()  # refused before anything was opened


@pytest.mark.parametrize("count", ["0", "-1", str(MAX_WORKERS + 1)])
def test_worker_count_out_of_range_is_refused(tmp_path: Path, count: str) -> None:
    done = run_start(tmp_path / "data", "--workers", count, env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    assert done.returncode == 2
    assert f"--workers must be between 1 and {MAX_WORKERS}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_taken_port_is_refused_once_by_the_parent(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = {k: v for k, v in os.environ.items() if not k.startswith("BP_") and k != "DATABASE_URL"}
        done = subprocess.run([sys.executable, "-m", "botpress_py", "start", "--data", str(tmp_path / "data"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "2"], cwd=REPO,
                              env={**base, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"},
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "already in use" in done.stderr and "Traceback" not in done.stderr
    assert "worker" not in done.stderr  # no worker was started


def test_workers_get_the_parents_arguments_and_the_real_port() -> None:
    argv = ["start", "--data", "d", "--workers", "2", "--port", "0", "--log-level=warning", "--workers=3",
            "--port=1", "--chat"]
    assert worker_argv(argv, 4321) == ["start", "--data", "d", "--log-level=warning", "--chat", "--port", "4321"]


def test_refusal_reasons() -> None:
    assert workers_refusal(2, {"DATABASE_URL": "postgresql://x@h/db"}) is None
    assert workers_refusal(1, {"DATABASE_URL": "postgresql://x@h/db"}) is None
    assert "needs PostgreSQL" in (workers_refusal(2, {"DATABASE_URL": "  "}) or "")
