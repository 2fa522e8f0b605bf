"""``botpress-py start --workers 2`` on PostgreSQL: two real processes on one port, supervised.

Both workers answer on the one port (their pids in /status over many new connections); a
worker killed with SIGKILL is started again by the parent; SIGTERM to the parent stops both
cleanly, and every acknowledged webhook is answered exactly once, before the stop or by the
next start. The refusal on SQLite is tested in tests/test_workers.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator

from botpress_py.testing import free_port, make_bot, postgres_schema, wait_for, write_json

REPO = Path(__file__).resolve().parents[3]
PAGE, TOKEN, SECRET = "5006", "EAA-workers-token", "workers-app-secret-123456"
N_EVENTS = 80


@pytest.fixture
async def postgres_env() -> AsyncIterator[dict[str, str]]:
    async with postgres_schema("bp_workers", "DATABASE_URL not set: start --workers needs PostgreSQL; "
                                             ".ci/run sets it") as schema:
        yield schema.env


def server_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BP_") and k not in ("DATABASE_URL", "CLUSTER_ENABLED")}
    return {**env, **extra}


async def start(data: Path, port: int, env: dict[str, str], *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "botpress_py", "start", "--data", str(data), "--port", str(port),
        "--host", "127.0.0.1", *extra, cwd=REPO, env=server_env(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


class Output:
    """Everything a process writes to one stream, read as it comes (a full pipe would block its writers)."""

    def __init__(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        self.text = b""
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            async with self._changed:
                self.text += line
                self._changed.notify_all()

    async def wait_for(self, needle: bytes, timeout: float = 60) -> bytes:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: needle in self.text or self._task.done())
        assert needle in self.text, f"output ended before {needle!r}: {self.text[-3000:]!r}"
        return self.text

    async def close(self) -> bytes:
        await self._task
        return self.text


async def node_pid(base: str) -> int:
    """The pid of whichever process answers /status on a brand-new connection."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
            http.get(f"{base}/status") as response:
        assert response.status == 200
        return int((await response.json())["node"]["pid"])


async def pids_seen(base: str, want: int, tries: int = 400) -> set[int]:
    """Distinct pids over up to ``tries`` new connections, stopping once ``want`` were seen."""
    seen: set[int] = set()
    for _ in range(tries):
        seen.add(await node_pid(base))
        if len(seen) >= want:
            break
    return seen


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def write_data(data: Path, graph_url: str) -> None:
    write_json(data / "global" / "botpress.config.json",
               {"modules": [{"location": "MODULES_ROOT/channel-messenger"}, {"location": "MODULES_ROOT/qna"}]})
    write_json(data / "global" / "config" / "channel-messenger.json",
               {"appSecret": SECRET, "verifyToken": "v", "graphApiUrl": graph_url})
    make_bot(data, "workerbot", module_configs={"channel-messenger": {
        "enabled": True, "accessToken": TOKEN, "pageId": PAGE, "typingIndicators": False}},
        qna={"entries": [], "fallback": [{"type": "text", "text": "noted"}]})


async def deliver(webhook: str, i: int) -> int:
    """One signed delivery on its own connection (so the kernel spreads them over the workers)."""
    body = GraphEmulator.webhook_body(PAGE, [GraphEmulator.user_message(
        PAGE, f"user-{i}", f"message {i}", mid=f"mid.workers.{i}")])
    raw, headers = GraphEmulator.signed(body, SECRET)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
            http.post(webhook, data=raw, headers=headers) as response:
        return response.status


async def test_two_workers_share_a_port_restart_and_stop_without_losing_events(
        tmp_path: Path, postgres_env: dict[str, str]) -> None:
    data = tmp_path / "data"
    async with GraphEmulator() as graph:
        graph.add_page(PAGE, TOKEN, name="Workers Page")
        write_data(data, graph.url)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        webhook = f"{base}/api/v1/bots/___/mod/channel-messenger/webhook"

        parent = await start(data, port, postgres_env, "--workers", "2")
        out, err = Output(parent.stdout), Output(parent.stderr)
        try:
            await out.wait_for(b"2 workers serving")
            first = await pids_seen(base, 2)
            assert len(first) == 2, f"only {first} answered over many new connections"
            assert all(parent_of(pid) == parent.pid for pid in first)

            # A worker that dies unasked is logged and started again; the port keeps serving.
            killed = min(first)
            os.kill(killed, signal.SIGKILL)
            log = await err.wait_for(b"serving again")
            assert b"exited unexpectedly (killed by SIGKILL)" in log
            second = await pids_seen(base, 2)
            assert len(second) == 2 and killed not in second

            statuses = await asyncio.gather(*(deliver(webhook, i) for i in range(N_EVENTS)))
            assert statuses == [200] * N_EVENTS
        finally:
            # Right after the acks, with events still being answered: each worker drains.
            parent.send_signal(signal.SIGTERM)
            async with asyncio.timeout(90):
                await parent.wait()
                await out.close()
                log = await err.close()
        assert parent.returncode == 0, log.decode(errors="replace")[-3000:]
        assert b"all 2 workers stopped cleanly" in log
        assert not any(alive(pid) for pid in second)
        answered_before_stop = len(graph.sent_messages)

        # Whatever the stop left stored is answered by the next start, and nothing twice.
        single = await start(data, port, postgres_env)
        single_out, single_err = Output(single.stdout), Output(single.stderr)
        try:
            await single_out.wait_for(b"ready on")
            await graph.wait_for(lambda g: len({m["recipient"]["id"] for m in g.sent_messages}) == N_EVENTS,
                                 timeout=60)

            async def drained() -> bool:
                return await metric(base, "bp_incoming_queued") == 0 and await metric(base, "bp_outgoing_queued") == 0

            await wait_for(drained, 30)
        finally:
            single.send_signal(signal.SIGTERM)
            await single.wait()
            await single_out.close()
            await single_err.close()
        replies = Counter(m["recipient"]["id"] for m in graph.sent_messages)
        assert replies == Counter({f"user-{i}": 1 for i in range(N_EVENTS)}), (
            f"{answered_before_stop} answered before the stop")


async def metric(base: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0

