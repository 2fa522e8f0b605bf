"""SQLiteStorage's calls for failed events (retries and the dead-letter state); see ``Storage``.

Apart from sqlite.py, which holds the connection and transaction machinery, so that each
file keeps to one concern. Every call here is rare (a processing failure, a stored row that
cannot be decrypted, an operator's listing, retry or discard): none is on the path of an event
that goes well.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..events import IOEvent
from .base import Direction, FailedEvent, StorageUnavailable
from .common import ERROR_FOR_ROW, chunks, stored_error, stored_event
from .crypto import EventCipher
from .failed_rows import FAILED_COLUMNS, failed_event
from .sqlite_statements import IDS_PER_STATEMENT

log = logging.getLogger("botpress_py.storage")

T = TypeVar("T")
_TABLES: dict[str, tuple[str, str]] = {  # direction -> (table, column of when it finished)
    "incoming": ("inbox", "processed_at"),
    "outgoing": ("outbox", "updated_at"),
}


class SQLiteFailedEvents:
    def is_transient_failure(self, exc: BaseException) -> bool:
        # OperationalError: locked, busy, disk full, I/O error, read-only file. What a value can
        # cause (a type it cannot bind, an integer too big, a constraint) raises something else.
        return isinstance(exc, sqlite3.OperationalError | OSError | TimeoutError | StorageUnavailable)

    if TYPE_CHECKING:
        _clock: Callable[[], int]
        cipher: EventCipher

        async def _write(self, body: Callable[[sqlite3.Connection], T], priority: int = ...) -> T: ...

        async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        async def _read(self, body: Callable[[sqlite3.Connection], T]) -> T: ...

    async def inbox_add_failed(self, event: IOEvent, error: str) -> bool:
        now = self._clock()
        clear, encrypted = stored_error(error, self.cipher)
        params = (event.id, event.botId, event.channel, event.threadId, event.target, event.dedupeKey,
                  stored_event(event, self.cipher), encrypted if event.flags.get("mask") else clear, now, now)
        return await self._write(lambda db: bool(db.execute(
            "INSERT INTO inbox (event_id, bot_id, channel, thread_id, user_id, dedupe_key, event, status, error,"
            " attempts, created_at, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'failed', ?, 1, ?, ?)"
            " ON CONFLICT DO NOTHING RETURNING event_id", params).fetchall()))

    async def inbox_attempt_failed(self, event_id: str, attempts: int, error: str) -> None:
        params = (attempts, *reversed(stored_error(error, self.cipher)), event_id)
        await self._write(lambda db: db.execute(
            f"UPDATE inbox SET attempts = ?, error = {_ERROR} WHERE event_id = ? AND status = 'pending'",
            params).rowcount)

    async def inbox_fail(self, event_id: str, attempts: int, error: str) -> bool:
        params = (attempts, *reversed(stored_error(error, self.cipher)), self._clock(), event_id)
        changed = await self._write(lambda db: db.execute(
            f"UPDATE inbox SET status = 'failed', attempts = ?, error = {_ERROR}, processed_at = ?"
            " WHERE event_id = ? AND status = 'pending'", params).rowcount)
        return changed > 0

    async def inbox_fail_exhausted(self, max_attempts: int, error: str) -> dict[str, int]:
        params = (*reversed(stored_error(error, self.cipher)), self._clock(), max_attempts)
        rows = await self._write(lambda db: db.execute(
            f"UPDATE inbox SET status = 'failed', error = COALESCE(error, {_ERROR}), processed_at = ?"
            " WHERE status = 'pending' AND attempts >= ? RETURNING bot_id", params).fetchall())
        counts: dict[str, int] = {}
        for (bot_id,) in rows:
            counts[bot_id] = counts.get(bot_id, 0) + 1
        return counts

    async def _fail_unreadable(self, table: str, unreadable: list[tuple[str, str]]) -> None:
        """Rows that cannot be decrypted (written with another storage key) fail with the reason, once:
        skipped silently they would stay pending, and be read (and skipped) again at every start."""
        if not unreadable:
            return
        log.error("%d stored %s event(s) cannot be decrypted and are marked failed: %s", len(unreadable), table,
                  unreadable[0][1])
        now = self._clock()
        if table == "inbox":
            await self._write(lambda db: db.executemany(
                "UPDATE inbox SET status = 'failed', error = ?, processed_at = ? WHERE event_id = ?",
                [(reason, now, event_id) for event_id, reason in unreadable]))
        else:
            await self._write(lambda db: db.executemany(
                "UPDATE outbox SET status = 'failed', error = ?, updated_at = ? WHERE event_id = ?",
                [(reason, now, event_id) for event_id, reason in unreadable]))

    async def failed_events(self, direction: Direction, *, bot_id: str | None = None, after_seq: int = 0,
                            limit: int = 100) -> list[FailedEvent]:
        table, finished = _TABLES[direction]
        by_bot = " AND bot_id = ?" if bot_id is not None else ""
        params: tuple[Any, ...] = (*((bot_id,) if bot_id is not None else ()), after_seq, limit)
        rows = await self._fetchall(
            f"SELECT {FAILED_COLUMNS}, {finished} FROM {table}"
            f" WHERE status = 'failed'{by_bot} AND seq > ? ORDER BY seq LIMIT ?", params)
        return [failed_event(direction, row, self.cipher) for row in rows]

    async def failed_counts(self) -> dict[str, dict[str, int]]:
        def read(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
            counts: dict[str, dict[str, int]] = {}
            for direction, (table, _) in _TABLES.items():
                for bot_id, count in db.execute(
                        f"SELECT bot_id, COUNT(*) FROM {table} WHERE status = 'failed' GROUP BY bot_id"):
                    counts.setdefault(bot_id, {"incoming": 0, "outgoing": 0})[direction] = int(count)
            return counts

        return await self._read(read)

    async def event_status(self, event_id: str) -> tuple[Direction, str, str] | None:
        def read(db: sqlite3.Connection) -> tuple[Direction, str, str] | None:
            for direction, (table, _) in _TABLES.items():
                row = db.execute(f"SELECT status, bot_id FROM {table} WHERE event_id = ?", (event_id,)).fetchone()
                if row is not None:
                    return direction, row[0], row[1]  # type: ignore[return-value]
            return None

        return await self._read(read)

    async def events_retry(self, direction: Direction, event_ids: list[str]) -> list[FailedEvent]:
        table, finished = _TABLES[direction]
        reset = ("attempts = 0, error = NULL, processed_at = NULL" if direction == "incoming"
                 else "attempts = 0, next_attempt_at = 0, error = NULL, updated_at = ?")
        now = () if direction == "incoming" else (self._clock(),)

        def retry(db: sqlite3.Connection) -> list[Any]:
            rows: list[Any] = []
            for chunk in chunks(event_ids, IDS_PER_STATEMENT):
                rows += db.execute(
                    f"UPDATE {table} SET status = 'pending', {reset} WHERE status = 'failed' AND event_id IN"
                    f" ({', '.join('?' * len(chunk))}) RETURNING {FAILED_COLUMNS}, {finished}",
                    (*now, *chunk)).fetchall()
            return rows

        rows = await self._write(retry) if event_ids else []
        return sorted((failed_event(direction, row, self.cipher) for row in rows), key=lambda failed: failed.seq)

    async def events_discard(self, direction: Direction, event_ids: list[str]) -> list[str]:
        table, finished = _TABLES[direction]
        now = self._clock()

        def discard(db: sqlite3.Connection) -> list[str]:
            done: list[str] = []
            for chunk in chunks(event_ids, IDS_PER_STATEMENT):
                done += [row[0] for row in db.execute(
                    f"UPDATE {table} SET status = 'discarded', {finished} = ? WHERE status = 'failed' AND event_id"
                    f" IN ({', '.join('?' * len(chunk))}) RETURNING event_id", (now, *chunk)).fetchall()]
            return done

        return await self._write(discard) if event_ids else []


# The error a row keeps: encrypted when its event is (a masked event), from (encrypted, clear) parameters.
_ERROR = ERROR_FOR_ROW.format(encrypted="?", clear="?")
