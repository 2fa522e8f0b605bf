"""The embedded default backend: one SQLite file, driven from dedicated threads (sqlite_threads.py).

This file holds the connection, the transactions and the calls of ``Storage`` on the path of
events; beside it: the SQL texts and statement helpers (sqlite_statements.py), failed events
(sqlite_failed.py), the purge and a user's erase (sqlite_maintenance.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ..events import IOEvent, now_ms
from .base import (
    Completion,
    ContactMembers,
    OutboxRow,
    OutboxStatus,
    PendingEvent,
    SentMark,
    Storage,
)
from .common import (
    ERROR_FOR_ROW,
    INBOX_DONE_STATUSES,
    OUTBOX_STATUSES,
    chunks,
    event_from_stored,
    event_json,
    first_occurrences,
    history_query,
    new_contact_id,
    outgoing_encodings,
    readable_rows,
    require_status,
    split_by_sizes,
    stored_error,
    stored_event,
    to_json,
)
from .conversation_list import SQLiteConversationList
from .crypto import EventCipher
from .errors import sqlite_unavailable
from .kv_reads import KvReadBatcher, read_keys
from .migrations import SCHEMA_MIGRATIONS_TABLE, SQLITE_MIGRATIONS, Migration, missing_migrations
from .sqlite_context import SQLiteIncomingContext
from .sqlite_failed import SQLiteFailedEvents
from .sqlite_maintenance import SQLiteMaintenance
from .sqlite_media import SQLiteMedia
from .sqlite_statements import (
    CONTACT_SQL,
    KV_UPSERT,
    LAST_EVENT_SQL,
    OUTBOX_COLUMNS,
    ROWS_PER_INSERT,
    USER_SQL,
    Db,
    contact_members,
    current_version,
    flatten,
    insert_outbox,
    mark_inbox,
    outbox_row,
    placeholders,
    question_marks,
    record_message,
    run_for_effect,
    user_dict,
)
from .sqlite_threads import NORMAL, URGENT, Checkpointer, DatabaseThread, run_transaction

log = logging.getLogger("botpress_py.storage")

# How long a checkpoint waits for the write lock or for readers before it gives up and retries
# later: a TRUNCATE checkpoint holds off writers (webhook commits) while it waits.
_CHECKPOINT_BUSY_MS = 10

T = TypeVar("T")


class SQLiteStorage(SQLiteIncomingContext, SQLiteFailedEvents, SQLiteMaintenance, SQLiteConversationList, SQLiteMedia,
                    Storage):
    """Storage in one SQLite file (WAL mode); the event loop's thread never runs SQLite.

    Every transaction is one function handed to the writer thread (one hand-off per transaction;
    group commit above merges concurrent webhooks, completions and sent marks into one); every
    read, one function handed to the reader thread, on its own connection: in WAL mode it sees
    the last commit without waiting for the writer, so a slow read never holds up a webhook.
    A stalled disk or another process holding the file's write lock stalls those threads, never
    the loop: requests that do not need storage keep being answered, and a webhook's wait for
    its commit is bounded above (``storage.ackTimeout``). The writer waits ``query_timeout``
    seconds for another process's lock, then fails the transaction with StorageUnavailable.

    Checkpoints (copying the WAL into the database file, with an fsync) run on the checkpoint
    thread and its own connection. ``secure_delete`` is on: deleted rows are overwritten with
    zeros, and an erase ends with a TRUNCATE checkpoint, so an erased user's texts are in no
    file afterwards (the WAL's old page images included).

    ``synchronous=NORMAL`` in WAL mode survives a crash of the process (every acknowledged
    event stays), but a power cut or OS crash may lose the last transactions; FULL would close
    that gap at the cost of one fsync per commit.
    """

    kind = "sqlite"
    migrations: tuple[Migration, ...] = SQLITE_MIGRATIONS

    def __init__(self, path: Path, *, clock: Callable[[], int] = now_ms, cipher: EventCipher | None = None,
                 query_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._clock = clock
        # Without a key (a storage made directly, e.g. by a test), masked events are still never
        # stored in clear: they are encrypted with a key that lives as long as this process.
        self.cipher = cipher or EventCipher(os.urandom(32), "a key generated for this process only")
        self.query_timeout = query_timeout
        self._writer_db: Db | None = None
        self._reader_db: Db | None = None
        self._writer_thread: DatabaseThread | None = None
        self._reader_thread: DatabaseThread | None = None
        self._checkpointer: Checkpointer | None = None
        self._kv_reads = KvReadBatcher(lambda keys: self._read(lambda reader: read_keys(
            reader, keys, lambda exc: sqlite_unavailable(exc, self.path, self.query_timeout))))

    def __repr__(self) -> str:
        return f"<SQLiteStorage {self.path}>"

    def open_failure_hint(self) -> str:
        return (f"DATABASE_URL is not set, so the embedded SQLite file {self.path} is used: check that its folder "
                f"{self.path.parent} exists and that this user may write the file and the folder (SQLite creates "
                f"{self.path.name}-wal and {self.path.name}-shm beside it), and that the disk is neither full nor "
                "mounted read-only")

    # -- connection and transactions -------------------------------------------------------
    async def open(self) -> None:
        if self._writer_db is not None:
            return
        if sqlite3.sqlite_version_info < (3, 35):
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: botpress-py needs 3.35 or newer (RETURNING)"
            )
        writer = DatabaseThread("sqlite-writer")
        reader = DatabaseThread("sqlite-reader")  # one priority: reads run in the order asked
        try:
            await reader.call(NORMAL, partial(self.path.parent.mkdir, parents=True, exist_ok=True))
            self._writer_db = await writer.call(NORMAL, lambda: self._connect("writer"))
            self._writer_thread = writer
            await self._migrate()
            self._reader_db = await reader.call(NORMAL, lambda: self._connect("reader"))
            self._reader_thread = reader
            self._checkpointer = Checkpointer(partial(self._connect, "checkpoint"))
        except BaseException:
            await self.close()
            writer.shutdown()
            await asyncio.get_running_loop().run_in_executor(None, reader.shutdown)
            raise

    def _connect(self, role: str) -> Db:
        # isolation_level=None: no implicit transactions; every write says BEGIN itself.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        busy_ms = _CHECKPOINT_BUSY_MS if role == "checkpoint" else int(self.query_timeout * 1000)
        db.execute(f"PRAGMA busy_timeout = {busy_ms}")
        if role == "reader":
            db.execute("PRAGMA query_only = ON")
        elif role == "writer":
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread does it
            # Deleted content is overwritten with zeros, in pages and freed pages alike: an erase leaves
            # nothing to recover from the file (the TRUNCATE checkpoint after it clears the WAL).
            db.execute("PRAGMA secure_delete = ON")
        return db

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await loop.run_in_executor(None, checkpointer.stop)
        reader_db, reader_thread = self._reader_db, self._reader_thread
        self._reader_db = self._reader_thread = None
        if reader_db is not None and reader_thread is not None:
            await reader_thread.call(NORMAL, reader_db.close)
        if reader_thread is not None:
            await loop.run_in_executor(None, reader_thread.shutdown)
        writer_db, writer_thread = self._writer_db, self._writer_thread
        self._writer_db = self._writer_thread = None
        if writer_db is not None and writer_thread is not None:
            await writer_thread.call(NORMAL, writer_db.close)
        elif writer_db is not None:
            writer_db.close()
        if writer_thread is not None:
            await loop.run_in_executor(None, writer_thread.shutdown)

    async def _write(self, body: Callable[[Db], T], priority: int = NORMAL) -> T:
        """Run ``body(db)`` in one transaction on the writer thread."""
        db, thread = self._writer_db, self._writer_thread
        if db is None or thread is None:
            raise RuntimeError(f"{self!r} is not open: call await storage.open() first")
        return await thread.call(priority, partial(self._transaction, db, body))

    def _transaction(self, db: Db, body: Callable[[Db], T]) -> T:
        """On the writer thread: the transaction, and word to the checkpointer that there is WAL to copy."""
        try:
            result = run_transaction(db, body)
        except sqlite3.OperationalError as exc:
            unavailable = sqlite_unavailable(exc, self.path, self.query_timeout)
            if unavailable is None:
                raise
            raise unavailable from exc
        if self._checkpointer is not None:
            self._checkpointer.committed()
        return result

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._read(lambda reader: reader.execute(sql, params).fetchall())

    async def _read(self, body: Callable[[Db], T]) -> T:
        """Run ``body(reader)`` on the reader thread (several reads in one body: one hand-off)."""
        db, thread = self._reader_db, self._reader_thread
        if db is None or thread is None:
            raise RuntimeError(f"{self!r} is not open: call await storage.open() first")
        return await thread.call(NORMAL, partial(self._reading, db, body))

    def _reading(self, db: Db, body: Callable[[Db], T]) -> T:
        try:
            return body(db)
        except sqlite3.OperationalError as exc:
            unavailable = sqlite_unavailable(exc, self.path, self.query_timeout)
            if unavailable is None:
                raise
            raise unavailable from exc

    async def _migrate(self) -> None:
        def create_table(db: Db) -> None:
            db.execute(SCHEMA_MIGRATIONS_TABLE["sqlite"])

        await self._write(create_table)

        def apply_next(db: Db) -> bool:
            # The version is read inside the write transaction: another process opening the
            # same file at the same time waits and then sees our migration as applied.
            todo = missing_migrations(self.migrations, current_version(db))
            if not todo:
                return False
            migration = todo[0]
            for statement in migration.statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                       (migration.version, self._clock()))
            return True

        while await self._write(apply_next):
            pass

    async def schema_version(self) -> int:
        rows = await self._fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(rows[0][0])

    # -- key-value ----------------------------------------------------------------------------
    async def kv_get(self, namespace: str, key: str) -> Any | None:
        return await self._kv_reads.get(namespace, key)  # with the reads asked meanwhile (kv_reads.py)

    async def kv_set_many(self, namespace: str, items: dict[str, Any]) -> None:
        if not items:
            return
        now = self._clock()
        rows = [(namespace, key, to_json(value), now) for key, value in items.items()]
        await self._write(lambda db: run_for_effect(db.executemany, KV_UPSERT, rows))

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._write(lambda db: run_for_effect(db.execute, "DELETE FROM kv WHERE namespace = ? AND key = ?",
                                          (namespace, key)))

    # -- inbox ----------------------------------------------------------------------------------
    async def inbox_add(self, events: list[IOEvent]) -> list[bool]:
        if not events:
            return []
        firsts = first_occurrences(events)
        now = self._clock()
        rows = [
            (e.id, e.botId, e.channel, e.threadId, e.target, e.dedupeKey, stored_event(e, self.cipher), now)
            for e, first in zip(events, firsts, strict=True)
            if first
        ]

        def insert(db: Db) -> set[str]:
            inserted: set[str] = set()
            for chunk in chunks(rows, ROWS_PER_INSERT):
                # DO NOTHING without a target covers both unique keys: the event id and the
                # (bot, channel, dedupe_key) partial index. RETURNING names the rows that went in.
                returned = db.execute(
                    "INSERT INTO inbox (event_id, bot_id, channel, thread_id, user_id, dedupe_key, event,"
                    " created_at) VALUES "
                    + placeholders(len(chunk), 8)
                    + " ON CONFLICT DO NOTHING RETURNING event_id",
                    flatten(chunk),
                ).fetchall()
                inserted.update(row[0] for row in returned)
            return inserted

        inserted = await self._write(insert, URGENT)
        return [first and e.id in inserted for e, first in zip(events, firsts, strict=True)]

    async def inbox_pending_rows(self, limit: int = 1000, after_seq: int = 0,
                                 bot_id: str | None = None) -> list[PendingEvent]:
        if bot_id is None:
            rows = await self._fetchall(
                "SELECT event_id, event, seq, attempts FROM inbox WHERE status = 'pending' AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        else:
            rows = await self._fetchall(
                "SELECT event_id, event, seq, attempts FROM inbox WHERE status = 'pending' AND bot_id = ?"
                " AND seq > ? ORDER BY seq LIMIT ?", (bot_id, after_seq, limit))
        events, unreadable = readable_rows([(event_id, text, (seq, attempts)) for event_id, text, seq, attempts
                                            in rows], self.cipher)
        await self._fail_unreadable("inbox", unreadable)
        return [PendingEvent(int(seq), event, int(attempts)) for event, (seq, attempts) in events]

    async def inbox_pending_counts(self) -> dict[str, int]:
        rows = await self._fetchall("SELECT bot_id, COUNT(*) FROM inbox WHERE status = 'pending' GROUP BY bot_id")
        return {bot_id: int(count) for bot_id, count in rows}

    async def inbox_complete(self, completions: list[Completion]) -> list[list[int]]:
        return [seqs for seqs in await self.record_outcomes(completions) if seqs is not None]

    # Completions and sent marks ready at the same moment share a transaction (GroupCommitOutcomes).
    records_outcomes_together = True

    async def record_outcomes(self, items: Sequence[Completion | SentMark]) -> list[list[int] | None]:
        completions = [item for item in items if isinstance(item, Completion)]
        marks = [item for item in items if isinstance(item, SentMark)]
        for completion in completions:
            require_status(completion.status, INBOX_DONE_STATUSES, "inbox")
        if not items:
            return []
        now = self._clock()
        cipher = self.cipher

        def record(db: Db) -> list[int]:
            # Sent marks first: a reply delivered while the user's next message was being processed
            # comes before that message in history, as it did on the user's screen.
            for mark in marks:
                stored = mark.stored
                db.execute("UPDATE outbox SET status = 'sent', attempts = ?, next_attempt_at = 0, error = NULL,"
                           " channel_message_id = COALESCE(?, channel_message_id), updated_at = ?,"
                           " event = CASE WHEN ? THEN ? ELSE event END WHERE event_id = ?",
                           (mark.attempts, mark.channel_message_id, now, stored is not mark.event,
                            event_json(stored) if stored is not mark.event else None, mark.event.id))
                record_message(db, stored, mark.channel_message_id)
            for completion in completions:
                mark_inbox(db, [completion.event_id], completion.status, stored_error(completion.error, cipher), now)
                if completion.redacted is not None:
                    db.execute("UPDATE inbox SET event = ? WHERE event_id = ?",
                               (event_json(completion.redacted), completion.event_id))
                if completion.message is not None:
                    record_message(db, completion.message, None)
            if not completions:
                return []
            return insert_outbox(db, [e for c in completions for e in c.outgoing], now, cipher,
                                  outgoing_encodings(completions))

        seqs = iter(split_by_sizes(await self._write(record), [len(c.outgoing) for c in completions]))
        return [next(seqs) if isinstance(item, Completion) else None for item in items]

    # -- outbox ---------------------------------------------------------------------------------
    async def outbox_add(self, events: list[IOEvent], encoded: list[str] | None = None) -> list[int]:
        if not events:
            return []
        now = self._clock()
        cipher = self.cipher
        return await self._write(lambda db: insert_outbox(db, events, now, cipher, encoded))

    async def outbox_pending(self, limit: int = 1000, after_seq: int = 0) -> list[OutboxRow]:
        rows = await self._fetchall(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        good, unreadable = readable_rows([(row[1], row[2], row) for row in rows], self.cipher)
        await self._fail_unreadable("outbox", unreadable)
        return [outbox_row(event, row, self.cipher) for event, row in good]

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
        clear, encrypted = stored_error(error, self.cipher)
        params = (status, attempts, next_attempt_at, encrypted, clear, channel_message_id, self._clock(), event_id)
        await self._write(lambda db: run_for_effect(
            db.execute, "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, error = "
            + ERROR_FOR_ROW.format(encrypted="?", clear="?")
            + ", channel_message_id = COALESCE(?, channel_message_id), updated_at = ? WHERE event_id = ?", params))

    async def outbox_get(self, event_id: str) -> OutboxRow | None:
        rows = await self._fetchall(f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE event_id = ?", (event_id,))
        if not rows:
            return None
        return outbox_row(event_from_stored(rows[0][2], self.cipher), rows[0], self.cipher)

    async def outbox_redact(self, event: IOEvent) -> None:
        params = (event_json(event), event.id)
        await self._write(lambda db: run_for_effect(db.execute, "UPDATE outbox SET event = ? WHERE event_id = ?",
                                                    params))

    async def outbox_sent_many(self, marks: list[SentMark]) -> list[None]:
        return [None for _ in await self.record_outcomes(marks)]

    # -- users, conversations, messages ---------------------------------------------------------
    async def conversation_last_event(self, bot_id: str, channel: str, thread_id: str | None,
                                      user_id: str) -> int | None:
        rows = await self._fetchall(LAST_EVENT_SQL, (bot_id, channel, user_id, thread_id or ""))
        return int(rows[0][0]) if rows else None

    async def contact_link(self, members: list[tuple[str, str, str]]) -> str:
        if not members:
            raise ValueError("contact_link needs at least one member")
        now = self._clock()

        def link(db: Db) -> str:
            where = " OR ".join(["(bot_id = ? AND channel = ? AND user_id = ?)"] * len(members))
            rows = db.execute(
                f"SELECT contact_id, MIN(created_at) FROM contacts WHERE {where} GROUP BY contact_id"
                " ORDER BY MIN(created_at), contact_id", [v for m in members for v in m]).fetchall()
            existing = [r[0] for r in rows]
            contact = existing[0] if existing else new_contact_id()
            if len(existing) > 1:
                db.execute("UPDATE contacts SET contact_id = ? WHERE contact_id IN "
                           f"({question_marks(len(existing) - 1)})", (contact, *existing[1:]))
            db.executemany(
                "INSERT INTO contacts (bot_id, channel, user_id, contact_id, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (bot_id, channel, user_id) DO UPDATE SET contact_id = excluded.contact_id",
                [(*m, contact, now) for m in members])
            return contact

        return await self._write(link)

    async def contact_of(self, bot_id: str, channel: str, user_id: str) -> ContactMembers:
        return contact_members(await self._fetchall(CONTACT_SQL, (bot_id, channel, user_id)))

    async def user_upsert(self, bot_id: str, channel: str, user_id: str, profile: dict[str, Any] | None) -> None:
        profile_text = None if profile is None else to_json(profile)
        params = (bot_id, channel, user_id, profile_text, self._clock(), self._clock())
        await self._write(lambda db: run_for_effect(
            db.execute, "INSERT INTO users (bot_id, channel, user_id, profile, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bot_id, channel, user_id) DO UPDATE SET"
            " profile = COALESCE(excluded.profile, users.profile), updated_at = excluded.updated_at", params))

    async def user_get(self, bot_id: str, channel: str, user_id: str) -> dict[str, Any] | None:
        rows = await self._fetchall(USER_SQL, (bot_id, channel, user_id))
        return user_dict(bot_id, channel, user_id, rows[0]) if rows else None

    async def message_record(self, event: IOEvent, channel_message_id: str | None = None) -> None:
        await self._write(lambda db: record_message(db, event, channel_message_id))

    async def messages_for(self, bot_id: str, channel: str, user_id: str, limit: int = 100, *,
                           thread_id: str | None = None, after_seq: int | None = None,
                           before_seq: int | None = None) -> list[dict[str, Any]]:
        sql, params, newest_first = history_query(bot_id, channel, user_id, limit, thread_id, after_seq,
                                                  before_seq, lambda n: "?")
        rows = await self._fetchall(sql, params)
        ordered = reversed(rows) if newest_first else rows
        return [{**json.loads(text), "channelMessageId": mid, "seq": seq} for seq, text, mid in ordered]


