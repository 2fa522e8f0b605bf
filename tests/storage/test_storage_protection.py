"""Data protection at the storage level, on SQLite and PostgreSQL alike: masked events encrypted at rest,
a changed key failing clearly, erases leaving nothing behind; and storage that cannot answer saying why."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from botpress_py.events import IOEvent, masked_copy
from botpress_py.storage import (
    Completion,
    EventCipher,
    SQLiteStorage,
    StorageKeyError,
    StorageUnavailable,
    open_storage,
)
from botpress_py.storage.crypto import load_cipher
from botpress_py.testing import wait_for

from .backend_kit import incoming, outgoing

if TYPE_CHECKING:
    from conftest import Backend

CARD = "card 4111-1111 zebra"


def masked(event: IOEvent) -> IOEvent:
    event.flags["mask"] = True
    return event


async def raw_rows(backend: Backend, table: str) -> list[tuple[str, str | None, str]]:
    return [tuple(row) for row in await backend.query(f"SELECT event, error, status FROM {table} ORDER BY seq")]


async def test_masked_events_are_encrypted_in_their_rows_and_read_back_in_clear(backend: Backend) -> None:
    storage = await backend.open()
    secret_in, plain_in = masked(incoming(text=CARD, dedupe="m.1")), incoming("user-2", text="hello", dedupe="m.2")
    assert await storage.inbox_add([secret_in, plain_in]) == [True, True]
    reply = masked(outgoing(text=f"your {CARD} is noted"))
    await storage.outbox_add([reply])

    [(stored_in, _, _), (stored_plain, _, _)] = await raw_rows(backend, "inbox")
    [(stored_out, _, _)] = await raw_rows(backend, "outbox")
    assert stored_in.startswith("enc1:") and stored_out.startswith("enc1:")
    assert "4111" not in stored_in + stored_out and "zebra" not in stored_in + stored_out
    assert "hello" in stored_plain, "events without the mask flag are stored as they are"

    # A restart reads them back as they arrived (same key, a new storage object).
    again = await backend.open(cipher=storage.cipher)
    [(_, back_in), (_, back_plain)] = await again.inbox_pending()
    assert back_in.to_dict() == secret_in.to_dict() and back_plain.payload["text"] == "hello"
    [row] = await again.outbox_pending()
    assert row.event.to_dict() == reply.to_dict()
    assert (await again.outbox_get(reply.id)).event.payload["text"] == f"your {CARD} is noted"  # type: ignore[union-attr]


async def test_a_masked_events_error_text_is_encrypted_too(backend: Backend) -> None:
    storage = await backend.open()
    event = masked(incoming(text=CARD, dedupe="m.1"))
    await storage.inbox_add([event])
    reply = masked(outgoing(text=CARD))
    await storage.outbox_add([reply])
    quoting = f"ValueError: cannot parse {CARD!r}"
    await storage.inbox_complete([Completion(event.id, "error", quoting, [], redacted=masked_copy(event),
                                             message=masked_copy(event))])
    await storage.outbox_update(reply.id, status="pending", attempts=1, next_attempt_at=0, error=quoting)

    [(inbox_event, inbox_error, status)] = await raw_rows(backend, "inbox")
    [(_, outbox_error, _)] = await raw_rows(backend, "outbox")
    assert status == "error" and "***" in inbox_event, "processed: the row keeps the masked copy"
    for text in (inbox_event, inbox_error, outbox_error):
        assert "4111" not in text
    assert inbox_error.startswith("enc1:") and outbox_error.startswith("enc1:")
    assert (await storage.outbox_get(reply.id)).error == quoting  # type: ignore[union-attr]
    # An unmasked event's error stays readable in the database, for an operator's query.
    plain = incoming("user-2", dedupe="m.2")
    await storage.inbox_add([plain])
    await storage.inbox_done([plain.id], "error", "boom")
    assert (await raw_rows(backend, "inbox"))[1][1] == "boom"


async def test_history_never_holds_a_masked_events_text_whoever_records_it(backend: Backend) -> None:
    storage = await backend.open()
    await storage.message_record(masked(incoming(text=CARD)))
    [(event, preview)] = [tuple(r) for r in await backend.query("SELECT event, preview FROM messages")]
    assert "4111" not in event and preview == "***"


async def test_rows_written_with_another_key_fail_clearly_and_the_rest_goes_on(backend: Backend) -> None:
    first = await backend.open(cipher=EventCipher(b"k" * 32, "env BP_STORAGE_KEY"))
    lost, kept = masked(incoming(text=CARD, dedupe="m.1")), incoming("user-2", text="fine", dedupe="m.2")
    await first.inbox_add([lost, kept])
    await first.outbox_add([masked(outgoing(text=CARD)), outgoing(text="plain reply")])

    other = await backend.open(cipher=EventCipher(b"z" * 32, "data/secrets/storage.key"))
    pending = await other.inbox_pending()
    assert [e.id for _, e in pending] == [kept.id]
    assert [r.event.payload["text"] for r in await other.outbox_pending()] == ["plain reply"]
    [(_, error, status), _] = await raw_rows(backend, "inbox")
    assert status == "failed"  # listed with the failed events: retried once the right key is back
    assert first.cipher.key_id in error and other.cipher.key_id in error
    assert "data/secrets/storage.key" in error and "BP_STORAGE_KEY" in error
    assert [r[2] for r in await raw_rows(backend, "outbox")] == ["failed", "pending"]
    assert await other.inbox_pending() == pending, "failed once, not read again"
    [listed] = await other.failed_events("incoming")
    assert (listed.event.id, listed.event.type) == (lost.id, "unreadable")  # listed even though unreadable
    assert first.cipher.key_id in (listed.error or "")


def test_the_key_comes_from_the_environment_or_a_generated_0600_file(tmp_path: Path) -> None:
    from_file = load_cipher(tmp_path, {})
    key_file = tmp_path / "secrets" / "storage.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert load_cipher(tmp_path, {}).key_id == from_file.key_id, "read back at the next start"
    from_env = load_cipher(tmp_path, {"BP_STORAGE_KEY": "ab" * 32})
    assert from_env.source == "env BP_STORAGE_KEY" and from_env.key_id != from_file.key_id
    assert key_file.read_text().strip() not in repr(from_file) + repr(from_env)
    for bad, reason in (("not-hex", "not hex"), ("abcd", "at least 16 bytes")):
        with pytest.raises(StorageKeyError, match=reason) as caught:
            load_cipher(tmp_path, {"BP_STORAGE_KEY": bad})
        assert caught.value.where == "env BP_STORAGE_KEY"
    key_file.write_text("zz\n")
    with pytest.raises(StorageKeyError, match=r"storage\.key") as caught:
        load_cipher(tmp_path, {})
    assert caught.value.where == str(key_file)


async def test_sqlite_erase_truncates_the_wal_and_zeroes_what_it_deleted(tmp_path: Path) -> None:
    path = tmp_path / "core.sqlite"
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        gone = [incoming("erase-me", text=f"ERASED-{i}-quokka", dedupe=f"e.{i}") for i in range(20)]
        kept = [incoming("keep-me", text=f"KEPT-{i}-wombat", dedupe=f"k.{i}") for i in range(20)]
        await storage.inbox_add(gone + kept)
        await storage.inbox_complete([Completion(e.id, "done", None, [outgoing(e.target, f"re {e.preview}")],
                                                 message=e) for e in gone + kept])
        # Deleted content is overwritten with zeros whatever the SQLite build's default.
        assert await storage._write(lambda db: db.execute("PRAGMA secure_delete").fetchone()[0]) == 1
        await storage.erase_user("bot-a", "messenger", "erase-me")
        assert os.path.getsize(f"{path}-wal") == 0
        everything = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        assert b"quokka" not in everything
        assert everything.count(b"wombat") >= 40, "the rest is still there"
    finally:
        await storage.close()


async def test_sqlite_erase_waits_for_a_long_read_then_truncates(tmp_path: Path) -> None:
    """A reader holding a snapshot blocks the TRUNCATE checkpoint: it is retried until the read ends."""
    path = tmp_path / "core.sqlite"
    storage = SQLiteStorage(path)
    await storage.open()
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        await storage.inbox_add([incoming("erase-me", text="ERASED-quokka", dedupe="e.1")])
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM inbox").fetchall()  # holds its snapshot of the WAL
        erase = asyncio.create_task(storage.erase_user("bot-a", "messenger", "erase-me"))
        checkpointer = storage._checkpointer
        assert checkpointer is not None
        await wait_for(lambda: checkpointer.truncate_attempts >= 3, 10)  # refused while the read lasts
        assert not erase.done(), "the erase waits for its WAL to be truncated"
        reader.execute("COMMIT")
        assert (await asyncio.wait_for(erase, 10))["inbox"] == 1
        assert os.path.getsize(f"{path}-wal") == 0
    finally:
        reader.close()
        await storage.close()


async def test_a_write_past_the_query_timeout_fails_as_storage_unavailable(backend: Backend) -> None:
    storage = await backend.open(query_timeout=0.3)
    if backend.name == "sqlite":
        other = sqlite3.connect(backend._location, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageUnavailable, match=r"write lock .*storage\.queryTimeout"):
                await storage.kv_set("ns", "k", 1)
        finally:
            other.execute("COMMIT")
            other.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(backend._location["dsn"],
                                     server_settings={"search_path": f'"{backend._location["schema"]}"'})
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE kv IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(StorageUnavailable, match=r"lock held elsewhere.*storage\.queryTimeout"):
                    await storage.kv_set("ns", "k", 1)
        finally:
            await conn.close()
    await storage.kv_set("ns", "k", 2)  # the lock gone, storage works again
    assert await storage.kv_get("ns", "k") == 2


async def test_a_read_only_sqlite_file_names_its_permissions_not_database_url(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "core.sqlite")
    await storage.open()
    try:
        # The writer connection refusing writes, as a file or folder without write permission makes it.
        await storage._write(lambda db: db.execute("PRAGMA query_only = ON"))
        with pytest.raises(StorageUnavailable) as caught:
            await storage.kv_set("ns", "k", 1)
        message = str(caught.value)
        assert str(tmp_path / "core.sqlite") in message and "may write the file" in message
        assert "DATABASE_URL" not in message
    finally:
        await storage.close()


def test_open_failure_hints_name_each_backends_cause_and_fix(tmp_path: Path) -> None:
    sqlite_hint = open_storage(tmp_path, {}).open_failure_hint()
    assert str(tmp_path / "storage") in sqlite_hint and "write" in sqlite_hint
    assert "check DATABASE_URL" not in sqlite_hint
    postgres_hint = open_storage(tmp_path, {"DATABASE_URL": "postgresql://db/x"}).open_failure_hint()
    assert "check DATABASE_URL" in postgres_hint and "role" in postgres_hint


async def test_postgres_erase_vacuums_the_tables_it_deleted_from(backend: Backend) -> None:
    if backend.name != "postgres":
        pytest.skip("PostgreSQL only: SQLite's erase is checked byte by byte above")
    storage = await backend.open()
    await storage.inbox_add([incoming("erase-me", text="ERASED-quokka", dedupe="e.1")])
    await storage.message_record(incoming("erase-me", text="ERASED-quokka"))
    assert (await storage.erase_user("bot-a", "messenger", "erase-me"))["messages"] == 1

    async def vacuumed() -> set[str]:
        rows = await backend.query("SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema()"
                                   " AND last_vacuum IS NOT NULL")
        return {row[0] for row in rows}

    async def all_vacuumed() -> bool:
        return {"users", "conversations", "messages", "inbox", "outbox", "contacts"} <= await vacuumed()

    await wait_for(all_vacuumed, 10)
