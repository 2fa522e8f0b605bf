"""PostgresStorage's SQL: statement helpers run on a connection in a transaction, and row mapping.

Apart from postgres.py (the pool, transactions and the calls of ``Storage``) so that each file
keeps to one concern. Every helper taking a connection runs inside the transaction its caller
opened; none opens one itself.
"""

from __future__ import annotations

import asyncpg

from ..events import IOEvent
from .base import OutboxRow
from .common import ERROR_FOR_ROW, error_from_stored, event_json, message_params, stored_event
from .crypto import EventCipher

# Migrations and the purge may rightly take long on a big database (an index build, a day of rows):
# they are not bounded by storage.queryTimeout, only by this.
MAINTENANCE_SECONDS = 3600.0

OUTBOX_COLUMNS = "seq, event_id, event, attempts, next_attempt_at, status, error"


async def allow_long_statements(conn: asyncpg.Connection) -> None:
    """Lift storage.queryTimeout for the rest of this transaction (maintenance work, not a request's)."""
    bound = int(MAINTENANCE_SECONDS * 1000)
    await conn.execute(f"SET LOCAL statement_timeout = {bound}; SET LOCAL lock_timeout = {bound}")


def with_seqs(table: str, columns: str, arrays: str) -> str:
    """A CTE prefix numbering the rows of ``unnest(arrays)`` with fresh seqs of ``table``, in list order.

    PostgreSQL does not promise that a multi-row INSERT draws defaults in the order of its input,
    and seq order is processing order: the numbers are drawn first (``MATERIALIZED``: once), sorted,
    and the n-th smallest goes to the n-th row. Drawing them in the same statement as the INSERT
    saves the round trip a separate ``nextval`` query would cost. The result is the CTE ``r``
    with ``columns`` plus ``seq``.
    """
    return (
        f"WITH s AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('{table}', 'seq')) AS seq"
        " FROM generate_series(1, cardinality($1::text[]))),"
        " o AS (SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM s),"
        f" r AS (SELECT o.seq, u.* FROM unnest({arrays}) WITH ORDINALITY AS u({columns}, n) JOIN o USING (n)) "
    )


def outbox_row(event: IOEvent, row: asyncpg.Record, cipher: EventCipher) -> OutboxRow:
    return OutboxRow(
        seq=int(row["seq"]),
        event=event,
        attempts=int(row["attempts"]),
        next_attempt_at=int(row["next_attempt_at"]),
        status=row["status"],
        error=error_from_stored(row["error"], cipher),
    )


def row_count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 3".
    return int(status.rsplit(" ", 1)[-1])


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier quoted as-is (so ``schema`` keeps its case and any character)."""
    if not name or "\x00" in name:
        raise ValueError("a PostgreSQL schema name must be non-empty text without NUL characters")
    return '"' + name.replace('"', '""') + '"'


MARK_INBOX_SQL = (
    "UPDATE inbox SET status = $2, error = " + ERROR_FOR_ROW.format(encrypted="$5::text", clear="$3::text")
    + ", processed_at = $4 WHERE event_id = ANY($1::text[])"
)


async def mark_inbox(conn: asyncpg.Connection, event_ids: list[str], status: str,
                     errors: tuple[str | None, str | None], now: int) -> None:
    clear, encrypted = errors
    await conn.execute(MARK_INBOX_SQL, event_ids, status, clear, now, encrypted)


async def mark_inbox_many(conn: asyncpg.Connection, marks: list[tuple[str, str, tuple[str | None, str | None]]],
                          now: int) -> None:
    """Each (event id, status, errors) in one pipelined round trip (executemany), in order."""
    if marks:
        await conn.executemany(MARK_INBOX_SQL, [([event_id], status, errors[0], now, errors[1])
                                                for event_id, status, errors in marks])


_INSERT_OUTBOX_SQL = (
    with_seqs("outbox", "i, b, c, t, u, e", "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]")
    + "INSERT INTO outbox (seq, event_id, bot_id, channel, thread_id, user_id, event, created_at, updated_at)"
    " SELECT seq, i, b, c, t, u, e, $7, $7 FROM r RETURNING seq"
)


async def insert_outbox(conn: asyncpg.Connection, events: list[IOEvent], now: int, cipher: EventCipher,
                        encoded: list[str] | None = None) -> list[int]:
    """Insert ``events`` in one statement; their seqs, in list order (ascending)."""
    if not events:
        return []
    texts = encoded if encoded is not None and len(encoded) == len(events) else [event_json(e) for e in events]
    rows = await conn.fetch(
        _INSERT_OUTBOX_SQL,
        [e.id for e in events],
        [e.botId for e in events],
        [e.channel for e in events],
        [e.threadId for e in events],
        [e.target for e in events],
        [stored_event(e, cipher, text) for e, text in zip(events, texts, strict=True)],
        now,
    )
    return sorted(int(row["seq"]) for row in rows)


_MESSAGE_SQL = (
    "INSERT INTO messages (event_id, bot_id, channel, thread_id, user_id, direction, type, event,"
    " preview, channel_message_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    " ON CONFLICT (event_id) DO UPDATE SET"
    " channel_message_id = COALESCE(excluded.channel_message_id, messages.channel_message_id)"
)
_CONVERSATION_SQL = (
    "INSERT INTO conversations (bot_id, channel, user_id, thread_id, created_at, last_event_at)"
    " VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (bot_id, channel, user_id, thread_id) DO UPDATE SET"
    " last_event_at = GREATEST(conversations.last_event_at, excluded.last_event_at)"
)


async def record_message(conn: asyncpg.Connection, event: IOEvent, channel_message_id: str | None) -> None:
    await record_messages(conn, [(event, channel_message_id)])


async def record_messages(conn: asyncpg.Connection, messages: list[tuple[IOEvent, str | None]]) -> None:
    """History rows and their conversations' last activity: two pipelined round trips for any number.

    executemany sends every row's execution before reading any result (asyncpg pipelines it), and
    runs them in order, each as its own statement: a conversation met twice is simply updated twice.
    """
    if not messages:
        return
    await conn.executemany(_MESSAGE_SQL, [message_params(event, cmid) for event, cmid in messages])
    await conn.executemany(_CONVERSATION_SQL, [(e.botId, e.channel, e.target, e.threadId or "", e.createdOn)
                                               for e, _ in messages])
