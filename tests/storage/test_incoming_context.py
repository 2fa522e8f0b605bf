"""The read before bot logic: conversation, user and contact of an incoming event, in one round trip."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from botpress_py.events import IOEvent
from botpress_py.storage import PostgresStorage, SQLiteStorage, Storage

from .conftest import Backend


class _CountingPool:
    """The real pool, counting the statements sent to the database (each is one round trip)."""

    def __init__(self, pool: Any, counter: list[str]) -> None:
        self._pool = pool
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._pool, name)
        if name in ("fetch", "fetchrow", "fetchval", "execute", "executemany", "acquire"):
            self._counter.append(name)
        return found


class CountingPostgres(PostgresStorage):
    statements: list[str] | None = None  # counting once set (not while it opens)

    def _get_pool(self) -> Any:
        pool = super()._get_pool()
        return pool if self.statements is None else _CountingPool(pool, self.statements)


class CountingSQLite(SQLiteStorage):
    statements: list[str] | None = None

    async def _read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.statements is not None:
            self.statements.append("read")  # one hand-off to the reader, whatever it runs
        return await super()._read(fn, *args, **kwargs)


async def seeded(backend: Backend) -> Storage:
    storage = await backend.open()
    event = IOEvent(type="text", channel="messenger", direction="incoming", botId="bot-a", target="u1",
                    threadId="page-1", payload={"type": "text", "text": "hi"}, createdOn=5_000)
    await storage.message_record(event)
    await storage.user_upsert("bot-a", "messenger", "u1", {"first_name": "Ada"})
    await storage.contact_link([("bot-c", "messenger", "u7"), ("bot-a", "messenger", "u1")])
    await storage.contact_link([("bot-a", "messenger", "u1"), ("bot-b", "web", "v3")])
    return storage


async def test_incoming_context_is_one_round_trip_and_agrees_with_the_separate_reads(backend: Backend) -> None:
    storage = await seeded(backend)
    expected = (await storage.conversation_last_event("bot-a", "messenger", "page-1", "u1"),
                await storage.user_get("bot-a", "messenger", "u1"),
                await storage.contact_of("bot-a", "messenger", "u1"))
    counting = await backend.open(CountingPostgres if backend.name == "postgres" else CountingSQLite)
    counting.statements = []  # type: ignore[attr-defined]
    found = await counting.incoming_context("bot-a", "messenger", "page-1", "u1")
    assert (found.last_event_at, found.user, found.contact) == expected
    assert found.last_event_at == 5_000 and len(found.contact[1]) == 3
    assert len(counting.statements) == 1, counting.statements  # type: ignore[attr-defined]


async def test_incoming_context_of_a_stranger_is_empty(storage: Storage) -> None:
    found = await storage.incoming_context("bot-a", "messenger", None, "nobody")
    assert (found.last_event_at, found.user, found.contact) == (None, None, (None, []))


async def test_concurrent_incoming_contexts_share_one_round_trip_and_each_gets_its_own(backend: Backend) -> None:
    """The conversations one inbox commit starts ask together: one reader hand-off (SQLite) or one
    query (PostgreSQL) for all of them, and every caller gets the answer for its own user."""
    seeded_storage = await seeded(backend)
    await seeded_storage.user_upsert("bot-a", "messenger", "u2", {"first_name": "Bea"})
    counting = await backend.open(CountingPostgres if backend.name == "postgres" else CountingSQLite)
    counting.statements = []  # type: ignore[attr-defined]
    users = ["u1", "u2", *(f"new-{i}" for i in range(30))]
    found = await asyncio.gather(*(counting.incoming_context("bot-a", "messenger", "page-1", u) for u in users))
    assert len(counting.statements) == 1, counting.statements  # type: ignore[attr-defined]
    assert found[0].last_event_at == 5_000 and found[0].user is not None
    assert found[0].user["profile"] == {"first_name": "Ada"} and len(found[0].contact[1]) == 3
    assert found[1].last_event_at is None and found[1].user is not None
    assert found[1].user["profile"] == {"first_name": "Bea"} and found[1].contact == (None, [])
    assert all((f.last_event_at, f.user, f.contact) == (None, None, (None, [])) for f in found[2:])


class OneBadReadSQLite(SQLiteStorage):
    """A read that fails for one user only, as a corrupt row would: whatever batch it is in."""

    async def _read_contexts(self, keys: list[tuple[str, str, str, str]]) -> list[Any]:
        if any(key[2] == "poison" for key in keys):
            raise ValueError("unreadable row of user poison")
        return await super()._read_contexts(keys)


async def test_a_read_that_fails_in_a_batch_fails_only_its_own_event(tmp_path: Path) -> None:
    storage = OneBadReadSQLite(tmp_path / "core.sqlite")
    await storage.open()
    try:
        await storage.user_upsert("bot-a", "messenger", "u3", {"first_name": "Cy"})
        users = [f"u{i}" for i in range(8)]
        users.insert(4, "poison")
        results = await asyncio.gather(*(storage.incoming_context("bot-a", "messenger", None, u) for u in users),
                                       return_exceptions=True)
        failed = [u for u, r in zip(users, results, strict=True) if isinstance(r, BaseException)]
        assert failed == ["poison"]
        by_user = dict(zip(users, results, strict=True))
        assert by_user["u3"].user["profile"] == {"first_name": "Cy"}  # type: ignore[union-attr]
        assert by_user["u1"].user is None  # type: ignore[union-attr]
    finally:
        await storage.close()
