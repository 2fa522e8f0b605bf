"""The PostgreSQL backend (``DATABASE_URL=postgresql://...``), on an asyncpg connection pool."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from ..events import IOEvent, now_ms
from .base import Completion, ContactMembers, OutboxRow, OutboxStatus, PendingEvent, SentMark, Storage
from .common import (
    INBOX_DONE_STATUSES,
    OUTBOX_STATUSES,
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
from .migrations import POSTGRES_MIGRATIONS, SCHEMA_MIGRATIONS_TABLE, Migration, missing_migrations
from .postgres_context import PostgresIncomingContext
from .postgres_failed import PostgresFailedEvents

# Any constant works: it only has to be the same for every botpress-py migrating this database.
_MIGRATION_LOCK = 0x62707079  # "bpy"


class PostgresStorage(PostgresFailedEvents, PostgresIncomingContext, Storage):
    """Storage in PostgreSQL, optionally inside its own ``schema`` (created when missing).

    Seq numbers come from sequences, which hand them out before commit: under concurrent
    writers a smaller seq can become visible after a larger one. ``after_seq`` is therefore
    for paging through what is stored (e.g. replay at start), not for tailing live inserts.
    """

    kind = "postgres"
    migrations: tuple[Migration, ...] = POSTGRES_MIGRATIONS

    def __init__(
        self,
        dsn: str,
        schema: str | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        max_connections: int = 5,
    ) -> None:
        self._dsn = dsn  # may hold a password: never put it in a message or a repr
        self.schema = schema or None
        self._clock = clock
        self._max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"<PostgresStorage schema={self.schema or 'default'}>"

    # -- connection and transactions -------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        server_settings: dict[str, str] = {}
        if self.schema:
            await self._create_schema()
            server_settings["search_path"] = quote_ident(self.schema)
        pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=self._max_connections, server_settings=server_settings
        )
        try:
            self._pool = pool
            await self._migrate()
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def _create_schema(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            # Two servers starting together may both try: the loser's duplicate is fine.
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema or '')}")
            except asyncpg.UniqueViolationError:
                pass
        finally:
            await conn.close()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self!r} is not open: call await storage.open() first")
        return self._pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._get_pool().acquire() as conn, conn.transaction():
            yield conn

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._get_pool().fetch(sql, *args)

    async def _migrate(self) -> None:
        async with self._get_pool().acquire() as conn:
            while True:
                async with conn.transaction():
                    # The advisory lock (released at commit) serialises servers migrating the same
                    # database; reading the version after taking it sees their work.
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    await conn.execute(SCHEMA_MIGRATIONS_TABLE["postgres"])
                    current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                    todo = missing_migrations(self.migrations, int(current))
                    if not todo:
                        return
                    migration = todo[0]
                    for statement in migration.statements:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                        migration.version,
                        self._clock(),
                    )

    async def schema_version(self) -> int:
        return int(await self._get_pool().fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))

    # -- key-value ----------------------------------------------------------------------------
    async def kv_get(self, namespace: str, key: str) -> Any | None:
        text = await self._get_pool().fetchval("SELECT value FROM kv WHERE namespace = $1 AND key = $2", namespace, key)
        return None if text is None else json.loads(text)

    async def kv_set_many(self, namespace: str, items: dict[str, Any]) -> None:
        if not items:
            return
        now = self._clock()
        rows = [(namespace, key, to_json(value), now) for key, value in items.items()]
        # executemany runs in one transaction: all keys or none.
        await self._get_pool().executemany(
            "INSERT INTO kv (namespace, key, value, updated_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            rows,
        )

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._get_pool().execute("DELETE FROM kv WHERE namespace = $1 AND key = $2", namespace, key)

    # -- inbox ----------------------------------------------------------------------------------
    async def inbox_add(self, events: list[IOEvent]) -> list[bool]:
        if not events:
            return []
        firsts = first_occurrences(events)
        fresh = [e for e, first in zip(events, firsts, strict=True) if first]
        async with self._transaction() as conn:
            seqs = await _take_seqs(conn, "inbox", len(fresh))
            # ON CONFLICT DO NOTHING without a target covers both unique keys: the event id and
            # the (bot, channel, dedupe_key) partial index. RETURNING names the rows that went in.
            rows = await conn.fetch(
                "INSERT INTO inbox (seq, event_id, bot_id, channel, thread_id, user_id, dedupe_key, event,"
                " created_at) SELECT s, i, b, c, t, u, d, e, $9 FROM unnest($1::bigint[], $2::text[],"
                " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) AS r(s, i, b, c, t, u, d, e)"
                " ON CONFLICT DO NOTHING RETURNING event_id",
                seqs,
                [e.id for e in fresh],
                [e.botId for e in fresh],
                [e.channel for e in fresh],
                [e.threadId for e in fresh],
                [e.target for e in fresh],
                [e.dedupeKey for e in fresh],
                [event_json(e) for e in fresh],
                self._clock(),
            )
        inserted = {row["event_id"] for row in rows}
        return [first and e.id in inserted for e, first in zip(events, firsts, strict=True)]

    async def inbox_pending_rows(self, limit: int = 1000, after_seq: int = 0,
                                 bot_id: str | None = None) -> list[PendingEvent]:
        if bot_id is None:
            rows = await self._fetch(
                "SELECT seq, event, attempts FROM inbox WHERE status = 'pending' AND seq > $1 ORDER BY seq LIMIT $2",
                after_seq,
                limit,
            )
        else:
            rows = await self._fetch(
                "SELECT seq, event, attempts FROM inbox WHERE status = 'pending' AND bot_id = $1 AND seq > $2"
                " ORDER BY seq LIMIT $3", bot_id, after_seq, limit)
        return [PendingEvent(int(row["seq"]), event_from_json(row["event"]), int(row["attempts"])) for row in rows]

    async def inbox_pending_counts(self) -> dict[str, int]:
        rows = await self._fetch("SELECT bot_id, COUNT(*) AS n FROM inbox WHERE status = 'pending' GROUP BY bot_id")
        return {row["bot_id"]: int(row["n"]) for row in rows}

    async def inbox_complete(self, completions: list[Completion]) -> list[list[int]]:
        for completion in completions:
            require_status(completion.status, INBOX_DONE_STATUSES, "inbox")
        if not completions:
            return []
        now = self._clock()
        async with self._transaction() as conn:
            for completion in completions:
                await _mark_inbox(conn, [completion.event_id], completion.status, completion.error, now)
                if completion.redacted is not None:
                    await conn.execute("UPDATE inbox SET event = $2 WHERE event_id = $1",
                                       completion.event_id, event_json(completion.redacted))
                if completion.message is not None:
                    await _record_message(conn, completion.message, None)
            seqs = await _insert_outbox(conn, [e for c in completions for e in c.outgoing], now,
                                        outgoing_encodings(completions))
        return split_by_sizes(seqs, [len(c.outgoing) for c in completions])

    # -- outbox ---------------------------------------------------------------------------------
    async def outbox_add(self, events: list[IOEvent], encoded: list[str] | None = None) -> list[int]:
        if not events:
            return []
        async with self._transaction() as conn:
            return await _insert_outbox(conn, events, self._clock(), encoded)

    async def outbox_pending(self, limit: int = 1000, after_seq: int = 0) -> list[OutboxRow]:
        rows = await self._fetch(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND seq > $1 ORDER BY seq LIMIT $2",
            after_seq,
            limit,
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
        await self._get_pool().execute(
            "UPDATE outbox SET status = $2, attempts = $3, next_attempt_at = $4, error = $5,"
            " channel_message_id = COALESCE($6, channel_message_id), updated_at = $7 WHERE event_id = $1",
            event_id,
            status,
            attempts,
            next_attempt_at,
            plain_error(error),
            channel_message_id,
            self._clock(),
        )

    async def outbox_get(self, event_id: str) -> OutboxRow | None:
        rows = await self._fetch(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE event_id = $1", event_id)
        return _outbox_row(rows[0]) if rows else None

    async def outbox_sent_many(self, marks: list[SentMark]) -> list[None]:
        if not marks:
            return []
        now = self._clock()
        async with self._transaction() as conn:
            for mark in marks:
                stored = mark.stored
                await conn.execute(
                    "UPDATE outbox SET status = 'sent', attempts = $2, next_attempt_at = 0, error = NULL,"
                    " channel_message_id = COALESCE($3, channel_message_id), updated_at = $4,"
                    " event = CASE WHEN $5 THEN $6 ELSE event END WHERE event_id = $1",
                    mark.event.id, mark.attempts, mark.channel_message_id, now, stored is not mark.event,
                    event_json(stored) if stored is not mark.event else None)
                await _record_message(conn, stored, mark.channel_message_id)
        return [None] * len(marks)

    async def outbox_redact(self, event: IOEvent) -> None:
        await self._get_pool().execute("UPDATE outbox SET event = $2 WHERE event_id = $1", event.id, event_json(event))

    async def conversation_last_event(self, bot_id: str, channel: str, thread_id: str | None,
                                      user_id: str) -> int | None:
        rows = await self._fetch(
            "SELECT last_event_at FROM conversations WHERE bot_id = $1 AND channel = $2 AND user_id = $3"
            " AND thread_id = $4", bot_id, channel, user_id, thread_id or "")
        return int(rows[0][0]) if rows else None

    async def contact_link(self, members: list[tuple[str, str, str]]) -> str:
        if not members:
            raise ValueError("contact_link needs at least one member")
        now = self._clock()
        bots, channels, users = ([m[i] for m in members] for i in range(3))
        async with self._transaction() as conn:
            rows = await conn.fetch(
                "SELECT contact_id, MIN(created_at) AS first FROM contacts c"
                " JOIN unnest($1::text[], $2::text[], $3::text[]) AS m(b, ch, u)"
                " ON c.bot_id = m.b AND c.channel = m.ch AND c.user_id = m.u"
                " GROUP BY contact_id ORDER BY first, contact_id", bots, channels, users)
            existing = [r["contact_id"] for r in rows]
            contact = existing[0] if existing else new_contact_id()
            if len(existing) > 1:
                await conn.execute("UPDATE contacts SET contact_id = $1 WHERE contact_id = ANY($2::text[])",
                                   contact, existing[1:])
            await conn.execute(
                "INSERT INTO contacts (bot_id, channel, user_id, contact_id, created_at)"
                " SELECT b, ch, u, $4, $5 FROM unnest($1::text[], $2::text[], $3::text[]) AS m(b, ch, u)"
                " ON CONFLICT (bot_id, channel, user_id) DO UPDATE SET contact_id = excluded.contact_id",
                bots, channels, users, contact, now)
        return contact

    async def contact_of(self, bot_id: str, channel: str, user_id: str) -> ContactMembers:
        rows = await self._fetch(
            "SELECT c.contact_id, c.bot_id, c.channel, c.user_id FROM contacts c JOIN contacts me"
            " ON me.contact_id = c.contact_id WHERE me.bot_id = $1 AND me.channel = $2 AND me.user_id = $3"
            " ORDER BY c.created_at, c.bot_id, c.user_id", bot_id, channel, user_id)
        if not rows:
            return None, []
        return rows[0][0], [(r[1], r[2], r[3]) for r in rows]

    # -- users, conversations, messages ---------------------------------------------------------
    async def user_upsert(self, bot_id: str, channel: str, user_id: str, profile: dict[str, Any] | None) -> None:
        now = self._clock()
        await self._get_pool().execute(
            "INSERT INTO users (bot_id, channel, user_id, profile, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (bot_id, channel, user_id) DO UPDATE SET"
            " profile = COALESCE(excluded.profile, users.profile), updated_at = excluded.updated_at",
            bot_id,
            channel,
            user_id,
            None if profile is None else to_json(profile),
            now,
        )

    async def user_get(self, bot_id: str, channel: str, user_id: str) -> dict[str, Any] | None:
        rows = await self._fetch(
            "SELECT profile, created_at, updated_at FROM users WHERE bot_id = $1 AND channel = $2 AND user_id = $3",
            bot_id,
            channel,
            user_id,
        )
        if not rows:
            return None
        row = rows[0]
        return {
            "id": user_id,
            "channel": channel,
            "botId": bot_id,
            "profile": None if row["profile"] is None else json.loads(row["profile"]),
            "createdOn": int(row["created_at"]),
            "updatedOn": int(row["updated_at"]),
        }

    async def message_record(self, event: IOEvent, channel_message_id: str | None = None) -> None:
        async with self._transaction() as conn:
            await _record_message(conn, event, channel_message_id)

    async def messages_for(self, bot_id: str, channel: str, user_id: str, limit: int = 100, *,
                           thread_id: str | None = None, after_seq: int | None = None,
                           before_seq: int | None = None) -> list[dict[str, Any]]:
        sql, params, newest_first = history_query(bot_id, channel, user_id, limit, thread_id, after_seq,
                                                  before_seq, lambda n: f"${n}")
        rows = await self._fetch(sql, *params)
        ordered = reversed(rows) if newest_first else rows
        return [{**json.loads(row["event"]), "channelMessageId": row["channel_message_id"], "seq": row["seq"]}
                for row in ordered]

    async def erase_user(self, bot_id: str, channel: str, user_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        async with self._transaction() as conn:
            for table in ("users", "conversations", "messages", "inbox", "outbox", "contacts"):
                status = await conn.execute(
                    f"DELETE FROM {table} WHERE bot_id = $1 AND channel = $2 AND user_id = $3",
                    bot_id,
                    channel,
                    user_id,
                )
                counts[table] = _row_count(status)
        return counts

    async def purge(self, *, processed_before: int, messages_before: int,
                    failed_before: int | None = None) -> dict[str, int]:
        failed_before = processed_before if failed_before is None else failed_before
        # Finished rows are kept for storage.retention.events; failed and discarded ones for .failed.
        statements = [
            ("inbox", "DELETE FROM inbox WHERE status IN ('done', 'dropped', 'error') AND processed_at < $1",
             processed_before),
            ("inbox", "DELETE FROM inbox WHERE status IN ('failed', 'discarded') AND processed_at < $1",
             failed_before),
            ("outbox", "DELETE FROM outbox WHERE status IN ('sent', 'dropped') AND updated_at < $1", processed_before),
            ("outbox", "DELETE FROM outbox WHERE status IN ('failed', 'discarded') AND updated_at < $1",
             failed_before),
            ("messages", "DELETE FROM messages WHERE created_at < $1", messages_before),
        ]
        counts: dict[str, int] = {"inbox": 0, "outbox": 0, "messages": 0}
        async with self._transaction() as conn:
            for table, sql, before in statements:
                counts[table] += _row_count(await conn.execute(sql, before))
        return counts


_OUTBOX_COLUMNS = "seq, event, attempts, next_attempt_at, status, error"


async def _take_seqs(conn: asyncpg.Connection, table: str, count: int) -> list[int]:
    """``count`` numbers from the table's seq sequence, ascending.

    Taken up front and assigned in list order because PostgreSQL does not promise that a
    multi-row INSERT draws defaults in the order of its input: seq order is processing order.
    """
    if count == 0:
        return []
    rows = await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence($1, 'seq')) AS seq FROM generate_series(1, $2)", table, count
    )
    return sorted(int(row["seq"]) for row in rows)


def _outbox_row(row: asyncpg.Record) -> OutboxRow:
    return OutboxRow(
        seq=int(row["seq"]),
        event=event_from_json(row["event"]),
        attempts=int(row["attempts"]),
        next_attempt_at=int(row["next_attempt_at"]),
        status=row["status"],
        error=row["error"],
    )


def _row_count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 3".
    return int(status.rsplit(" ", 1)[-1])


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier quoted as-is (so ``schema`` keeps its case and any character)."""
    if not name or "\x00" in name:
        raise ValueError("a PostgreSQL schema name must be non-empty text without NUL characters")
    return '"' + name.replace('"', '""') + '"'


