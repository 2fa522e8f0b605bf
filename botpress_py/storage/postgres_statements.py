"""PostgresStorage's SQL: statement helpers run on a connection in a transaction, and row mapping.

Apart from postgres.py (the pool, transactions and the calls of ``Storage``) so that each file
keeps to one concern. Every helper taking a connection runs inside the transaction its caller
opened; none opens one itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ..events import IOEvent
from .base import OutboxRow, SentMark
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


def with_seqs(table: str, columns: str, arrays: str, *, before: str = "") -> str:
    """A CTE prefix numbering the rows of ``unnest(arrays)`` with fresh seqs of ``table``, in list order.

    PostgreSQL does not promise that a multi-row INSERT draws defaults in the order of its input,
    and seq order is processing order: the numbers are drawn first (``MATERIALIZED``: once), sorted,
    and the n-th smallest goes to the n-th row. Drawing them in the same statement as the INSERT
    saves the round trip a separate ``nextval`` query would cost. The result is the CTE ``r``
    with ``columns`` plus ``seq``.

    ``before``: a MATERIALIZED CTE named ``b`` that must run before any number is drawn (locks):
    the numbers are drawn only once a scan of it is done (a one-time condition on its count).
    """
    first = f"b AS MATERIALIZED ({before})," if before else ""
    after_b = " WHERE (SELECT count(*) FROM b) >= 0" if before else ""
    return (
        f"WITH {first} s AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('{table}', 'seq')) AS seq"
        f" FROM generate_series(1, cardinality($1::text[])){after_b}),"
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


_MARK_INBOX_MANY_SQL = (
    "UPDATE inbox SET status = m.s, error = " + ERROR_FOR_ROW.format(encrypted="m.x", clear="m.c")
    + ", processed_at = $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS m(i, s, c, x)"
    " WHERE inbox.event_id = m.i"
)


async def mark_inbox_many(conn: asyncpg.Connection, marks: list[tuple[str, str, tuple[str | None, str | None]]],
                          now: int) -> None:
    """Each (event id, status, errors): one statement, or one per mark when an event id repeats.

    An UPDATE ... FROM with two rows for one event would apply either; one by one, the last wins.
    """
    if not marks:
        return
    if len({event_id for event_id, _, _ in marks}) < len(marks):
        await conn.executemany(MARK_INBOX_SQL, [([event_id], status, errors[0], now, errors[1])
                                                for event_id, status, errors in marks])
        return
    await conn.execute(_MARK_INBOX_MANY_SQL, [m[0] for m in marks], [m[1] for m in marks],
                       [m[2][0] for m in marks], [m[2][1] for m in marks], now)


_SENT_SQL = (
    "UPDATE outbox SET status = 'sent', attempts = $2, next_attempt_at = 0, error = NULL,"
    " channel_message_id = COALESCE($3, channel_message_id), updated_at = $4,"
    " event = CASE WHEN $5 THEN $6 ELSE event END WHERE event_id = $1"
)
_SENT_MANY_SQL = (
    "UPDATE outbox SET status = 'sent', attempts = m.a, next_attempt_at = 0, error = NULL,"
    " channel_message_id = COALESCE(m.cm, outbox.channel_message_id), updated_at = $6,"
    " event = CASE WHEN m.changed THEN m.e ELSE outbox.event END"
    " FROM unnest($1::text[], $2::int[], $3::text[], $4::bool[], $5::text[]) AS m(i, a, cm, changed, e)"
    " WHERE outbox.event_id = m.i"
)


async def mark_sent_many(conn: asyncpg.Connection, marks: list[SentMark], now: int) -> None:
    """Outgoing events delivered: one statement, or one per mark when an event id repeats (the last wins)."""
    rows = [(m.event.id, m.attempts, m.channel_message_id, m.stored is not m.event,
             event_json(m.stored) if m.stored is not m.event else None) for m in marks]
    if len({row[0] for row in rows}) < len(rows):
        await conn.executemany(_SENT_SQL, [(i, a, cm, now, changed, e) for i, a, cm, changed, e in rows])
        return
    await conn.execute(_SENT_MANY_SQL, *([row[k] for row in rows] for k in range(5)), now)


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
# History seqs in list order too: the order of a conversation's messages is their seq order.
_MESSAGES_SQL = (
    with_seqs("messages", "i, b, c, t, u, d, ty, e, p, cm, at",
              "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],"
              " $9::text[], $10::text[], $11::bigint[]")
    + "INSERT INTO messages (seq, event_id, bot_id, channel, thread_id, user_id, direction, type, event, preview,"
    " channel_message_id, created_at) SELECT seq, i, b, c, t, u, d, ty, e, p, cm, at FROM r"
    " ON CONFLICT (event_id) DO UPDATE SET"
    " channel_message_id = COALESCE(excluded.channel_message_id, messages.channel_message_id)"
)
_CONVERSATIONS_SQL = (
    "INSERT INTO conversations (bot_id, channel, user_id, thread_id, created_at, last_event_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])"
    " ON CONFLICT (bot_id, channel, user_id, thread_id) DO UPDATE SET"
    " last_event_at = GREATEST(conversations.last_event_at, excluded.last_event_at)"
)


async def record_message(conn: asyncpg.Connection, event: IOEvent, channel_message_id: str | None) -> None:
    await record_messages(conn, [(event, channel_message_id)])


ConversationKey = tuple[str, str, str, str]  # bot, channel, user, thread


def conversation_spans(messages: Sequence[tuple[IOEvent, str | None]]) -> dict[ConversationKey, tuple[int, int]]:
    """(bot, channel, user, thread) -> (first, last) createdOn of these messages: their conversations' rows."""
    spans: dict[ConversationKey, tuple[int, int]] = {}
    for event, _ in messages:
        key = (event.botId, event.channel, event.target, event.threadId or "")
        first, last = spans.get(key, (event.createdOn, event.createdOn))
        spans[key] = (min(first, event.createdOn), max(last, event.createdOn))
    return spans

async def record_messages(conn: asyncpg.Connection, messages: list[tuple[IOEvent, str | None]]) -> None:
    """History rows and their conversations' last activity: two statements for any number.

    A multi-row upsert may not touch one row twice: conversations are merged here first (first
    and last activity), and when one event id repeats its history rows go one by one, in order
    (executemany), as the single-row statement always did.
    """
    if not messages:
        return
    params = [message_params(event, cmid) for event, cmid in messages]
    if len({p[0] for p in params}) < len(params):
        await conn.executemany(_MESSAGE_SQL, params)
    else:
        await conn.execute(_MESSAGES_SQL, *([p[k] for p in params] for k in range(11)))
    conversations = conversation_spans(messages)
    keys = list(conversations)
    await conn.execute(_CONVERSATIONS_SQL, *([k[n] for k in keys] for n in range(4)),
                       [conversations[k][0] for k in keys], [conversations[k][1] for k in keys])
