"""The processes a scenario measures or talks to: botpress-py, the bare-aiohttp ceiling, the
Graph emulator and the local Graph API (graph_ok), each started pinned and stopped by its pid."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    ADMIN_TOKEN,
    BENCH_DIR,
    HOST,
    LOAD_CORE,
    SERVER_CORE,
    WEBHOOK_PATH,
    BenchBot,
    write_data_folder,
)
from bench.emulator_service import page_id, page_token
from bench.processes import ManagedProcess, botpress_command, free_port, spawn, wait_until_serving

ANY_BOT_WEBHOOK = WEBHOOK_PATH.format(bot="___")
BENCH_BOT = "bench"
BOTPRESS = "botpress-py, bot answering"
HELD = "botpress-py, bot disabled: ingest path only"
UNKNOWN_PAGE = "999999999999"  # a Page no bench bot serves


@dataclass
class Running:
    name: str
    process: ManagedProcess
    port: int
    data_dir: Path | None = None
    webhook_path: str = ANY_BOT_WEBHOOK

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def _ready_line(process: ManagedProcess, pattern: bytes, what: str, timeout: float = 60.0) -> str:
    """The URL a service prints on its first line (``... ready on http://...``)."""
    assert process.popen.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(process.popen.stdout.readline), timeout)
    except TimeoutError:
        line = b""
    match = re.search(pattern, line)
    if match is None:
        await process.stop()
        raise RuntimeError(f"{what} did not start: {line!r}\n{process.log_tail()}")
    return match.group(1).decode()


async def start_emulator(work: Path, pages: int) -> tuple[ManagedProcess, str]:
    """The channel's GraphEmulator (checks tokens, records arrival times) on the load core."""
    process = spawn("graph-emulator", [sys.executable, "-m", "bench.emulator_service", "--pages", str(pages)],
                    core=LOAD_CORE, log_path=work / "emulator.log", stdout_pipe=True)
    return process, await _ready_line(process, rb"ready on (http://\S+)", "the Graph emulator")


class GraphOk:
    """bench/peers/graph_ok.py on the load core: answers 200 to every send and counts them."""

    def __init__(self, process: ManagedProcess, url: str) -> None:
        self.process = process
        self.url = url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @classmethod
    async def start(cls, work: Path, lifetime: float = 3600.0) -> GraphOk:
        """``lifetime``: seconds after which it exits by itself, should the bench die without stopping it."""
        process = spawn("graph-ok", [sys.executable, str(BENCH_DIR / "peers" / "graph_ok.py"), "--port", "0",
                                     "--page-id", page_id(0), "--lifetime", f"{lifetime:.0f}"],
                        core=LOAD_CORE, log_path=work / "graph-ok.log", stdout_pipe=True)
        return cls(process, await _ready_line(process, rb"ready on (http://\S+)", "the local Graph API"))

    async def counts(self) -> dict[str, int]:
        """sends (replies carrying a message), calls (all Send API calls), recipients, duplicates."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http, \
                http.get(f"{self.url}/_calls") as response:
            return {k: int(v) for k, v in (await response.json()).items() if isinstance(v, int)}

    async def reset(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http, \
                http.post(f"{self.url}/_reset") as response:
            await response.read()

    async def stop(self) -> None:
        await self.process.stop()


async def start_baseline(work: Path, loop: str) -> Running:
    port = free_port()
    process = spawn(f"baseline-{loop}", [sys.executable, "-m", "bench.baseline_server", "--port", str(port),
                                         "--loop", loop], core=SERVER_CORE, log_path=work / f"baseline-{loop}.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # bounded wait for the port
        if "ready" in process.log_tail():
            return Running(f"bare aiohttp ({loop})", process, port)
        if not process.alive():
            break
        await asyncio.sleep(0.05)
    await process.stop()
    raise RuntimeError(f"the baseline did not start:\n{process.log_tail()}")


async def start_botpress(data_dir: Path, log_path: Path, *, uvloop: bool = False, sql_counts: Path | None = None,
                         timeout: float = 180.0, core: int | str = SERVER_CORE, extra_args: tuple[str, ...] = (),
                         env: dict[str, str] | None = None, poll_interval: float = 0.01,
                         ) -> tuple[Running, dict[str, Any], float]:
    """Start the real server; (running, GET /status, seconds from spawn until it served /status)."""
    port = free_port()
    started = time.monotonic()
    argv = botpress_command(data_dir, port, uvloop=uvloop, sql_counts=sql_counts) + list(extra_args)
    process = spawn("botpress-py", argv, core=core, log_path=log_path, env=env)
    name = BOTPRESS + (", on uvloop" if uvloop else "")
    running = Running(name, process, port, data_dir)
    try:
        status = await wait_until_serving(f"{running.url}/status", process, timeout=timeout, interval=poll_interval)
    except BaseException:
        await process.stop()
        raise
    return running, status, time.monotonic() - started


def bench_data(work: Path, name: str, graph_url: str, bots: int = 1, *, with_page_id: bool = True,
               mark_seen: bool = True, graph_batching: bool = True) -> Path:
    """A fresh data folder of ``bots`` messenger-enabled bots (``bench``, or ``bot-0000``...)."""
    data_dir = work / name / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    bot_ids = [BENCH_BOT] if bots == 1 else [f"bot-{i:05d}" if bots > 10_000 else f"bot-{i:04d}"
                                              for i in range(bots)]
    write_data_folder(data_dir, graph_url, [BenchBot(b, page_id(i), page_token(i), with_page_id)
                                            for i, b in enumerate(bot_ids)], mark_seen=mark_seen,
                      graph_batching=graph_batching)
    return data_dir


async def admin(http: aiohttp.ClientSession, running: Running, bot: str, action: str) -> tuple[float, dict[str, Any]]:
    """POST /api/v1/admin/bots/<bot>/<action>; (milliseconds until it answered, its JSON)."""
    started = time.monotonic()
    async with http.post(f"{running.url}/api/v1/admin/bots/{bot}/{action}",
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"admin {action} {bot}: HTTP {response.status} {body[:200]!r}")
    elapsed = (time.monotonic() - started) * 1000
    data = json.loads(body or b"{}")
    return elapsed, data if isinstance(data, dict) else {}
