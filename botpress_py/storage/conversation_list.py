"""Listing a bot's conversations, most recent first, a page at a time (the admin page's list).

The same query on both backends (mixins of ``SQLiteStorage`` and ``PostgresStorage``), apart
from their files so that each keeps to one concern. Pages are keyed by the last row of the
previous page (last activity, channel, user, thread), so paging stays right while new
messages arrive and never counts rows. Rare and operator-driven: the conversations of one bot
(and channel) are read through their primary key and sorted, with no index of their own that
every message would have to update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

# Where a page ends: (last_event_at, channel, user_id, thread_id) of its last conversation.
ConversationCursor = tuple[int, str, str, str]

# The last message of a conversation (its preview as stored: masked where masking applies).
_LAST = ("(SELECT m.{column} FROM messages m WHERE m.bot_id = c.bot_id AND m.channel = c.channel"
         " AND m.user_id = c.user_id AND COALESCE(m.thread_id, '') = c.thread_id ORDER BY m.seq DESC LIMIT 1)")


def conversations_query(bot_id: str, channel: str | None, limit: int, after: ConversationCursor | None,
                        placeholder: Callable[[int], str]) -> tuple[str, list[Any]]:
    params: list[Any] = [bot_id]
    where = [f"c.bot_id = {placeholder(1)}"]
    if channel is not None:
        params.append(channel)
        where.append(f"c.channel = {placeholder(len(params))}")
    if after is not None:
        at, *key = after
        n = len(params)
        params += [at, at, *key]
        where.append(f"(c.last_event_at < {placeholder(n + 1)} OR (c.last_event_at = {placeholder(n + 2)} AND "
                     f"(c.channel, c.user_id, c.thread_id) > ({placeholder(n + 3)}, {placeholder(n + 4)}, "
                     f"{placeholder(n + 5)})))")
    params.append(limit)
    sql = (f"SELECT c.channel, c.user_id, c.thread_id, c.created_at, c.last_event_at, "
           f"{_LAST.format(column='preview')} AS last_preview, {_LAST.format(column='direction')} AS last_direction "
           f"FROM conversations c WHERE {' AND '.join(where)} "
           f"ORDER BY c.last_event_at DESC, c.channel, c.user_id, c.thread_id LIMIT {placeholder(len(params))}")
    return sql, params


def _conversation(bot_id: str, row: Sequence[Any]) -> dict[str, Any]:
    channel, user_id, thread_id, created_at, last_event_at, preview, direction = row
    return {"botId": bot_id, "channel": channel, "userId": user_id, "threadId": thread_id or None,
            "createdOn": int(created_at), "lastEventAt": int(last_event_at), "lastPreview": preview,
            "lastDirection": direction}


class SQLiteConversationList:
    if TYPE_CHECKING:
        async def _fetchall(self, sql: str, params: Sequence[Any] = (), *, inline: bool = False) -> list[Any]: ...

    async def conversations(self, bot_id: str, *, channel: str | None = None, limit: int = 50,
                            after: ConversationCursor | None = None) -> list[dict[str, Any]]:
        sql, params = conversations_query(bot_id, channel, limit, after, lambda n: "?")
        return [_conversation(bot_id, row) for row in await self._fetchall(sql, params)]


class PostgresConversationList:
    if TYPE_CHECKING:
        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def conversations(self, bot_id: str, *, channel: str | None = None, limit: int = 50,
                            after: ConversationCursor | None = None) -> list[dict[str, Any]]:
        sql, params = conversations_query(bot_id, channel, limit, after, lambda n: f"${n}")
        return [_conversation(bot_id, tuple(row)) for row in await self._fetch(sql, *params)]
