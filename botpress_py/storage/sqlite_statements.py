"""SQLiteStorage's SQL: statement texts, statement helpers run inside a transaction, and row mapping.

Apart from sqlite.py (the connection, threads and the calls of ``Storage``) so that each file keeps
to one concern. Every function taking a ``Db`` runs on the writer or reader thread, inside the
transaction or read its caller handed over; none opens one itself.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..events import IOEvent
from .base import ContactMembers, OutboxRow
from .common import ERROR_FOR_ROW, chunks, error_from_stored, message_params, stored_event
from .crypto import EventCipher

Db = sqlite3.Connection

# Rows per multi-row INSERT: 100 rows of at most 9 parameters stay under the 999 bound
# variables of older SQLite builds.
ROWS_PER_INSERT = 100
IDS_PER_STATEMENT = 500

OUTBOX_COLUMNS = "seq, event_id, event, attempts, next_attempt_at, status, error"
LAST_EVENT_SQL = ("SELECT last_event_at FROM conversations WHERE bot_id = ? AND channel = ? AND user_id = ?"
                  " AND thread_id = ?")
USER_SQL = "SELECT profile, created_at, updated_at FROM users WHERE bot_id = ? AND channel = ? AND user_id = ?"
CONTACT_SQL = ("SELECT c.contact_id, c.bot_id, c.channel, c.user_id FROM contacts c JOIN contacts me"
               " ON me.contact_id = c.contact_id WHERE me.bot_id = ? AND me.channel = ? AND me.user_id = ?"
               " ORDER BY c.created_at, c.bot_id, c.user_id")


def user_dict(bot_id: str, channel: str, user_id: str, row: Sequence[Any]) -> dict[str, Any]:
    profile, created, updated = row
    return {
        "id": user_id,
        "channel": channel,
        "botId": bot_id,
        "profile": None if profile is None else json.loads(profile),
        "createdOn": int(created),
        "updatedOn": int(updated),
    }


def contact_members(rows: Sequence[Sequence[Any]]) -> ContactMembers:
    if not rows:
        return None, []
    return rows[0][0], [(r[1], r[2], r[3]) for r in rows]


KV_UPSERT = ("INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
             "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")


def outbox_row(event: IOEvent, row: Sequence[Any], cipher: EventCipher) -> OutboxRow:
    seq, _, _, attempts, next_attempt_at, status, error = row
    return OutboxRow(
        seq=int(seq),
        event=event,
        attempts=int(attempts),
        next_attempt_at=int(next_attempt_at),
        status=status,
        error=error_from_stored(error, cipher),
    )


def run_for_effect(method: Callable[..., sqlite3.Cursor], sql: str, params: Any) -> None:
    """Run a statement for its effect; its cursor is closed here, on the writer thread."""
    method(sql, params).close()


def question_marks(count: int) -> str:
    return ", ".join("?" * count)


def placeholders(rows: int, columns: int) -> str:
    one = f"({question_marks(columns)})"
    return ", ".join([one] * rows)


def flatten(rows: Iterable[Sequence[Any]]) -> list[Any]:
    return [value for row in rows for value in row]


def current_version(db: Db) -> int:
    return int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])


def mark_inbox(db: Db, event_ids: list[str], status: str, errors: tuple[str | None, str | None], now: int) -> None:
    clear, encrypted = errors
    error = ERROR_FOR_ROW.format(encrypted="?", clear="?")
    for chunk in chunks(event_ids, IDS_PER_STATEMENT):
        db.execute(f"UPDATE inbox SET status = ?, error = {error}, processed_at = ?"
                   f" WHERE event_id IN ({question_marks(len(chunk))})", (status, encrypted, clear, now, *chunk))


def insert_outbox(db: Db, events: list[IOEvent], now: int, cipher: EventCipher,
                  encoded: list[str] | None = None) -> list[int]:
    texts: list[str | None] = list(encoded) if encoded is not None and len(encoded) == len(events) \
        else [None] * len(events)
    rows = [(e.id, e.botId, e.channel, e.threadId, e.target, stored_event(e, cipher, text), now, now)
            for e, text in zip(events, texts, strict=True)]
    seqs: dict[str, int] = {}
    for chunk in chunks(rows, ROWS_PER_INSERT):
        # A multi-row VALUES inserts in list order, so seq follows the order of `events`.
        returned = db.execute(
            "INSERT INTO outbox (event_id, bot_id, channel, thread_id, user_id, event, created_at,"
            " updated_at) VALUES " + placeholders(len(chunk), 8) + " RETURNING event_id, seq",
            flatten(chunk),
        ).fetchall()
        seqs.update((event_id, int(seq)) for event_id, seq in returned)
    return [seqs[e.id] for e in events]


def record_message(db: Db, event: IOEvent, channel_message_id: str | None) -> None:
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
