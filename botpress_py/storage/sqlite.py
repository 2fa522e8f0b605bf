"""The embedded default backend: one SQLite file, driven through aiosqlite's worker thread."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiosqlite

from ..events import IOEvent, now_ms
from .base import Completion, ContactMembers, OutboxRow, OutboxStatus, Storage
from .common import (
    INBOX_DONE_STATUSES,
    OUTBOX_STATUSES,
    chunks,
    event_from_json,
    event_json,
    first_occurrences,
    message_params,
    new_contact_id,
    plain_error,
    require_status,
    split_by_sizes,
    to_json,
)
from .migrations import SCHEMA_MIGRATIONS_TABLE, SQLITE_MIGRATIONS, Migration, missing_migrations

# Rows per multi-row INSERT: 100 rows of at most 9 parameters stay under the 999 bound
# variables of older SQLite builds.
_ROWS_PER_INSERT = 100
_IDS_PER_STATEMENT = 500
_BUSY_TIMEOUT_MS = 5000


class SQLiteStorage(Storage):
    """Storage in one SQLite file (WAL mode) through a single aiosqlite connection.

    The connection's thread runs the SQL, so the event loop never waits on disk. One
    connection means one transaction at a time: ``_lock`` keeps a coroutine's statements
    from landing inside another coroutine's open transaction.

    ``synchronous=NORMAL`` in WAL mode survives a crash of the process (every acknowledged
    event stays), but a power cut or OS crash may lose the last transactions; FULL would close
    that gap at the cost of one fsync per commit.
    """

    kind = "sqlite"
    migrations: tuple[Migration, ...] = SQLITE_MIGRATIONS

    def __init__(self, path: Path, *, clock: Callable[[], int] = now_ms) -> None:
        self.path = Path(path)
        self._clock = clock
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        # Reads run on a second connection (and thread): in WAL mode they see the last commit
        # without waiting for the writer, so a slow read never holds up a webhook's commit.
        self._reader: aiosqlite.Connection | None = None
        self._read_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<SQLiteStorage {self.path}>"

    # -- connection and transactions -------------------------------------------------------
    async def open(self) -> None:
        if self._db is not None:
            return
        if sqlite3.sqlite_version_info < (3, 35):
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: botpress-py needs 3.35 or newer (RETURNING)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below says BEGIN itself.
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            self._db = db
            await self._migrate()
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            await reader.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            await reader.execute("PRAGMA query_only = ON")
            self._reader = reader
        except BaseException:
            self._db = None
            await db.close()
            raise

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            async with self._read_lock:
                await reader.close()
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"{self!r} is not open: call await storage.open() first")
        return self._db

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self._conn()
            # IMMEDIATE takes the write lock up front, so another process holding the file
            # makes us wait (busy_timeout) instead of failing halfway through.
            try:
                # BEGIN inside the try: a task cancelled while BEGIN runs on the worker thread
                # must still roll back, or the connection stays inside a transaction for good.
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except BaseException:
                # The worker thread runs statements in order, so this rollback comes after any
                # statement still in flight, even when we were cancelled. It fails harmlessly
                # when SQLite already rolled back by itself (disk full) or the COMMIT went through.
                with suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._read_lock:
            if self._reader is None:
                raise RuntimeError(f"{self!r} is not open: call await storage.open() first")
            return list(await self._reader.execute_fetchall(sql, params))

    async def _migrate(self) -> None:
        db = self._conn()
        await db.execute(SCHEMA_MIGRATIONS_TABLE["sqlite"])
        while True:
            async with self._transaction():
                # Read the version inside the write transaction: another process opening the
                # same file at the same time then waits and sees our migration as applied.
                current = await self._current_version(db)
                todo = missing_migrations(self.migrations, current)
                if not todo:
                    return
                migration = todo[0]
                for statement in migration.statements:
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (migration.version, self._clock()),
                )

    @staticmethod
    async def _current_version(db: aiosqlite.Connection) -> int:
        rows = list(await db.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))
        return int(rows[0][0])

    async def schema_version(self) -> int:
        async with self._lock:
            return await self._current_version(self._conn())

    # -- key-value ----------------------------------------------------------------------------
    async def kv_get(self, namespace: str, key: str) -> Any | None:
        rows = await self._fetchall("SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        return json.loads(rows[0][0]) if rows else None

    async def kv_set(self, namespace: str, key: str, value: Any) -> None:
        text = to_json(value)
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (namespace, key, text, self._clock()),
            )

    async def kv_delete(self, namespace: str, key: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))

    # -- inbox ----------------------------------------------------------------------------------
    async def inbox_add(self, events: list[IOEvent]) -> list[bool]:
        if not events:
            return []
        firsts = first_occurrences(events)
        now = self._clock()
        rows = [
            (e.id, e.botId, e.channel, e.threadId, e.target, e.dedupeKey, event_json(e), now)
            for e, first in zip(events, firsts, strict=True)
            if first
        ]
        inserted: set[str] = set()
        async with self._transaction() as db:
            for chunk in chunks(rows, _ROWS_PER_INSERT):
                # DO NOTHING without a target covers both unique keys: the event id and the
                # (bot, channel, dedupe_key) partial index. RETURNING names the rows that went in.
                returned = await db.execute_fetchall(
                    "INSERT INTO inbox (event_id, bot_id, channel, thread_id, user_id, dedupe_key, event,"
                    " created_at) VALUES "
                    + _placeholders(len(chunk), 8)
                    + " ON CONFLICT DO NOTHING RETURNING event_id",
                    _flatten(chunk),
                )
                inserted.update(row[0] for row in returned)
        return [first and e.id in inserted for e, first in zip(events, firsts, strict=True)]

    async def inbox_pending(self, limit: int = 1000, after_seq: int = 0) -> list[tuple[int, IOEvent]]:
        rows = await self._fetchall(
            "SELECT seq, event FROM inbox WHERE status = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [(int(seq), event_from_json(text)) for seq, text in rows]

    async def inbox_done(self, event_ids: list[str], status: str = "done", error: str | None = None) -> None:
        require_status(status, INBOX_DONE_STATUSES, "inbox")
        if not event_ids:
            return
        async with self._transaction() as db:
            await self._mark_inbox(db, event_ids, status, error, self._clock())

    async def inbox_complete(self, completions: list[Completion]) -> list[list[int]]:
        for completion in completions:
            require_status(completion.status, INBOX_DONE_STATUSES, "inbox")
        if not completions:
            return []
        now = self._clock()
        async with self._transaction() as db:
            for completion in completions:
                await self._mark_inbox(db, [completion.event_id], completion.status, completion.error, now)
                if completion.redacted is not None:
                    await db.execute("UPDATE inbox SET event = ? WHERE event_id = ?",
                                     (event_json(completion.redacted), completion.event_id))
            seqs = await self._insert_outbox(db, [e for c in completions for e in c.outgoing], now)
        return split_by_sizes(seqs, [len(c.outgoing) for c in completions])

    @staticmethod
    async def _mark_inbox(db: aiosqlite.Connection, event_ids: list[str], status: str, error: str | None,
                          now: int) -> None:
        for chunk in chunks(event_ids, _IDS_PER_STATEMENT):
            await db.execute(
                "UPDATE inbox SET status = ?, error = ?, processed_at = ? "
                f"WHERE event_id IN ({_marks(len(chunk))})",
                (status, plain_error(error), now, *chunk),
            )

    # -- outbox ---------------------------------------------------------------------------------
    async def outbox_add(self, events: list[IOEvent]) -> list[int]:
        if not events:
            return []
        async with self._transaction() as db:
            return await self._insert_outbox(db, events, self._clock())

    @staticmethod
    async def _insert_outbox(db: aiosqlite.Connection, events: list[IOEvent], now: int) -> list[int]:
        rows = [(e.id, e.botId, e.channel, e.threadId, e.target, event_json(e), now, now) for e in events]
        seqs: dict[str, int] = {}
        for chunk in chunks(rows, _ROWS_PER_INSERT):
            # A multi-row VALUES inserts in list order, so seq follows the order of `events`.
            returned = await db.execute_fetchall(
                "INSERT INTO outbox (event_id, bot_id, channel, thread_id, user_id, event, created_at,"
                " updated_at) VALUES " + _placeholders(len(chunk), 8) + " RETURNING event_id, seq",
                _flatten(chunk),
            )
            seqs.update((event_id, int(seq)) for event_id, seq in returned)
        return [seqs[e.id] for e in events]

    async def outbox_pending(self, limit: int = 1000, after_seq: int = 0) -> list[OutboxRow]:
        rows = await self._fetchall(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [_outbox_row(row) for row in rows]

    async def outbox_update(
        self,
        event_id: str,
        *,
        status: OutboxStatus,
        attempts: int,
        next_attempt_at: int = 0,
        error: str | None = None,
        channel_message_id: str | None = None,
    ) -> None:
        require_status(status, OUTBOX_STATUSES, "outbox")
        async with self._transaction() as db:
            await db.execute(
                "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, error = ?,"
                " channel_message_id = COALESCE(?, channel_message_id), updated_at = ? WHERE event_id = ?",
                (status, attempts, next_attempt_at, plain_error(error), channel_message_id, self._clock(), event_id),
            )

    async def outbox_get(self, event_id: str) -> OutboxRow | None:
        rows = await self._fetchall(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE event_id = ?", (event_id,))
        return _outbox_row(rows[0]) if rows else None

    async def outbox_redact(self, event: IOEvent) -> None:
        async with self._transaction() as db:
            await db.execute("UPDATE outbox SET event = ? WHERE event_id = ?", (event_json(event), event.id))

    # -- users, conversations, messages ---------------------------------------------------------
    async def conversation_last_event(self, bot_id: str, channel: str, thread_id: str | None,
                                      user_id: str) -> int | None:
        rows = await self._fetchall(
            "SELECT last_event_at FROM conversations WHERE bot_id = ? AND channel = ? AND user_id = ?"
            " AND thread_id = ?", (bot_id, channel, user_id, thread_id or ""))
        return int(rows[0][0]) if rows else None

    async def contact_link(self, members: list[tuple[str, str, str]]) -> str:
        if not members:
            raise ValueError("contact_link needs at least one member")
        now = self._clock()
        async with self._transaction() as db:
            where = " OR ".join(["(bot_id = ? AND channel = ? AND user_id = ?)"] * len(members))
            rows = await db.execute_fetchall(
                f"SELECT contact_id, MIN(created_at) FROM contacts WHERE {where} GROUP BY contact_id"
                " ORDER BY MIN(created_at), contact_id", [v for m in members for v in m])
            existing = [r[0] for r in rows]
            contact = existing[0] if existing else new_contact_id()
            if len(existing) > 1:
                await db.execute("UPDATE contacts SET contact_id = ? WHERE contact_id IN "
                                 f"({_marks(len(existing) - 1)})", (contact, *existing[1:]))
            await db.executemany(
                "INSERT INTO contacts (bot_id, channel, user_id, contact_id, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (bot_id, channel, user_id) DO UPDATE SET contact_id = excluded.contact_id",
                [(*m, contact, now) for m in members])
        return contact

    async def contact_of(self, bot_id: str, channel: str, user_id: str) -> ContactMembers:
        rows = await self._fetchall(
            "SELECT c.contact_id, c.bot_id, c.channel, c.user_id FROM contacts c JOIN contacts me"
            " ON me.contact_id = c.contact_id WHERE me.bot_id = ? AND me.channel = ? AND me.user_id = ?"
            " ORDER BY c.created_at, c.bot_id, c.user_id", (bot_id, channel, user_id))
        if not rows:
            return None, []
        return rows[0][0], [(r[1], r[2], r[3]) for r in rows]

    async def user_upsert(self, bot_id: str, channel: str, user_id: str, profile: dict[str, Any] | None) -> None:
        profile_text = None if profile is None else to_json(profile)
        now = self._clock()
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO users (bot_id, channel, user_id, profile, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bot_id, channel, user_id) DO UPDATE SET"
                " profile = COALESCE(excluded.profile, users.profile), updated_at = excluded.updated_at",
                (bot_id, channel, user_id, profile_text, now, now),
            )

    async def user_get(self, bot_id: str, channel: str, user_id: str) -> dict[str, Any] | None:
        rows = await self._fetchall(
            "SELECT profile, created_at, updated_at FROM users WHERE bot_id = ? AND channel = ? AND user_id = ?",
            (bot_id, channel, user_id),
        )
        if not rows:
            return None
        profile, created, updated = rows[0]
        return {
            "id": user_id,
            "channel": channel,
            "botId": bot_id,
            "profile": None if profile is None else json.loads(profile),
            "createdOn": int(created),
            "updatedOn": int(updated),
        }

    async def message_record(self, event: IOEvent, channel_message_id: str | None = None) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO messages (event_id, bot_id, channel, thread_id, user_id, direction, type, event,"
                " preview, channel_message_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (event_id) DO UPDATE SET"
                " channel_message_id = COALESCE(excluded.channel_message_id, messages.channel_message_id)",
                message_params(event, channel_message_id),
            )
            await db.execute(
                "INSERT INTO conversations (bot_id, channel, user_id, thread_id, created_at, last_event_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bot_id, channel, user_id, thread_id) DO UPDATE SET"
                " last_event_at = MAX(conversations.last_event_at, excluded.last_event_at)",
                (event.botId, event.channel, event.target, event.threadId or "", event.createdOn, event.createdOn),
            )

    async def messages_for(self, bot_id: str, channel: str, user_id: str, limit: int = 100) -> list[dict[str, Any]]:
        # The newest `limit` messages, handed back oldest first.
        rows = await self._fetchall(
            "SELECT event, channel_message_id FROM messages WHERE bot_id = ? AND channel = ? AND user_id = ?"
            " ORDER BY seq DESC LIMIT ?",
            (bot_id, channel, user_id, limit),
        )
        return [{**json.loads(text), "channelMessageId": mid} for text, mid in reversed(rows)]

    async def erase_user(self, bot_id: str, channel: str, user_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        async with self._transaction() as db:
            for table in ("users", "conversations", "messages", "inbox", "outbox", "contacts"):
                async with db.execute(
                    f"DELETE FROM {table} WHERE bot_id = ? AND channel = ? AND user_id = ?",
                    (bot_id, channel, user_id),
                ) as cursor:
                    counts[table] = cursor.rowcount
        return counts

    async def purge(self, *, processed_before: int, messages_before: int) -> dict[str, int]:
        conditions = {
            "inbox": ("status <> 'pending' AND processed_at < ?", processed_before),
            "outbox": ("status <> 'pending' AND updated_at < ?", processed_before),
            "messages": ("created_at < ?", messages_before),
        }
        counts: dict[str, int] = {}
        for table, (condition, before) in conditions.items():
            counts[table] = 0
            while True:
                # Small transactions: a purge of a million rows must not hold the write lock
                # (and every webhook commit behind it) for seconds.
                async with self._transaction() as db, db.execute(
                        f"DELETE FROM {table} WHERE rowid IN "
                        f"(SELECT rowid FROM {table} WHERE {condition} LIMIT {_PURGE_CHUNK})", (before,)) as cursor:
                    deleted = cursor.rowcount
                counts[table] += deleted
                if deleted < _PURGE_CHUNK:
                    break
        return counts


_OUTBOX_COLUMNS = "seq, event, attempts, next_attempt_at, status, error"
_PURGE_CHUNK = 2000


def _outbox_row(row: Sequence[Any]) -> OutboxRow:
    seq, text, attempts, next_attempt_at, status, error = row
    return OutboxRow(
        seq=int(seq),
        event=event_from_json(text),
        attempts=int(attempts),
        next_attempt_at=int(next_attempt_at),
        status=status,
        error=error,
    )


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _placeholders(rows: int, columns: int) -> str:
    one = f"({_marks(columns)})"
    return ", ".join([one] * rows)


def _flatten(rows: Iterable[Sequence[Any]]) -> list[Any]:
    return [value for row in rows for value in row]
