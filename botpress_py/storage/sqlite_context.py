"""SQLiteStorage's read before every incoming event's bot logic: conversation, user and contact at once.

Apart from sqlite.py so that each file keeps to one concern (postgres_context.py is its
PostgreSQL twin). Three small reads cost less than the hand-off to the reader thread that runs
them (~10 against ~40 us of CPU). Under load the conversations that one inbox commit starts all
ask at once: the reads asked for in one turn of the event loop share one hand-off (GroupCommit,
used here for reads), as on PostgreSQL they share one query. A batch whose read fails is split
like a failed commit, so one bad read fails only its own event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .base import IncomingContext
from .context_reads import BatchedContextReads, ContextKey
from .sqlite_statements import CONTACT_SQL, LAST_EVENT_SQL, USER_SQL, Db, contact_members, user_dict

T = TypeVar("T")


class SQLiteIncomingContext(BatchedContextReads):
    if TYPE_CHECKING:
        async def _read(self, body: Callable[[Db], T]) -> T: ...

    async def _read_contexts(self, keys: list[ContextKey]) -> list[IncomingContext]:
        def read(db: Db) -> list[IncomingContext]:
            found = []
            for bot_id, channel, user_id, thread_id in keys:
                last = db.execute(LAST_EVENT_SQL, (bot_id, channel, user_id, thread_id)).fetchall()
                user = db.execute(USER_SQL, (bot_id, channel, user_id)).fetchall()
                contact = db.execute(CONTACT_SQL, (bot_id, channel, user_id)).fetchall()
                found.append(IncomingContext(int(last[0][0]) if last else None,
                                             user_dict(bot_id, channel, user_id, user[0]) if user else None,
                                             contact_members(contact)))
            return found

        return await self._read(read)
