"""The PostgreSQL backend (``DATABASE_URL=postgresql://...``), on an asyncpg connection pool.

This file holds the pool, the transactions and the calls of ``Storage`` on the path of events;
beside it: the statement helpers and row mapping (postgres_statements.py), the read before each
event's bot logic (postgres_context.py), failed events (postgres_failed.py), the purge and a
user's erase (postgres_maintenance.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

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
from .conversation_list import PostgresConversationList
from .crypto import EventCipher
from .errors import POSTGRES_NOT_NOW, postgres_unavailable
from .migrations import POSTGRES_MIGRATIONS, SCHEMA_MIGRATIONS_TABLE, Migration, missing_migrations
from .postgres_batch import batchable, completions_statement, sent_statement
from .postgres_cluster import PostgresCluster, event_partition
from .postgres_context import PostgresIncomingContext
from .postgres_failed import PostgresFailedEvents
from .postgres_maintenance import PostgresMaintenance
from .postgres_media import PostgresMedia
from .postgres_statements import (
    MAINTENANCE_SECONDS,
    OUTBOX_COLUMNS,
    allow_long_statements,
    insert_outbox,
    mark_inbox_many,
    mark_sent_many,
    outbox_row,
    quote_ident,
    record_message,
    record_messages,
    with_seqs,
)

log = logging.getLogger("botpress_py.storage")

# ON CONFLICT DO NOTHING without a target covers both unique keys: the event id and the (bot,
# channel, dedupe_key) partial index. RETURNING names the rows that went in.
_INBOX_ARRAYS = "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]"
_INSERT_INBOX = (
    "INSERT INTO inbox (seq, event_id, bot_id, channel, thread_id, user_id, dedupe_key, event, created_at)"
    " SELECT seq, i, b, c, t, u, d, e, $8 FROM r ON CONFLICT DO NOTHING RETURNING event_id"
)
_INSERT_INBOX_SQL = with_seqs("inbox", "i, b, c, t, u, d, e", _INBOX_ARRAYS) + _INSERT_INBOX
# Cluster mode: the same, after a lock per partition written to (ascending: no deadlock) and a
# notification per partition (delivered at commit, it wakes the partition's owner). Inserts into
# one partition are thereby serialised: a later seq never becomes visible before an earlier one of
# its partition, so an owner reading past its cursor misses nothing (docs/cluster.md). One
# statement is its own transaction: the locks are held from its start to its commit, no longer.
_INSERT_INBOX_LOCKED_SQL = with_seqs(
    "inbox", "i, b, c, t, u, d, e", _INBOX_ARRAYS,
    before="SELECT pg_advisory_xact_lock($9::int, p), pg_notify($10, 'inbox:' || p::text)"
           " FROM unnest($11::int[]) WITH ORDINALITY AS t(p, n) ORDER BY n",
) + _INSERT_INBOX

# Any constant works: it only has to be the same for every botpress-py migrating this database.
_MIGRATION_LOCK = 0x62707079  # "bpy"


def _sql_and_args(statement: tuple[str, list[Any]]) -> list[Any]:
    return [statement[0], *statement[1]]


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs before its next user: only an unfinished transaction undone.

    asyncpg's default reset sends "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL"
    at every release: a round trip per storage call, more than one per answered event. Nothing
    here leaves session state on a pooled connection (settings are per connection from the start,
    or SET LOCAL; LISTEN and session advisory locks need a connection of their own), so the
    transaction status, which the driver knows without asking, is all there is to check.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class PostgresStorage(PostgresFailedEvents, PostgresMaintenance, PostgresConversationList, PostgresIncomingContext,
                      PostgresMedia, PostgresCluster,
                      Storage):
    """Storage in PostgreSQL, optionally inside its own ``schema`` (created when missing).

    Seq numbers come from sequences, which hand them out before commit: under concurrent
    writers a smaller seq can become visible after a larger one. ``after_seq`` is therefore
    for paging through what is stored (e.g. replay at start), not for tailing live inserts.

    No call waits forever for the database: taking a pooled connection (or making one), a lock
    and a statement each give up after ``query_timeout`` seconds (pool acquire timeout, server
    ``lock_timeout`` and ``statement_timeout``, and the driver's command timeout for a server
    that stopped answering), with StorageUnavailable naming the cause.
    """

    kind = "postgres"
    migrations: tuple[Migration, ...] = POSTGRES_MIGRATIONS

    def __init__(
        self,
        dsn: str,
        schema: str | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        max_connections: int = 10,
        cipher: EventCipher | None = None,
        query_timeout: float = 30.0,
    ) -> None:
        self._dsn = dsn  # may hold a password: never put it in a message or a repr
        self.schema = schema or None
        self._clock = clock
        self._max_connections = max_connections
        # See SQLiteStorage: without a key, masked events are encrypted with one for this process only.
        self.cipher = cipher or EventCipher(os.urandom(32), "a key generated for this process only")
        self.query_timeout = query_timeout
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"<PostgresStorage schema={self.schema or 'default'}>"

    def open_failure_hint(self) -> str:
        return ("check DATABASE_URL (host, port, database, user and password), that PostgreSQL is running and "
                "reachable from this machine, and that its role may connect and create and write tables"
                + (f" in schema {self.schema!r} (BP_DATABASE_SCHEMA)" if self.schema else ""))

    # -- connection and transactions -------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        bound_ms = str(max(1, int(self.query_timeout * 1000)))
        # The server gives up on a lock or a statement by itself; the driver's command timeout (a
        # little longer) covers a server that stopped answering at all.
        server_settings: dict[str, str] = {"lock_timeout": bound_ms, "statement_timeout": bound_ms}
        if self.schema:
            await self._create_schema()
            server_settings["search_path"] = quote_ident(self.schema)
        pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=self._max_connections, server_settings=server_settings,
            timeout=self.query_timeout, command_timeout=self.query_timeout + 1, reset=_reset_connection,
        )
        try:
            self._pool = pool
            await self._migrate()
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def _create_schema(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=self.query_timeout, command_timeout=self.query_timeout)
        try:
            # Two servers starting together may both try: the loser's duplicate is fine.
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema or '')}")
            except asyncpg.UniqueViolationError:
                pass
        finally:
            await conn.close()

    async def close(self) -> None:
        self._context_reads = None  # its futures belong to this event loop
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self!r} is not open: call await storage.open() first")
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, waited for at most ``query_timeout``; "not now" errors become StorageUnavailable."""
        pool = self._get_pool()
        try:
            async with pool.acquire(timeout=self.query_timeout) as conn:
                yield conn
        except POSTGRES_NOT_NOW as exc:
            raise postgres_unavailable(exc, self.query_timeout) from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            return await conn.fetch(sql, *args)

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        async with self._connection() as conn:
            return await conn.fetchval(sql, *args)

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._connection() as conn:
            return await conn.execute(sql, *args)

    async def _migrate(self) -> None:
        async with self._connection() as conn:
            while True:
                async with conn.transaction():
                    await allow_long_statements(conn)
                    # The advisory lock (released at commit) serialises servers migrating the same
                    # database; reading the version after taking it sees their work.
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK,
                                       timeout=MAINTENANCE_SECONDS)
                    await conn.execute(SCHEMA_MIGRATIONS_TABLE["postgres"])
                    current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                    todo = missing_migrations(self.migrations, int(current))
                    if not todo:
                        return
                    migration = todo[0]
                    for statement in migration.statements:
                        await conn.execute(statement, timeout=MAINTENANCE_SECONDS)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                        migration.version,
                        self._clock(),
                    )

    async def schema_version(self) -> int:
        return int(await self._fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))

    # -- key-value ----------------------------------------------------------------------------
    async def kv_get(self, namespace: str, key: str) -> Any | None:
        text = await self._fetchval("SELECT value FROM kv WHERE namespace = $1 AND key = $2", namespace, key)
        return None if text is None else json.loads(text)

    async def kv_set_many(self, namespace: str, items: dict[str, Any]) -> None:
        if not items:
            return
        now = self._clock()
        rows = [(namespace, key, to_json(value), now) for key, value in items.items()]
        # executemany runs in one transaction: all keys or none.
        async with self._connection() as conn:
            await conn.executemany(
                "INSERT INTO kv (namespace, key, value, updated_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                rows,
            )

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._execute("DELETE FROM kv WHERE namespace = $1 AND key = $2", namespace, key)

    # -- inbox ----------------------------------------------------------------------------------
    async def inbox_add(self, events: list[IOEvent]) -> list[bool]:
        if not events:
            return []
        firsts = first_occurrences(events)
        fresh = [e for e, first in zip(events, firsts, strict=True) if first]
        args = ([e.id for e in fresh], [e.botId for e in fresh], [e.channel for e in fresh],
                [e.threadId for e in fresh], [e.target for e in fresh], [e.dedupeKey for e in fresh],
                [stored_event(e, self.cipher) for e in fresh], self._clock())
        if not self.cluster_inserts:
            # One statement, so no transaction around it: atomic by itself, one round trip.
            rows = await self._fetch(_INSERT_INBOX_SQL, *args)
        else:
            rows = await self._fetch(_INSERT_INBOX_LOCKED_SQL, *args, self.cluster_lock_space, self.cluster_channel,
                                     sorted({event_partition(e) for e in fresh}))
        inserted = {row["event_id"] for row in rows}
        return [first and e.id in inserted for e, first in zip(events, firsts, strict=True)]

    async def inbox_pending_rows(self, limit: int = 1000, after_seq: int = 0,
                                 bot_id: str | None = None) -> list[PendingEvent]:
        if bot_id is None:
            rows = await self._fetch(
                "SELECT event_id, event, seq, attempts FROM inbox WHERE status = 'pending' AND seq > $1"
                " ORDER BY seq LIMIT $2",
                after_seq,
                limit,
            )
        else:
            rows = await self._fetch(
                "SELECT event_id, event, seq, attempts FROM inbox WHERE status = 'pending' AND bot_id = $1"
                " AND seq > $2 ORDER BY seq LIMIT $3", bot_id, after_seq, limit)
        events, unreadable = readable_rows([(row["event_id"], row["event"], (row["seq"], row["attempts"]))
                                            for row in rows], self.cipher)
        await self._fail_unreadable("inbox", unreadable)
        return [PendingEvent(int(seq), event, int(attempts)) for event, (seq, attempts) in events]

    async def inbox_pending_counts(self) -> dict[str, int]:
        rows = await self._fetch("SELECT bot_id, COUNT(*) AS n FROM inbox WHERE status = 'pending' GROUP BY bot_id")
        return {row["bot_id"]: int(row["n"]) for row in rows}

    async def inbox_complete(self, completions: list[Completion]) -> list[list[int]]:
        for completion in completions:
            require_status(completion.status, INBOX_DONE_STATUSES, "inbox")
        if not completions:
            return []
        now = self._clock()
        ids = [c.event_id for c in completions]
        if batchable(ids, [c.message.id for c in completions if c.message is not None]):
            # The whole batch in one statement: one round trip (two more in cluster mode, for the fence).
            sql, args = completions_statement(completions, outgoing_encodings(completions), now, self.cipher)
            if self.cluster_fence is None:
                rows = await self._fetch(sql, *args)
            else:
                async with self._transaction() as conn:
                    await self.cluster_check_fence(conn, ids)
                    rows = await conn.fetch(sql, *args)
            return split_by_sizes([int(row["seq"]) for row in rows], [len(c.outgoing) for c in completions])
        # An event id twice in the batch: a statement per kind of row, applied in order.
        async with self._transaction() as conn:
            await self.cluster_check_fence(conn, ids)
            await mark_inbox_many(conn, [(c.event_id, c.status, stored_error(c.error, self.cipher))
                                         for c in completions], now)
            redacted = [(c.event_id, event_json(c.redacted)) for c in completions if c.redacted is not None]
            if redacted:
                await conn.executemany("UPDATE inbox SET event = $2 WHERE event_id = $1", redacted)
            await record_messages(conn, [(c.message, None) for c in completions if c.message is not None])
            seqs = await insert_outbox(conn, [e for c in completions for e in c.outgoing], now, self.cipher,
                                        outgoing_encodings(completions))
        return split_by_sizes(seqs, [len(c.outgoing) for c in completions])

    # -- outbox ---------------------------------------------------------------------------------
    async def outbox_add(self, events: list[IOEvent], encoded: list[str] | None = None) -> list[int]:
        if not events:
            return []
        async with self._transaction() as conn:
            return await insert_outbox(conn, events, self._clock(), self.cipher, encoded)

    async def outbox_pending(self, limit: int = 1000, after_seq: int = 0) -> list[OutboxRow]:
        rows = await self._fetch(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND seq > $1 ORDER BY seq LIMIT $2",
            after_seq,
            limit,
        )
        good, unreadable = readable_rows([(row["event_id"], row["event"], row) for row in rows], self.cipher)
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
        await self._execute(
            "UPDATE outbox SET status = $2, attempts = $3, next_attempt_at = $4, error = "
            + ERROR_FOR_ROW.format(encrypted="$8::text", clear="$5::text")
            + ", channel_message_id = COALESCE($6, channel_message_id), updated_at = $7 WHERE event_id = $1",
            event_id,
            status,
            attempts,
            next_attempt_at,
            clear,
            channel_message_id,
            self._clock(),
            encrypted,
        )

    async def outbox_get(self, event_id: str) -> OutboxRow | None:
        rows = await self._fetch(f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE event_id = $1", event_id)
        if not rows:
            return None
        return outbox_row(event_from_stored(rows[0]["event"], self.cipher), rows[0], self.cipher)

    async def outbox_sent_many(self, marks: list[SentMark]) -> list[None]:
        if not marks:
            return []
        now = self._clock()
        ids = [m.event.id for m in marks]
        if batchable(ids, ids):
            await self._fetch(*_sql_and_args(sent_statement(marks, now)))
            return [None] * len(marks)
        async with self._transaction() as conn:  # an event id twice: in order, a statement per kind
            await mark_sent_many(conn, marks, now)
            await record_messages(conn, [(m.stored, m.channel_message_id) for m in marks])
        return [None] * len(marks)

    async def outbox_redact(self, event: IOEvent) -> None:
        await self._execute("UPDATE outbox SET event = $2 WHERE event_id = $1", event.id, event_json(event))

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
        await self._execute(
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
            await record_message(conn, event, channel_message_id)

    async def messages_for(self, bot_id: str, channel: str, user_id: str, limit: int = 100, *,
                           thread_id: str | None = None, after_seq: int | None = None,
                           before_seq: int | None = None) -> list[dict[str, Any]]:
        sql, params, newest_first = history_query(bot_id, channel, user_id, limit, thread_id, after_seq,
                                                  before_seq, lambda n: f"${n}")
        rows = await self._fetch(sql, *params)
        ordered = reversed(rows) if newest_first else rows
        return [{**json.loads(row["event"]), "channelMessageId": row["channel_message_id"], "seq": row["seq"]}
                for row in ordered]


