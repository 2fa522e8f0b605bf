"""The read before every incoming event's bot logic (conversation, user, contact), batched.

Under load the conversations that one inbox commit starts all ask at once: the reads asked for
in one turn of the event loop go together (GroupCommit, used here for reads) — one query on
PostgreSQL (postgres_context.py), one hand-off to the reader thread on SQLite (sqlite_context.py).
A batch whose read fails is split like a failed commit, so one bad read fails only its own event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import IncomingContext
from .group_commit import GroupCommit

# (bot, channel, user, thread or "")
ContextKey = tuple[str, str, str, str]


class BatchedContextReads:
    """``incoming_context`` for a backend that reads a batch of keys in ``_read_contexts``."""

    if TYPE_CHECKING:  # the backend's own (Storage.is_transient_failure): declared, not shadowed in the MRO
        def is_transient_failure(self, exc: BaseException) -> bool: ...

    _context_reads: GroupCommit[ContextKey, IncomingContext] | None = None

    async def _read_contexts(self, keys: list[ContextKey]) -> list[IncomingContext]:
        raise NotImplementedError

    async def incoming_context(self, bot_id: str, channel: str, thread_id: str | None,
                               user_id: str) -> IncomingContext:
        if self._context_reads is None:
            self._context_reads = GroupCommit(self._read_contexts, name="incoming-context", max_batch=200,
                                              transient=self.is_transient_failure)
        [found] = await self._context_reads.add([(bot_id, channel, user_id, thread_id or "")])
        return found
