"""The embedded default backend: one SQLite file, driven from two dedicated threads."""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from ..events import IOEvent, now_ms
from .base import (
    Completion,
    ContactMembers,
    IncomingContext,
    OutboxRow,
    OutboxStatus,
    PendingEvent,
    SentMark,
    Storage,
)
from .common import (
    INBOX_DONE_STATUSES,
    OUTBOX_STATUSES,
    chunks,
    event_from_json,
    event_json,
    first_occurrences,
    history_query,
    message_params,
    new_contact_id,
    outgoing_encodings,
    plain_error,
    require_status,
    split_by_sizes,
    to_json,
)
from .migrations import SCHEMA_MIGRATIONS_TABLE, SQLITE_MIGRATIONS, Migration, missing_migrations
from .sqlite_failed import SQLiteFailedEvents

# Rows per multi-row INSERT: 100 rows of at most 9 parameters stay under the 999 bound
# variables of older SQLite builds.
_ROWS_PER_INSERT = 100
_IDS_PER_STATEMENT = 500
_BUSY_TIMEOUT_MS = 5000
# Transactions of up to this many rows may run inline on the event loop's thread (~20 us a row):
# bigger ones go to the writer thread, so the loop is never held for more than a few ms.
_INLINE_MAX_ROWS = 100

T = TypeVar("T")
Db = sqlite3.Connection

# Writer priorities: an inbox commit gates webhook acknowledgements, so it goes before the
# processing writes queued behind it (those only delay replies, which are async anyway).
URGENT, NORMAL = 0, 1


