"""The read before bot logic: conversation, user and contact of an incoming event, in one round trip."""

from __future__ import annotations

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
