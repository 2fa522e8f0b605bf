"""Choosing a backend, contacts and redaction on both, and SQLite's own threads (writer, reader, checkpoints)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from botpress_py.events import IOEvent
from botpress_py.storage import (
    Completion,
    PostgresStorage,
    SentMark,
    SQLiteStorage,
    Storage,
    open_storage,
)
from botpress_py.testing import wait_for

from .backend_kit import Clock, incoming, outgoing

if TYPE_CHECKING:
    from conftest import Backend  # the fixture's type; conftest is not importable at run time


# -- choosing a backend -------------------------------------------------------------------------------


def test_open_storage_defaults_to_sqlite_under_data(tmp_path: Path) -> None:
    for env in ({}, {"DATABASE_URL": ""}, {"DATABASE_URL": "  "}):
        storage = open_storage(tmp_path / "data", env)
        assert isinstance(storage, SQLiteStorage)
        assert storage.path == tmp_path / "data" / "storage" / "core.sqlite"
        assert storage.path.parent.is_dir()


def test_open_storage_picks_postgres_from_database_url(tmp_path: Path) -> None:
    for url in ("postgres://bp:secret@db/bp", "postgresql://bp:secret@db/bp", "PostgreSQL://db/bp"):
        storage = open_storage(tmp_path, {"DATABASE_URL": url})
        assert isinstance(storage, PostgresStorage) and storage.schema is None
        assert "secret" not in repr(storage)
    storage = open_storage(tmp_path, {"DATABASE_URL": "postgresql://db/bp", "BP_DATABASE_SCHEMA": "tenant_1"})
    assert isinstance(storage, PostgresStorage) and storage.schema == "tenant_1"
    assert not (tmp_path / "storage").exists()


@pytest.mark.parametrize(
    "url",
    ["mysql://bp:hunter2@db/bp", "sqlite:///tmp/hunter2.db", "hunter2@db:5432/bp", "postgresql+asyncpg://hunter2@db"],
)
def test_open_storage_refuses_other_urls_without_echoing_them(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="postgresql://") as raised:
        open_storage(tmp_path, {"DATABASE_URL": url})
    assert "hunter2" not in str(raised.value)
    assert "not supported" in str(raised.value)


async def test_contacts_link_merge_lookup_and_erase(backend: Backend) -> None:
    # A hand-moved clock: "older" is by created_at, and two links in the same millisecond tie.
    clock = Clock()
    storage = await backend.open(clock=clock)
    assert await storage.contact_of("bot-a", "messenger", "psid-1") == (None, [])
    first = await storage.contact_link([("bot-a", "messenger", "psid-1"), ("bot-b", "messenger", "psid-9")])
    contact, members = await storage.contact_of("bot-b", "messenger", "psid-9")
    assert contact == first and set(members) == {("bot-a", "messenger", "psid-1"), ("bot-b", "messenger", "psid-9")}
    clock.now += 1
    other = await storage.contact_link([("bot-c", "messenger", "psid-5")])
    assert other != first
    # linking a member of each merges the two contacts into the older one
    merged = await storage.contact_link([("bot-c", "messenger", "psid-5"), ("bot-a", "messenger", "psid-1")])
    assert merged == first
    assert len((await storage.contact_of("bot-c", "messenger", "psid-5"))[1]) == 3
    counts = await storage.erase_user("bot-a", "messenger", "psid-1")
    assert counts["contacts"] == 1
    assert len((await storage.contact_of("bot-b", "messenger", "psid-9"))[1]) == 2
    with pytest.raises(ValueError):
        await storage.contact_link([])


async def test_conversation_last_event_and_redaction(backend: Backend, storage: Storage) -> None:
    event = incoming(dedupe="mid.r", text="my card number is 4111", created=5_000)
    assert await storage.conversation_last_event("bot-a", "messenger", event.threadId, "user-1") is None
    await storage.inbox_add([event])
    await storage.message_record(event)
    assert await storage.conversation_last_event("bot-a", "messenger", event.threadId, "user-1") == 5_000
    masked = IOEvent.from_dict({**event.to_dict(), "payload": {"text": "***"}, "preview": "***"})
    await storage.inbox_complete([Completion(event.id, "done", None, [], redacted=masked)])
    reply = outgoing(text="your card 4111 is noted")
    await storage.outbox_add([reply])
    await storage.outbox_redact(IOEvent.from_dict({**reply.to_dict(), "payload": {"type": "text", "text": "***"},
                                                   "preview": "***"}))
    for table in ("inbox", "outbox"):
        rows = await backend.query(f"SELECT event FROM {table}")
        assert all("4111" not in r[0] for r in rows), table


def test_sqlite_writer_runs_urgent_work_before_queued_work() -> None:
    """Inbox commits (acks) overtake queued processing writes on the SQLite writer thread."""
    import threading

    from botpress_py.storage.sqlite_threads import NORMAL, URGENT, DatabaseThread

    writer = DatabaseThread("test-writer")
    gate = threading.Event()
    order: list[str] = []
    try:
        first = writer.submit(NORMAL, lambda: gate.wait(5))  # occupies the thread
        queued = [writer.submit(NORMAL, lambda i=i: order.append(f"normal {i}")) for i in range(3)]
        urgent = writer.submit(URGENT, lambda: order.append("urgent"))
        gate.set()
        for future in [first, *queued, urgent]:
            future.result(timeout=5)
        assert order == ["urgent", "normal 0", "normal 1", "normal 2"]
        cancelled = writer.submit(NORMAL, lambda: order.append("never"))
        assert cancelled.cancel() or cancelled.done()
    finally:
        writer.shutdown()


async def test_sqlite_thread_call_settles_the_loops_future_and_skips_work_given_up_before_it_started() -> None:
    """The hot path's hand-off (``call``): results and errors reach the awaiting coroutine; a call
    cancelled while it waits in the queue never runs (nothing written), one already running finishes."""
    import threading

    from botpress_py.storage.sqlite_threads import NORMAL, URGENT, DatabaseThread

    thread = DatabaseThread("test-thread")
    gate = threading.Event()
    ran: list[str] = []
    try:
        busy = thread.call(NORMAL, lambda: gate.wait(5))  # occupies the thread
        given_up = thread.call(NORMAL, lambda: ran.append("given up"))
        urgent = thread.call(URGENT, lambda: ran.append("urgent") or 42)
        given_up.cancel()
        gate.set()
        assert await busy is True and await urgent == 42

        def fails() -> None:
            raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await thread.call(NORMAL, fails)
        results = await asyncio.gather(*(thread.call(NORMAL, lambda i=i: i * 2) for i in range(50)))
        assert results == [i * 2 for i in range(50)]
        assert ran == ["urgent"]
    finally:
        await asyncio.get_running_loop().run_in_executor(None, thread.shutdown)


async def test_sqlite_write_never_hands_a_cursor_to_the_event_loop(tmp_path: Path) -> None:
    """A cursor dropped on the loop's thread resets its cached statement while the writer thread may be
    running that same statement: SQLite then fails the write with "bad parameter or other API misuse"
    (seen under load as a failed on_bot_mount). Write bodies that return a cursor get None, closed."""
    storage = SQLiteStorage(tmp_path / "core.sqlite")
    await storage.open()
    try:
        handed = await storage._write(lambda db: db.execute("INSERT INTO kv VALUES ('ns', 'k', '1', 0)"))
        assert handed is None
        # the same cached statement, many times over, with the loop collecting garbage meanwhile
        await asyncio.gather(*(storage.kv_set("ns", f"k{i}", i) for i in range(200)))
        assert [await storage.kv_get("ns", f"k{i}") for i in (0, 199)] == [0, 199]
    finally:
        await storage.close()


async def test_sqlite_never_runs_a_statement_on_the_event_loops_thread(tmp_path: Path) -> None:
    """A stalled disk stalls whichever thread is inside SQLite: never the loop's (the hot path included)."""
    import threading

    storage = SQLiteStorage(tmp_path / "core.sqlite")
    await storage.open()
    threads: set[int] = set()
    try:
        for db in (storage._writer_db, storage._reader_db):
            assert db is not None
            db.set_trace_callback(lambda _sql: threads.add(threading.get_ident()))
        event = incoming(dedupe="m.1")
        await storage.inbox_add([event])
        await storage.incoming_context("bot-a", "messenger", "page-1", "user-1")
        await storage.inbox_complete([Completion(event.id, "done", None, [outgoing()], message=event)])
        [row] = await storage.outbox_pending()
        await storage.outbox_sent_many([SentMark(row.event, 1, "m.2", row.event)])
        await storage.kv_set("ns", "k", {"v": 1})
        assert await storage.kv_get("ns", "k") == {"v": 1}
        await storage.user_upsert("bot-a", "messenger", "user-1", {"first_name": "Ann"})
        await storage.erase_user("bot-a", "messenger", "user-1")
        assert threads, "the trace callbacks saw the statements"
        assert threading.get_ident() not in threads
    finally:
        await storage.close()