async def _mark_inbox(conn: asyncpg.Connection, event_ids: list[str], status: str, error: str | None,
                      now: int) -> None:
    await conn.execute(
        "UPDATE inbox SET status = $2, error = $3, processed_at = $4 WHERE event_id = ANY($1::text[])",
        event_ids,
        status,
        plain_error(error),
        now,
    )


async def _insert_outbox(conn: asyncpg.Connection, events: list[IOEvent], now: int,
                         encoded: list[str] | None = None) -> list[int]:
    if not events:
        return []
    texts = encoded if encoded is not None and len(encoded) == len(events) else [event_json(e) for e in events]
    seqs = await _take_seqs(conn, "outbox", len(events))
    await conn.execute(
        "INSERT INTO outbox (seq, event_id, bot_id, channel, thread_id, user_id, event, created_at,"
        " updated_at) SELECT s, i, b, c, t, u, e, $8, $8 FROM unnest($1::bigint[], $2::text[],"
        " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS r(s, i, b, c, t, u, e)",
        seqs,
        [e.id for e in events],
        [e.botId for e in events],
        [e.channel for e in events],
        [e.threadId for e in events],
        [e.target for e in events],
        texts,
        now,
    )
    return seqs


async def _record_message(conn: asyncpg.Connection, event: IOEvent, channel_message_id: str | None) -> None:
    await conn.execute(
        "INSERT INTO messages (event_id, bot_id, channel, thread_id, user_id, direction, type, event,"
        " preview, channel_message_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (event_id) DO UPDATE SET"
        " channel_message_id = COALESCE(excluded.channel_message_id, messages.channel_message_id)",
        *message_params(event, channel_message_id),
    )
    await conn.execute(
        "INSERT INTO conversations (bot_id, channel, user_id, thread_id, created_at, last_event_at)"
        " VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (bot_id, channel, user_id, thread_id) DO UPDATE SET"
        " last_event_at = GREATEST(conversations.last_event_at, excluded.last_event_at)",
        event.botId,
        event.channel,
        event.target,
        event.threadId or "",
        event.createdOn,
    )
