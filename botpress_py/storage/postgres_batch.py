"""A whole group commit of completions or sent marks as ONE PostgreSQL statement (one round trip).

Apart from postgres_statements.py so that each file keeps to one concern. The inbox marks,
history rows, conversations and replies of a batch are data-modifying CTEs of one statement:
PostgreSQL runs every one of them to completion, atomically (a statement is its own
transaction), so a failure fails the batch as a transaction would, and the group commit
splits it as before. The CTEs see the same snapshot and must not touch one row twice: a
batch that repeats an event id, which a statement could not apply in order, goes through
postgres.py's statement-per-kind path instead (``batchable``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..events import IOEvent
from .base import Completion, SentMark
from .common import ERROR_FOR_ROW, event_json, message_params, stored_error, stored_event
from .crypto import EventCipher
from .postgres_statements import conversation_spans


class _Statement:
    """CTEs and their parameters, numbered as they are added."""

    def __init__(self) -> None:
        self.ctes: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any, cast: str) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{cast}"

    def arrays(self, columns: Sequence[Sequence[Any]], casts: Sequence[str]) -> str:
        return ", ".join(self.arg(list(col), cast) for col, cast in zip(columns, casts, strict=True))

    def numbered(self, name: str, table: str, count_of: str, arrays: str, columns: str) -> None:
        """CTE ``name``: the rows of ``unnest(arrays)`` with fresh seqs of ``table`` in list order.

        As postgres_statements.with_seqs: numbers drawn once, sorted, the n-th smallest to the n-th row.
        """
        self.ctes += [
            f"{name}_s AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('{table}', 'seq')) AS seq"
            f" FROM generate_series(1, cardinality({count_of})))",
            f"{name}_o AS (SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM {name}_s)",
            f"{name} AS (SELECT o.seq, u.* FROM unnest({arrays}) WITH ORDINALITY AS u({columns}, n)"
            f" JOIN {name}_o o USING (n))",
        ]

    def history(self, messages: list[tuple[IOEvent, str | None]]) -> None:
        """History rows and their conversations (first and last activity merged per conversation)."""
        if not messages:
            return
        params = [message_params(event, cmid) for event, cmid in messages]
        columns = [[p[k] for p in params] for k in range(11)]
        arrays = self.arrays(columns, ["text[]"] * 10 + ["bigint[]"])
        self.numbered("h", "messages", arrays.split(",", 1)[0], arrays, "i, b, c, t, u, d, ty, e, p, cm, at")
        self.ctes.append(
            "hist AS (INSERT INTO messages (seq, event_id, bot_id, channel, thread_id, user_id, direction, type,"
            " event, preview, channel_message_id, created_at) SELECT seq, i, b, c, t, u, d, ty, e, p, cm, at FROM h"
            " ON CONFLICT (event_id) DO UPDATE SET"
            " channel_message_id = COALESCE(excluded.channel_message_id, messages.channel_message_id))")
        conversations = conversation_spans(messages)
        keys = list(conversations)
        arrays = self.arrays([*([k[n] for k in keys] for n in range(4)), [conversations[k][0] for k in keys],
                              [conversations[k][1] for k in keys]], ["text[]"] * 4 + ["bigint[]"] * 2)
        self.ctes.append(
            "conv AS (INSERT INTO conversations (bot_id, channel, user_id, thread_id, created_at, last_event_at)"
            f" SELECT * FROM unnest({arrays}) ON CONFLICT (bot_id, channel, user_id, thread_id) DO UPDATE SET"
            " last_event_at = GREATEST(conversations.last_event_at, excluded.last_event_at))")

    def sql(self, final: str) -> str:
        return ("WITH " + ", ".join(self.ctes) + " " if self.ctes else "") + final


def batchable(ids: Sequence[str], history_ids: Sequence[str]) -> bool:
    """Whether one statement can apply the batch: no event id updated, nor history row written, twice."""
    return len(set(ids)) == len(ids) and len(set(history_ids)) == len(history_ids)


def completions_statement(completions: list[Completion], outgoing_texts: list[str] | None, now: int,
                          cipher: EventCipher) -> tuple[str, list[Any]]:
    """(SQL, parameters) marking the batch's events, recording their history and storing their replies.

    The statement returns the replies' seqs (ascending = list order), one row each.
    """
    st = _Statement()
    errors = [stored_error(c.error, cipher) for c in completions]
    arrays = st.arrays([[c.event_id for c in completions], [c.status for c in completions],
                        [e[0] for e in errors], [e[1] for e in errors],
                        [event_json(c.redacted) if c.redacted is not None else None for c in completions]],
                       ["text[]"] * 5)
    # One UPDATE per row: the redacted form replaces the event in the same statement as the mark
    # (the error's form is chosen by the event as it was, as when they were two statements).
    st.ctes.append(
        "mark AS (UPDATE inbox SET status = m.s, error = " + ERROR_FOR_ROW.format(encrypted="m.x", clear="m.c")
        + f", processed_at = {st.arg(now, 'bigint')}, event = COALESCE(m.r, event)"
        f" FROM unnest({arrays}) AS m(i, s, c, x, r) WHERE inbox.event_id = m.i)")
    st.history([(c.message, None) for c in completions if c.message is not None])
    events = [e for c in completions for e in c.outgoing]
    if not events:
        return st.sql("SELECT NULL::bigint AS seq WHERE false"), st.args
    texts = outgoing_texts if outgoing_texts is not None and len(outgoing_texts) == len(events) \
        else [event_json(e) for e in events]
    arrays = st.arrays([[e.id for e in events], [e.botId for e in events], [e.channel for e in events],
                        [e.threadId for e in events], [e.target for e in events],
                        [stored_event(e, cipher, text) for e, text in zip(events, texts, strict=True)]],
                       ["text[]"] * 6)
    st.numbered("ob", "outbox", arrays.split(",", 1)[0], arrays, "i, b, c, t, u, e")
    at = st.arg(now, "bigint")
    st.ctes.append(
        "out AS (INSERT INTO outbox (seq, event_id, bot_id, channel, thread_id, user_id, event, created_at,"
        f" updated_at) SELECT seq, i, b, c, t, u, e, {at}, {at} FROM ob RETURNING seq)")
    return st.sql("SELECT seq FROM out ORDER BY seq"), st.args


def sent_statement(marks: list[SentMark], now: int) -> tuple[str, list[Any]]:
    """(SQL, parameters) marking delivered outgoing events sent and recording their history."""
    st = _Statement()
    arrays = st.arrays([[m.event.id for m in marks], [m.attempts for m in marks],
                        [m.channel_message_id for m in marks], [m.stored is not m.event for m in marks],
                        [event_json(m.stored) if m.stored is not m.event else None for m in marks]],
                       ["text[]", "int[]", "text[]", "bool[]", "text[]"])
    st.ctes.append(
        "sent AS (UPDATE outbox SET status = 'sent', attempts = m.a, next_attempt_at = 0, error = NULL,"
        f" channel_message_id = COALESCE(m.cm, outbox.channel_message_id), updated_at = {st.arg(now, 'bigint')},"
        " event = CASE WHEN m.changed THEN m.e ELSE outbox.event END"
        f" FROM unnest({arrays}) AS m(i, a, cm, changed, e) WHERE outbox.event_id = m.i)")
    st.history([(m.stored, m.channel_message_id) for m in marks])
    return st.sql("SELECT 1"), st.args
