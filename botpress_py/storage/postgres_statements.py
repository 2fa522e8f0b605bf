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


async def take_seqs(conn: asyncpg.Connection, table: str, count: int) -> list[int]:
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


async def mark_inbox(conn: asyncpg.Connection, event_ids: list[str], status: str,
                     errors: tuple[str | None, str | None], now: int) -> None:
    clear, encrypted = errors
    await conn.execute(
        "UPDATE inbox SET status = $2, error = " + ERROR_FOR_ROW.format(encrypted="$5::text", clear="$3::text")
        + ", processed_at = $4 WHERE event_id = ANY($1::text[])",
        event_ids,
        status,
        clear,
        now,
        encrypted,
    )


async def insert_outbox(conn: asyncpg.Connection, events: list[IOEvent], now: int, cipher: EventCipher,
                        encoded: list[str] | None = None) -> list[int]:
    if not events:
        return []
    texts = encoded if encoded is not None and len(encoded) == len(events) else [event_json(e) for e in events]
    seqs = await take_seqs(conn, "outbox", len(events))
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
        [stored_event(e, cipher, text) for e, text in zip(events, texts, strict=True)],
        now,
    )
    return seqs


async def record_message(conn: asyncpg.Connection, event: IOEvent, channel_message_id: str | None) -> None:
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
