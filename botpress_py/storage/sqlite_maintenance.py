"""SQLiteStorage's maintenance: the retention purge and a user's erase (with the WAL truncated after it).

Apart from sqlite.py, which holds the connection and transaction machinery, so that each file
keeps to one concern. Both work in small transactions, each a few milliseconds, so that the
write lock (and every webhook's commit waiting behind it) is never held for long, however many
rows go; neither is on the path of an event.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .sqlite_threads import Checkpointer

log = logging.getLogger("botpress_py.storage")

T = TypeVar("T")
Db = sqlite3.Connection

_PURGE_CHUNK = 2000
# Finished rows kept for storage.retention.events; failed and discarded ones for retention.failed.
_FINISHED = {"inbox": "('done', 'dropped', 'error')", "outbox": "('sent', 'dropped')"}
_DEAD = "('failed', 'discarded')"
_ERASE_SLICE = 20_000  # queue rows scanned per erase transaction (a few ms)
# How long an erase waits for the WAL to be truncated before it returns (the retries go on after).
_ERASE_TRUNCATE_WAIT = 10.0


class SQLiteMaintenance:
    if TYPE_CHECKING:
        path: Path
        _checkpointer: Checkpointer | None

        async def _write(self, body: Callable[[Db], T], priority: int = ...) -> T: ...

        async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        async def _purge_media(self, before: int) -> int: ...

    async def purge(self, *, processed_before: int, messages_before: int,
                    failed_before: int | None = None, media_before: int | None = None) -> dict[str, int]:
        failed_before = processed_before if failed_before is None else failed_before
        conditions = [
            ("inbox", f"status IN {_FINISHED['inbox']} AND processed_at < ?", processed_before),
            ("inbox", f"status IN {_DEAD} AND processed_at < ?", failed_before),
            ("outbox", f"status IN {_FINISHED['outbox']} AND updated_at < ?", processed_before),
            ("outbox", f"status IN {_DEAD} AND updated_at < ?", failed_before),
            ("messages", "created_at < ?", messages_before),
        ]
        counts: dict[str, int] = {"inbox": 0, "outbox": 0, "messages": 0}
        for table, condition, before in conditions:
            while True:
                # Small transactions: a purge of a million rows must not hold the write lock
                # (and every webhook commit behind it) for seconds.
                sql = (f"DELETE FROM {table} WHERE rowid IN "
                       f"(SELECT rowid FROM {table} WHERE {condition} LIMIT {_PURGE_CHUNK})")
                deleted = await self._write(lambda db, sql=sql, before=before: db.execute(sql, (before,)).rowcount)
                counts[table] += deleted
                if deleted < _PURGE_CHUNK:
                    break
        if media_before is not None:
            counts["media"] = await self._purge_media(media_before)
        return counts

    async def erase_user(self, bot_id: str, channel: str, user_id: str) -> dict[str, int]:
        who = (bot_id, channel, user_id)

        def erase(db: Db) -> dict[str, int]:
            return {table: db.execute(f"DELETE FROM {table} WHERE bot_id = ? AND channel = ? AND user_id = ?",
                                      who).rowcount
                    for table in ("users", "conversations", "messages", "contacts", "media")}

        counts = await self._write(erase)
        for table in ("inbox", "outbox"):
            # No per-user index on the queues (migration 4): scan them by seq, one slice per
            # transaction, so the write lock (and every webhook's commit) never waits long.
            low, high = (await self._fetchall(f"SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM {table}"))[0]
            counts[table] = 0
            for start in range(int(low) - 1, int(high), _ERASE_SLICE):
                sql = (f"DELETE FROM {table} WHERE seq > ? AND seq <= ? AND bot_id = ? AND channel = ? "
                       "AND user_id = ?")
                counts[table] += await self._write(
                    lambda db, sql=sql, start=start: db.execute(sql, (start, start + _ERASE_SLICE, *who)).rowcount)
        await self._truncate_wal()
        return {table: counts[table] for table in ("users", "conversations", "messages", "inbox", "outbox",
                                                   "contacts", "media")}

    async def _truncate_wal(self) -> None:
        """After an erase: wait (bounded) for a TRUNCATE checkpoint, so the WAL's old page images of the
        erased rows are gone when the erase returns. The checkpoint thread keeps trying after the bound."""
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        truncated = asyncio.wrap_future(checkpointer.truncate())
        truncated.add_done_callback(_outcome_seen)
        done, _ = await asyncio.wait((truncated,), timeout=_ERASE_TRUNCATE_WAIT)
        if not done or truncated.exception() is not None:
            log.warning("the SQLite WAL of %s is not truncated yet after a user erase (a long read holds it, or "
                        "the storage is closing); the checkpoint thread keeps trying while it runs", self.path)


def _outcome_seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # looked at: its waiter may have stopped waiting
