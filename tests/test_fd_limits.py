"""The file descriptor limit, on a real server process: raised to the hard limit at start, and a
connection flood at a low limit keeps the log small and the watcher from seeing changes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from botpress_py.testing import make_bot, wait_for, write_json

REPO = Path(__file__).resolve().parent.parent


def with_fd_limit(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child, before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


@contextlib.asynccontextmanager
async def server_process(data: Path, log_file: Path, fd_limit: tuple[int, int],
                         log_level: str = "info") -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_") and k != "DATABASE_URL"}
    with log_file.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "botpress_py", "start", "--data", str(data), "--port", "0",
            "--host", "127.0.0.1", "--log-level", log_level, cwd=REPO, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=log, preexec_fn=with_fd_limit(*fd_limit))
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        match = re.search(rb"ready on (http://\S+)", line)
        assert match, line + log_file.read_bytes()[-2000:]
        yield proc, match.group(1).decode()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def fd_limits_of(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


async def test_start_raises_the_soft_fd_limit_to_the_hard_limit(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = 256 if hard == resource.RLIM_INFINITY or hard > 256 else hard // 2
    data, log_file = tmp_path / "data", tmp_path / "server.log"
    async with server_process(data, log_file, (low, hard), log_level="debug") as (proc, _url):
        soft_now, hard_now = fd_limits_of(proc.pid)
        assert soft_now > low and hard_now == (hard if hard != resource.RLIM_INFINITY else hard_now)
        if hard != resource.RLIM_INFINITY:
            assert soft_now == hard
    assert f"file descriptor limit raised from {low} to {soft_now}" in log_file.read_text()


async def _hold_connections(url: str, count: int) -> list[asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")

    async def one() -> asyncio.StreamWriter | None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
            return writer
        except (OSError, TimeoutError):
            return None  # the listen backlog is full: the kernel drops the connection attempt

    return [w for w in await asyncio.gather(*(one() for _ in range(count))) if w is not None]


async def _status(url: str) -> Any:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/status", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return await r.json() if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_a_connection_flood_at_the_fd_limit_logs_once_and_changes_nothing(tmp_path: Path) -> None:
    data, log_file = tmp_path / "data", tmp_path / "server.log"
    make_bot(data, "alpha")
    # A cap above what the limit allows, so that the process really runs out of descriptors.
    write_json(data / "global" / "botpress.config.json", {
        "modules": [], "httpServer": {"maxConnections": 1000},
        # Polling: inotify would open nothing while nothing changes, and this test wants the watcher to meet EMFILE.
        "watch": {"enabled": True, "interval": "100ms", "inotify": False}})
    async with server_process(data, log_file, (64, 64)) as (_proc, url):
        held = await _hold_connections(url, 250)
        try:
            await wait_for(lambda: "Too many open files" in log_file.read_text(), timeout=15)
            # The watcher lists every folder on a full scan (every 20 scans): it meets EMFILE too.
            await wait_for(lambda: "cannot read" in log_file.read_text(), timeout=15)
            await asyncio.sleep(3)  # the flood lasts: asyncio retries accepting every second meanwhile
        finally:
            for writer in held:
                writer.close()
        status = await wait_for(lambda: _status(url), timeout=20)  # it serves again once they are gone
        assert status["bots"]["alpha"]["state"] == "mounted" and "error" not in status["bots"]["alpha"]
    log = log_file.read_text()
    assert len(log) < 20_000, f"{len(log)} bytes of log:\n{log[-3000:]}"
    assert log.count("cannot accept new connections") == 1, log[-3000:]
    assert "Traceback" not in log and "remounting" not in log, log[-3000:]