class _PriorityWriter:
    """One thread running submitted functions, most urgent first, then in submission order."""

    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], Any] | None, Future[Any] | None]] = (
            queue.PriorityQueue())
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((priority, next(self._order), fn, future))
        return future

    def _run(self) -> None:
        while True:
            _, _, fn, future = self._queue.get()
            if fn is None or future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue  # the caller gave up before it started: nothing was written
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Finish what was submitted, then stop."""
        self._queue.put((2**31, next(self._order), None, None))
        self._thread.join()


class _Guarded:
    """One SQLite connection and the lock that makes its users take turns.

    The loop thread runs a small statement inline when the lock is free, and hands it to the
    connection's thread otherwise; that thread takes the lock for each job. So the loop never
    waits for a lock, and the connection is never used by two threads at once.
    """

    def __init__(self, db: Db) -> None:
        self.db = db
        self.lock = threading.Lock()


class SQLiteStorage(SQLiteFailedEvents, Storage):
    """Storage in one SQLite file (WAL mode); the event loop never waits for SQLite.

    Small transactions on the hot path (an inbox batch, a completion, sent marks, the reads
    before bot logic) run inline on the event loop's thread when the writer connection is
    free: such a transaction takes 20-50 us of SQLite, while handing it to a thread and back
    costs 100-150 us more (and two thread wake-ups, which on a VM cost far more at low load).
    Everything else (big batches, purges, erases, migrations), and any transaction that
    finds the connection busy, runs on the writer thread, one function per transaction. A
    transaction always runs to COMMIT or ROLLBACK, so a cancelled caller never leaves one
    open. Inline never waits: the writer's ``busy_timeout`` is 0, so a transaction that finds
    the file locked by another process falls back to the thread, which waits for it.

    Checkpoints (copying the WAL into the database file, with an fsync) are what could take
    milliseconds: automatic checkpoints are off, and the checkpoint thread runs them on its
    own connection, without holding the writer's.

    Reads run on a second connection and thread; in WAL mode they see the last commit without
    waiting for the writer, so a slow read never holds up a webhook.

    ``synchronous=NORMAL`` in WAL mode survives a crash of the process (every acknowledged
    event stays), but a power cut or OS crash may lose the last transactions; FULL would close
    that gap at the cost of one fsync per commit.
    """

    kind = "sqlite"
    migrations: tuple[Migration, ...] = SQLITE_MIGRATIONS

    def __init__(self, path: Path, *, clock: Callable[[], int] = now_ms) -> None:
        self.path = Path(path)
        self._clock = clock
        self._writer: _Guarded | None = None
        self._reader: _Guarded | None = None
        self._writer_thread: _PriorityWriter | None = None
        self._reader_thread: ThreadPoolExecutor | None = None
        self._checkpointer: _Checkpointer | None = None
        self.inline_transactions = 0  # how many ran on the loop's thread (for tests and bench/)
        self.thread_transactions = 0

    def __repr__(self) -> str:
        return f"<SQLiteStorage {self.path}>"

    # -- connection and transactions -------------------------------------------------------
    async def open(self) -> None:
        if self._writer is not None:
            return
        if sqlite3.sqlite_version_info < (3, 35):
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: botpress-py needs 3.35 or newer (RETURNING)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = _PriorityWriter("sqlite-writer")
        reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        loop = asyncio.get_running_loop()
        try:
            self._writer = _Guarded(await asyncio.wrap_future(writer.submit(NORMAL, lambda: self._connect(False))))
            self._writer_thread = writer
            await self._migrate()
            self._reader = _Guarded(await loop.run_in_executor(reader, self._connect, True))
            self._reader_thread = reader
            self._checkpointer = _Checkpointer(self._connect)
        except BaseException:
            await self.close()
            writer.shutdown()
            reader.shutdown(wait=False)
            raise

    def _connect(self, read_only: bool) -> Db:
        # isolation_level=None: no implicit transactions; every write says BEGIN itself.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # The writer never lets SQLite wait for another process's lock: inline that would hold the
        # event loop; the writer thread waits by itself instead (_begin_immediate).
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS if read_only else 0}")
        if read_only:
            db.execute("PRAGMA query_only = ON")
        else:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread does it, off the loop
        return db

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await loop.run_in_executor(None, checkpointer.stop)
        reader, reader_thread = self._reader, self._reader_thread
        self._reader = self._reader_thread = None
        if reader is not None and reader_thread is not None:
            await loop.run_in_executor(reader_thread, _locked(reader, lambda db: db.close()))
        if reader_thread is not None:
            reader_thread.shutdown(wait=True)
        writer, writer_thread = self._writer, self._writer_thread
        self._writer = self._writer_thread = None
        if writer is not None and writer_thread is not None:
            await asyncio.wrap_future(writer_thread.submit(NORMAL, _locked(writer, lambda db: db.close())))
        elif writer is not None:
            writer.db.close()
        if writer_thread is not None:
            await loop.run_in_executor(None, writer_thread.shutdown)

    async def _write(self, body: Callable[[Db], T], priority: int = NORMAL, *, inline: bool = False) -> T:
        """Run ``body(db)`` in one transaction: inline when asked and the connection is free, else on
        the writer thread. ``inline`` is for small, bounded work only (it runs on the loop's thread)."""
        writer, thread = self._writer, self._writer_thread
        if writer is None or thread is None:
            raise RuntimeError(f"{self!r} is not open: call await storage.open() first")
        db = writer.db
        if inline and writer.lock.acquire(blocking=False):
            try:
                done, result = _inline_transaction(db, body)
            finally:
                writer.lock.release()
            if done:
                self.inline_transactions += 1
                self._committed()
                return result
            # Another process holds the file: wait for it on the thread, not on the loop.

        def transaction() -> T:
            with writer.lock:
                _begin_immediate(db)
                return _finish_transaction(db, body)

        result = await asyncio.wrap_future(thread.submit(priority, transaction))
        self.thread_transactions += 1
        self._committed()
        return result

    def _committed(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.committed()  # there is WAL to copy into the database file

    async def _fetchall(self, sql: str, params: Sequence[Any] = (), *, inline: bool = False) -> list[Any]:
        return await self._read(lambda reader: reader.execute(sql, params).fetchall(), inline=inline)

    async def _read(self, body: Callable[[Db], T], *, inline: bool = False) -> T:
        """Run ``body(reader)`` (several reads: one hand-off); ``inline`` for small point reads, which
        then run on the loop's thread unless the reader is busy with a slow query."""
        reader, thread = self._reader, self._reader_thread
        if reader is None or thread is None:
            raise RuntimeError(f"{self!r} is not open: call await storage.open() first")
        if inline and reader.lock.acquire(blocking=False):
            try:
                return body(reader.db)
            finally:
                reader.lock.release()
        return await asyncio.get_running_loop().run_in_executor(thread, _locked(reader, body))

    async def _migrate(self) -> None:
        def create_table(db: Db) -> None:
            db.execute(SCHEMA_MIGRATIONS_TABLE["sqlite"])

        await self._write(create_table)

        def apply_next(db: Db) -> bool:
            # The version is read inside the write transaction: another process opening the
            # same file at the same time waits and then sees our migration as applied.
            todo = missing_migrations(self.migrations, _current_version(db))
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
        rows = await self._fetchall("SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key),
                                    inline=True)
        return json.loads(rows[0][0]) if rows else None

    async def kv_set_many(self, namespace: str, items: dict[str, Any]) -> None:
        if not items:
            return
        now = self._clock()
        rows = [(namespace, key, to_json(value), now) for key, value in items.items()]
        await self._write(lambda db: _run(db.executemany, _KV_UPSERT, rows),
                          inline=len(rows) <= _INLINE_MAX_ROWS)

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._write(lambda db: _run(db.execute, "DELETE FROM kv WHERE namespace = ? AND key = ?",
                                          (namespace, key)), inline=True)

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

        def insert(db: Db) -> set[str]:
            inserted: set[str] = set()
            for chunk in chunks(rows, _ROWS_PER_INSERT):
                # DO NOTHING without a target covers both unique keys: the event id and the
                # (bot, channel, dedupe_key) partial index. RETURNING names the rows that went in.
                returned = db.execute(
                    "INSERT INTO inbox (event_id, bot_id, channel, thread_id, user_id, dedupe_key, event,"
                    " created_at) VALUES "
                    + _placeholders(len(chunk), 8)
                    + " ON CONFLICT DO NOTHING RETURNING event_id",
                    _flatten(chunk),
                ).fetchall()
                inserted.update(row[0] for row in returned)
            return inserted

        inserted = await self._write(insert, URGENT, inline=len(rows) <= _INLINE_MAX_ROWS)
        return [first and e.id in inserted for e, first in zip(events, firsts, strict=True)]

    async def inbox_pending_rows(self, limit: int = 1000, after_seq: int = 0,
                                 bot_id: str | None = None) -> list[PendingEvent]:
        if bot_id is None:
            rows = await self._fetchall(
                "SELECT seq, event, attempts FROM inbox WHERE status = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        else:
            rows = await self._fetchall(
                "SELECT seq, event, attempts FROM inbox WHERE status = 'pending' AND bot_id = ? AND seq > ?"
                " ORDER BY seq LIMIT ?", (bot_id, after_seq, limit))
        return [PendingEvent(int(seq), event_from_json(text), int(attempts)) for seq, text, attempts in rows]

    async def inbox_pending_counts(self) -> dict[str, int]:
        rows = await self._fetchall("SELECT bot_id, COUNT(*) FROM inbox WHERE status = 'pending' GROUP BY bot_id")
        return {bot_id: int(count) for bot_id, count in rows}

    async def inbox_complete(self, completions: list[Completion]) -> list[list[int]]:
        for completion in completions:
            require_status(completion.status, INBOX_DONE_STATUSES, "inbox")
        if not completions:
            return []
        now = self._clock()

        def complete(db: Db) -> list[int]:
            for completion in completions:
                _mark_inbox(db, [completion.event_id], completion.status, completion.error, now)
                if completion.redacted is not None:
                    db.execute("UPDATE inbox SET event = ? WHERE event_id = ?",
                               (event_json(completion.redacted), completion.event_id))
                if completion.message is not None:
                    _record_message(db, completion.message, None)
            return _insert_outbox(db, [e for c in completions for e in c.outgoing], now,
                                  outgoing_encodings(completions))

        rows = len(completions) + sum(len(c.outgoing) for c in completions)
        seqs = await self._write(complete, inline=rows <= _INLINE_MAX_ROWS)
        return split_by_sizes(seqs, [len(c.outgoing) for c in completions])

    # -- outbox ---------------------------------------------------------------------------------
    async def outbox_add(self, events: list[IOEvent], encoded: list[str] | None = None) -> list[int]:
        if not events:
            return []
        now = self._clock()
        return await self._write(lambda db: _insert_outbox(db, events, now, encoded),
                                 inline=len(events) <= _INLINE_MAX_ROWS)

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
        params = (status, attempts, next_attempt_at, plain_error(error), channel_message_id, self._clock(), event_id)
        await self._write(lambda db: _run(
            db.execute, "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, error = ?,"
            " channel_message_id = COALESCE(?, channel_message_id), updated_at = ? WHERE event_id = ?", params),
            inline=True)

    async def outbox_get(self, event_id: str) -> OutboxRow | None:
        rows = await self._fetchall(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE event_id = ?", (event_id,))
        return _outbox_row(rows[0]) if rows else None

    async def outbox_redact(self, event: IOEvent) -> None:
        params = (event_json(event), event.id)
        await self._write(lambda db: _run(db.execute, "UPDATE outbox SET event = ? WHERE event_id = ?", params),
                          inline=True)

    async def outbox_sent_many(self, marks: list[SentMark]) -> list[None]:
        if not marks:
            return []
        now = self._clock()

        def sent(db: Db) -> list[None]:
            for mark in marks:
                stored = mark.stored
                db.execute("UPDATE outbox SET status = 'sent', attempts = ?, next_attempt_at = 0, error = NULL,"
                           " channel_message_id = COALESCE(?, channel_message_id), updated_at = ?,"
                           " event = CASE WHEN ? THEN ? ELSE event END WHERE event_id = ?",
                           (mark.attempts, mark.channel_message_id, now, stored is not mark.event,
                            event_json(stored) if stored is not mark.event else None, mark.event.id))
                _record_message(db, stored, mark.channel_message_id)
            return [None] * len(marks)

        return await self._write(sent, inline=len(marks) <= _INLINE_MAX_ROWS)

    # -- users, conversations, messages ---------------------------------------------------------
    async def conversation_last_event(self, bot_id: str, channel: str, thread_id: str | None,
                                      user_id: str) -> int | None:
        rows = await self._fetchall(_LAST_EVENT_SQL, (bot_id, channel, user_id, thread_id or ""), inline=True)
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
                           f"({_marks(len(existing) - 1)})", (contact, *existing[1:]))
            db.executemany(
                "INSERT INTO contacts (bot_id, channel, user_id, contact_id, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (bot_id, channel, user_id) DO UPDATE SET contact_id = excluded.contact_id",
                [(*m, contact, now) for m in members])
            return contact

        return await self._write(link)

    async def incoming_context(self, bot_id: str, channel: str, thread_id: str | None,
                               user_id: str) -> IncomingContext:
        def read(db: Db) -> IncomingContext:
            # Three small reads, one thread hand-off (which costs more than the reads).
            last = db.execute(_LAST_EVENT_SQL, (bot_id, channel, user_id, thread_id or "")).fetchall()
            user = db.execute(_USER_SQL, (bot_id, channel, user_id)).fetchall()
            contact = db.execute(_CONTACT_SQL, (bot_id, channel, user_id)).fetchall()
            return IncomingContext(int(last[0][0]) if last else None,
                                   _user_dict(bot_id, channel, user_id, user[0]) if user else None,
                                   _contact_members(contact))

        return await self._read(read, inline=True)

    async def contact_of(self, bot_id: str, channel: str, user_id: str) -> ContactMembers:
        return _contact_members(await self._fetchall(_CONTACT_SQL, (bot_id, channel, user_id), inline=True))

    async def user_upsert(self, bot_id: str, channel: str, user_id: str, profile: dict[str, Any] | None) -> None:
        profile_text = None if profile is None else to_json(profile)
        params = (bot_id, channel, user_id, profile_text, self._clock(), self._clock())
        await self._write(lambda db: _run(
            db.execute, "INSERT INTO users (bot_id, channel, user_id, profile, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bot_id, channel, user_id) DO UPDATE SET"
            " profile = COALESCE(excluded.profile, users.profile), updated_at = excluded.updated_at", params),
            inline=True)

    async def user_get(self, bot_id: str, channel: str, user_id: str) -> dict[str, Any] | None:
        rows = await self._fetchall(_USER_SQL, (bot_id, channel, user_id), inline=True)
        return _user_dict(bot_id, channel, user_id, rows[0]) if rows else None

    async def message_record(self, event: IOEvent, channel_message_id: str | None = None) -> None:
        await self._write(lambda db: _record_message(db, event, channel_message_id), inline=True)

    async def messages_for(self, bot_id: str, channel: str, user_id: str, limit: int = 100, *,
                           thread_id: str | None = None, after_seq: int | None = None,
                           before_seq: int | None = None) -> list[dict[str, Any]]:
        sql, params, newest_first = history_query(bot_id, channel, user_id, limit, thread_id, after_seq,
                                                  before_seq, lambda n: "?")
        rows = await self._fetchall(sql, params)
        ordered = reversed(rows) if newest_first else rows
        return [{**json.loads(text), "channelMessageId": mid, "seq": seq} for seq, text, mid in ordered]

    async def erase_user(self, bot_id: str, channel: str, user_id: str) -> dict[str, int]:
        who = (bot_id, channel, user_id)

        def erase(db: Db) -> dict[str, int]:
            return {table: db.execute(f"DELETE FROM {table} WHERE bot_id = ? AND channel = ? AND user_id = ?",
                                      who).rowcount
                    for table in ("users", "conversations", "messages", "contacts")}

        counts = await self._write(erase)
        for table in ("inbox", "outbox"):
            # No per-user index on the queues (migration 4): scan them by seq, one slice per
            # transaction, so the write lock (and every webhook's commit) never waits long.
            low, high = (await self._fetchall(f"SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM {table}"))[0]
            counts[table] = 0
            for start in range(int(low) - 1, int(high), _ERASE_SLICE):
                sql = (f"DELETE FROM {table} WHERE seq > ? AND seq <= ? AND bot_id = ? AND channel = ? "
                       "AND user_id = ?")
                counts[table] += await self._write(
                    lambda db, sql=sql, start=start: db.execute(sql, (start, start + _ERASE_SLICE, *who)).rowcount)
        return {table: counts[table] for table in ("users", "conversations", "messages", "inbox", "outbox",
                                                   "contacts")}

    async def purge(self, *, processed_before: int, messages_before: int,
                    failed_before: int | None = None) -> dict[str, int]:
        failed_before = processed_before if failed_before is None else failed_before
        conditions = [
            ("inbox", f"status IN {_FINISHED['inbox']} AND processed_at < ?", processed_before),
            ("inbox", f"status IN {_DEAD} AND processed_at < ?", failed_before),
            ("outbox", f"status IN {_FINISHED['outbox']} AND updated_at < ?", processed_before),
            ("outbox", f"status IN {_DEAD} AND updated_at < ?", failed_before),
            ("messages", "created_at < ?", messages_before),
        ]
        counts: dict[str, int] = {"inbox": 0, "outbox": 0, "messages": 0}
        for table, condition, before in conditions:
            while True:
                # Small transactions: a purge of a million rows must not hold the write lock
                # (and every webhook commit behind it) for seconds.
                sql = (f"DELETE FROM {table} WHERE rowid IN "
                       f"(SELECT rowid FROM {table} WHERE {condition} LIMIT {_PURGE_CHUNK})")
                deleted = await self._write(lambda db, sql=sql, before=before: db.execute(sql, (before,)).rowcount)
                counts[table] += deleted
                if deleted < _PURGE_CHUNK:
                    break
        return counts


_OUTBOX_COLUMNS = "seq, event, attempts, next_attempt_at, status, error"
_LAST_EVENT_SQL = ("SELECT last_event_at FROM conversations WHERE bot_id = ? AND channel = ? AND user_id = ?"
                   " AND thread_id = ?")
_USER_SQL = "SELECT profile, created_at, updated_at FROM users WHERE bot_id = ? AND channel = ? AND user_id = ?"
_CONTACT_SQL = ("SELECT c.contact_id, c.bot_id, c.channel, c.user_id FROM contacts c JOIN contacts me"
                " ON me.contact_id = c.contact_id WHERE me.bot_id = ? AND me.channel = ? AND me.user_id = ?"
                " ORDER BY c.created_at, c.bot_id, c.user_id")


def _user_dict(bot_id: str, channel: str, user_id: str, row: Sequence[Any]) -> dict[str, Any]:
    profile, created, updated = row
    return {
        "id": user_id,
        "channel": channel,
        "botId": bot_id,
        "profile": None if profile is None else json.loads(profile),
        "createdOn": int(created),
        "updatedOn": int(updated),
    }


def _contact_members(rows: Sequence[Sequence[Any]]) -> ContactMembers:
    if not rows:
        return None, []
    return rows[0][0], [(r[1], r[2], r[3]) for r in rows]
_KV_UPSERT = ("INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
              "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")
_PURGE_CHUNK = 2000
# Finished rows kept for storage.retention.events; failed and discarded ones for retention.failed.
_FINISHED = {"inbox": "('done', 'dropped', 'error')", "outbox": "('sent', 'dropped')"}
_DEAD = "('failed', 'discarded')"
_ERASE_SLICE = 20_000  # queue rows scanned per erase transaction (a few ms)


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


def _run(method: Callable[..., sqlite3.Cursor], sql: str, params: Any) -> None:
    """Run a statement for its effect; its cursor is closed here, on the writer thread."""
    method(sql, params).close()


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _placeholders(rows: int, columns: int) -> str:
    one = f"({_marks(columns)})"
    return ", ".join([one] * rows)


def _flatten(rows: Iterable[Sequence[Any]]) -> list[Any]:
    return [value for row in rows for value in row]


def _current_version(db: Db) -> int:
    return int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])


def _mark_inbox(db: Db, event_ids: list[str], status: str, error: str | None, now: int) -> None:
    for chunk in chunks(event_ids, _IDS_PER_STATEMENT):
        db.execute(f"UPDATE inbox SET status = ?, error = ?, processed_at = ? WHERE event_id IN ({_marks(len(chunk))})",
                   (status, plain_error(error), now, *chunk))


def _insert_outbox(db: Db, events: list[IOEvent], now: int, encoded: list[str] | None = None) -> list[int]:
    texts = encoded if encoded is not None and len(encoded) == len(events) else [event_json(e) for e in events]
    rows = [(e.id, e.botId, e.channel, e.threadId, e.target, text, now, now) for e, text in zip(events, texts,
                                                                                                 strict=True)]
    seqs: dict[str, int] = {}
    for chunk in chunks(rows, _ROWS_PER_INSERT):
        # A multi-row VALUES inserts in list order, so seq follows the order of `events`.
        returned = db.execute(
            "INSERT INTO outbox (event_id, bot_id, channel, thread_id, user_id, event, created_at,"
            " updated_at) VALUES " + _placeholders(len(chunk), 8) + " RETURNING event_id, seq",
            _flatten(chunk),
        ).fetchall()
        seqs.update((event_id, int(seq)) for event_id, seq in returned)
    return [seqs[e.id] for e in events]


def _record_message(db: Db, event: IOEvent, channel_message_id: str | None) -> None:
    db.execute(
        "INSERT INTO messages (event_id, bot_id, channel, thread_id, user_id, direction, type, event,"
        " preview, channel_message_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (event_id) DO UPDATE SET"
        " channel_message_id = COALESCE(excluded.channel_message_id, messages.channel_message_id)",
        message_params(event, channel_message_id),
    )
    db.execute(
        "INSERT INTO conversations (bot_id, channel, user_id, thread_id, created_at, last_event_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bot_id, channel, user_id, thread_id) DO UPDATE SET"
        " last_event_at = MAX(conversations.last_event_at, excluded.last_event_at)",
        (event.botId, event.channel, event.target, event.threadId or "", event.createdOn, event.createdOn),
    )


def _locked(guarded: _Guarded, body: Callable[[Db], T]) -> Callable[[], T]:
    def run() -> T:
        with guarded.lock:
            return body(guarded.db)

    return run


def _finish_transaction(db: Db, body: Callable[[Db], T]) -> T:
    """Run ``body`` in the transaction just begun, then COMMIT (or ROLLBACK and raise)."""
    try:
        result = body(db)
        if isinstance(result, sqlite3.Cursor):
            # A cursor must not leave its thread: dropped on another one, it resets its (cached,
            # shared) statement while this connection may be running it ("bad parameter or other
            # API misuse").
            result.close()
            result = None  # type: ignore[assignment]
        db.execute("COMMIT")
        return result
    except BaseException:
        # Fails harmlessly when SQLite already rolled back by itself (disk full).
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _locked_out(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _inline_transaction(db: Db, body: Callable[[Db], T]) -> tuple[bool, T | None]:
    """(True, result) after running the transaction now; (False, None) when another process holds
    the database's write lock (nothing was done: the caller runs it on the writer thread)."""
    try:
        db.execute("BEGIN IMMEDIATE")  # busy_timeout is 0 on the writer: fails at once when locked
    except sqlite3.OperationalError as exc:
        if _locked_out(exc):
            return False, None
        raise
    return True, _finish_transaction(db, body)


def _begin_immediate(db: Db) -> None:
    """BEGIN IMMEDIATE on the writer thread, waiting up to _BUSY_TIMEOUT_MS for another process.

    IMMEDIATE takes the write lock up front, so another process holding the file makes us wait
    here instead of failing halfway through a transaction.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _locked_out(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)  # on the writer thread: the event loop is not held
        pause = min(pause * 2, 0.05)


class _Checkpointer:
    """Copies the WAL into the database file from its own thread and connection.

    Automatic checkpoints would run inside a commit, possibly on the event loop's thread, and a
    checkpoint fsyncs: milliseconds. Here they run at most every ``interval`` seconds once
    something was committed, as PASSIVE checkpoints, which never block writers or readers.
    """

    def __init__(self, connect: Callable[[bool], Db], interval: float = 1.0) -> None:
        self._connect = connect
        self._interval = interval
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        if not self._dirty.is_set():
            self._dirty.set()

    def _run(self) -> None:
        db = self._connect(False)
        try:
            while not self._stopping.is_set():
                self._dirty.wait()
                if self._stopping.wait(self._interval):
                    break
                self._dirty.clear()
                with suppress(sqlite3.Error):  # a busy file: the next round tries again
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        self._thread.join()