async def test_sqlite_write_waits_for_another_process_on_the_writer_thread(tmp_path: Path) -> None:
    """Another process holding the write lock: the write waits on the writer thread, while the event
    loop keeps running, and goes through once the lock is released."""
    import sqlite3

    storage = SQLiteStorage(tmp_path / "core.sqlite")
    await storage.open()
    other = sqlite3.connect(tmp_path / "core.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell in a write transaction
        started = asyncio.get_running_loop().time()
        write = asyncio.create_task(storage.inbox_add([incoming(dedupe="while.locked")]))
        for _ in range(3):
            await asyncio.sleep(0)  # the loop turns: the write did not block it
        assert not write.done()
        assert asyncio.get_running_loop().time() - started < 0.5
        other.execute("COMMIT")
        assert await asyncio.wait_for(write, 10) == [True]
        assert [e.dedupeKey for _, e in await storage.inbox_pending()] == ["while.locked"]
    finally:
        other.close()
        await storage.close()


async def test_sqlite_checkpoints_copy_the_wal_into_the_database_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "core.sqlite"
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        size_before = path.stat().st_size
        for batch in range(20):  # ~2 MB of events, in small transactions
            await storage.inbox_add([incoming(dedupe=f"c.{batch}.{i}", text="x" * 1000) for i in range(90)])
        # automatic checkpoints are off: the data sits in the WAL until the checkpoint thread runs
        await wait_for(lambda: path.stat().st_size > size_before + 1_000_000, 10)
    finally:
        await storage.close()
