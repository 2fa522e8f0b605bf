"""PostgresStorage's read before every incoming event's bot logic: conversation, user and contact at once.

Apart from postgres.py so that each file keeps to one concern. Three separate reads would cost
three network round trips per event; this is one query whatever exists (a missing conversation,
user or contact reads as NULLs). Under load many events wait for this read at the same time:
the reads asked for in one turn of the event loop go as one query over arrays (GroupCommit,
used here for reads), so the database and the driver pay per batch, not per event.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .base import ContactMembers, IncomingContext
from .context_reads import BatchedContextReads, ContextKey

if TYPE_CHECKING:
    import asyncpg

# The contact's members come as parallel arrays, in the order ``contact_of`` gives them.
_MEMBER_ORDER = "ORDER BY c.created_at, c.bot_id, c.user_id"
INCOMING_CONTEXT_SQL = (
    "SELECT k.n, (SELECT last_event_at FROM conversations WHERE bot_id = k.b AND channel = k.c AND user_id = k.u"
    " AND thread_id = k.t) AS last_event_at, usr.profile, usr.created_at, usr.updated_at,"
    " m.contact_ids, m.member_bots, m.member_channels, m.member_users"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS k(b, c, u, t, n)"
    " LEFT JOIN users usr ON usr.bot_id = k.b AND usr.channel = k.c AND usr.user_id = k.u"
    f" CROSS JOIN LATERAL (SELECT array_agg(c.contact_id {_MEMBER_ORDER}) AS contact_ids,"
    f" array_agg(c.bot_id {_MEMBER_ORDER}) AS member_bots, array_agg(c.channel {_MEMBER_ORDER}) AS member_channels,"
    f" array_agg(c.user_id {_MEMBER_ORDER}) AS member_users"
    " FROM contacts c JOIN contacts me ON me.contact_id = c.contact_id"
    " WHERE me.bot_id = k.b AND me.channel = k.c AND me.user_id = k.u) AS m"
    " ORDER BY k.n"
)

class PostgresIncomingContext(BatchedContextReads):
    if TYPE_CHECKING:
        async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]: ...

    async def _read_contexts(self, keys: list[ContextKey]) -> list[IncomingContext]:
        rows = await self._fetch(INCOMING_CONTEXT_SQL, *([k[i] for k in keys] for i in range(4)))
        return [_context(key, row) for key, row in zip(keys, rows, strict=True)]


def _context(key: ContextKey, row: asyncpg.Record) -> IncomingContext:
    bot_id, channel, user_id, _ = key
    user = None if row["created_at"] is None else {
        "id": user_id, "channel": channel, "botId": bot_id,
        "profile": None if row["profile"] is None else json.loads(row["profile"]),
        "createdOn": int(row["created_at"]), "updatedOn": int(row["updated_at"]),
    }
    contact: ContactMembers = (None, [])
    if row["contact_ids"]:
        contact = (row["contact_ids"][0], list(zip(row["member_bots"], row["member_channels"],
                                                   row["member_users"], strict=True)))
    last = row["last_event_at"]
    return IncomingContext(None if last is None else int(last), user, contact)
