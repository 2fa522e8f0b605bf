"""PostgresStorage's read before every incoming event's bot logic: conversation, user and contact at once.

Apart from postgres.py so that each file keeps to one concern. Three separate reads would cost
three network round trips per event; this is one query whatever exists (a missing conversation,
user or contact reads as NULLs).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .base import ContactMembers, IncomingContext

if TYPE_CHECKING:
    import asyncpg

# The contact's members come as parallel arrays, in the order ``contact_of`` gives them.
_MEMBER_ORDER = "ORDER BY c.created_at, c.bot_id, c.user_id"
INCOMING_CONTEXT_SQL = (
    "SELECT (SELECT last_event_at FROM conversations WHERE bot_id = $1 AND channel = $2 AND user_id = $3"
    " AND thread_id = $4) AS last_event_at, u.profile, u.created_at, u.updated_at,"
    f" m.contact_ids, m.member_bots, m.member_channels, m.member_users"
    " FROM (SELECT 1) AS one"
    " LEFT JOIN users u ON u.bot_id = $1 AND u.channel = $2 AND u.user_id = $3"
    f" CROSS JOIN (SELECT array_agg(c.contact_id {_MEMBER_ORDER}) AS contact_ids,"
    f" array_agg(c.bot_id {_MEMBER_ORDER}) AS member_bots, array_agg(c.channel {_MEMBER_ORDER}) AS member_channels,"
    f" array_agg(c.user_id {_MEMBER_ORDER}) AS member_users"
    " FROM contacts c JOIN contacts me ON me.contact_id = c.contact_id"
    " WHERE me.bot_id = $1 AND me.channel = $2 AND me.user_id = $3) AS m"
)


class PostgresIncomingContext:
    if TYPE_CHECKING:
        async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]: ...

    async def incoming_context(self, bot_id: str, channel: str, thread_id: str | None,
                               user_id: str) -> IncomingContext:
        [row] = await self._fetch(INCOMING_CONTEXT_SQL, bot_id, channel, user_id, thread_id or "")
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
