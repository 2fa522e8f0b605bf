"""A storage stall never stalls the server: /status keeps answering, webhooks get 503 after a bounded wait,
and once storage is back every event is processed exactly once (nothing acknowledged is lost).

Three ways storage stalls, through a real server with the Messenger channel and the Graph emulator:
another OS process holding the SQLite file's write lock (an operator's sqlite3 shell left in a
transaction), the SQLite writer thread stuck inside a write (what a frozen or dying disk does), and a
PostgreSQL table locked by another session.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator

from botpress_py.testing import StuckSQLiteWriter, make_bot, postgres_schema, run_server, wait_for, write_json

PAGE, TOKEN, SECRET, VERIFY = "6006", "EAA-stall-token", "stall-app-secret-123456", "stall-verify"
ACK_TIMEOUT = "1s"

# Run as another OS process: takes the write lock of the SQLite file and holds it until told on stdin.
LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
print("released", flush=True)
"""


class Stall:
    """Storage stalled one way, until ``release()``; ``active`` says whether it still is."""

    active = False

    async def start(self, srv: Any) -> None: ...

    async def release(self) -> None: ...


class OtherProcessHoldsTheLock(Stall):
    proc: asyncio.subprocess.Process

    async def start(self, srv: Any) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCK_HOLDER, str(srv.storage.path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        assert await asyncio.wait_for(self.proc.stdout.readline(), 30) == b"locked\n"
        self.active = True

    async def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        assert self.proc.returncode is None, "the lock holder ended before it was told to"
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()
        assert await asyncio.wait_for(self.proc.stdout.readline(), 30) == b"released\n"
        self.active = False
        await self.proc.wait()


class WriterThreadStuck(StuckSQLiteWriter, Stall):
    """The writer thread blocked inside a transaction, as in a write() to a frozen disk."""


class PostgresTableLocked(Stall):
    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema

    async def start(self, srv: Any) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.url, server_settings={"search_path": f'"{self.schema}"'})
        self.tx = self.conn.transaction()
        await self.tx.start()
        await self.conn.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        self.active = True

    async def release(self) -> None:
        await self.tx.commit()
        self.active = False
        await self.conn.close()


@pytest.fixture(params=["sqlite: another process holds the lock", "sqlite: the writer thread is stuck",
                        "postgres: a table is locked"])
async def stall(request: Any) -> AsyncIterator[tuple[Stall, dict[str, str]]]:
    if request.param.startswith("sqlite: another"):
        yield OtherProcessHoldsTheLock(), {}
        return
    if request.param.startswith("sqlite: the writer"):
        yield WriterThreadStuck(), {}
        return
    async with postgres_schema("bp_stall") as schema:
        yield PostgresTableLocked(schema.url, schema.name), schema.env


def setup_bot(data_dir: Path, graph: GraphEmulator) -> None:
    graph.add_page(PAGE, TOKEN, name="Stall Page")
    write_json(data_dir / "global" / "config" / "channel-messenger.json",
               {"appSecret": SECRET, "verifyToken": VERIFY, "graphApiUrl": graph.url})
    make_bot(data_dir, "stallbot", module_configs={"channel-messenger": {
        "enabled": True, "accessToken": TOKEN, "pageId": PAGE, "typingIndicators": False}},
        qna={"entries": [], "fallback": [{"type": "text", "text": "noted"}]})


async def post_message(http: aiohttp.ClientSession, srv: Any, user: str, mid: str) -> tuple[int, str]:
    body = GraphEmulator.webhook_body(PAGE, [GraphEmulator.user_message(PAGE, user, f"hello from {user}", mid=mid)])
    raw, headers = GraphEmulator.signed(body, SECRET)
    async with http.post(f"{srv.url}/api/v1/bots/___/mod/channel-messenger/webhook", data=raw, headers=headers,
                         timeout=aiohttp.ClientTimeout(total=15)) as response:  # Meta gives up after ~20 s
        return response.status, await response.text()


def replies_to(graph: GraphEmulator, user: str) -> list[dict[str, Any]]:
    return [m for m in graph.sent_messages if m["recipient"]["id"] == user]


class Watcher:
    """Polls what must keep answering during a stall: /status, /metrics, and a storage-free route."""

    def __init__(self, http: aiohttp.ClientSession, srv: Any, stall: Stall) -> None:
        self.http, self.srv, self.stall = http, srv, stall
        self.answered_during_stall = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        verify = (f"{self.srv.url}/api/v1/bots/___/mod/channel-messenger/webhook?hub.mode=subscribe"
                  f"&hub.verify_token={VERIFY}&hub.challenge=4242")
        limit = aiohttp.ClientTimeout(total=3)  # a stalled loop would leave these unanswered
        while not self._stop.is_set():
            for url in (f"{self.srv.url}/status", f"{self.srv.url}/metrics", verify):
                try:
                    async with self.http.get(url, timeout=limit) as response:
                        await response.read()
                        outcome = str(response.status)
                except (TimeoutError, aiohttp.ClientError) as exc:
                    outcome = type(exc).__name__
                if outcome != "200":
                    self.failures.append(f"{url}: {outcome}")
                elif self.stall.active:
                    self.answered_during_stall += 1
            await asyncio.sleep(0.05)  # the polling period

    def stop(self) -> None:
        self._stop.set()


async def test_a_storage_stall_leaves_status_answering_and_bounds_the_webhook_wait(
        tmp_path: Path, stall: tuple[Stall, dict[str, str]], caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "data"
    stalled, extra_env = stall
    caplog.set_level(logging.WARNING, logger="botpress_py")
    async with GraphEmulator() as graph:
        setup_bot(data_dir, graph)
        async with run_server(data_dir, extra_env, modules=["channel-messenger", "qna"],
                              storage={"ackTimeout": ACK_TIMEOUT}) as srv, aiohttp.ClientSession() as http:
            assert await post_message(http, srv, "before", "mid.before") == (200, "EVENT_RECEIVED")
            await graph.wait_for(lambda g: replies_to(g, "before"), 10)

            await stalled.start(srv)
            watcher = Watcher(http, srv, stalled)
            polling = asyncio.create_task(watcher.run())
            try:
                status, text = await post_message(http, srv, "during", "mid.during")
                # Answered while storage was still stalled: the wait was bounded by ackTimeout, not the stall.
                assert stalled.active
                assert status == 503, text
                # One line naming the cause, not a traceback per delivery.
                [line] = [r for r in caplog.records if "not stored yet, answered 503" in r.getMessage()]
                assert line.exc_info is None and "storage" in line.getMessage().lower()
                await wait_for(lambda: watcher.answered_during_stall >= 6, 10)
                assert stalled.active
            finally:
                await stalled.release()
                watcher.stop()
                await polling
            assert watcher.failures == []

            # The commit the webhook gave up on lands now: the event is processed without a redelivery ...
            await graph.wait_for(lambda g: replies_to(g, "during"), 30)
            # ... and Meta's redelivery is acknowledged as a duplicate, not answered twice.
            assert await post_message(http, srv, "during", "mid.during") == (200, "EVENT_RECEIVED")
            assert srv.metrics.counters["bp_events_duplicate_total"] == 1
            assert await post_message(http, srv, "after", "mid.after") == (200, "EVENT_RECEIVED")
            await graph.wait_for(lambda g: replies_to(g, "after"), 10)
            assert [len(replies_to(graph, u)) for u in ("before", "during", "after")] == [1, 1, 1]
            assert await srv.storage.inbox_pending() == []
