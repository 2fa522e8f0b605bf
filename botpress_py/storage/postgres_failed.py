"""PostgresStorage's calls for failed events (retries and the dead-letter state); see ``Storage``.

Apart from postgres.py so that each file keeps to one concern. Every call here is rare (a
processing failure, a stored row that cannot be decrypted, an operator's listing, retry or
discard): none is on the path of an event that goes well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import asyncpg

from ..events import IOEvent
from .base import Direction, FailedEvent, StorageUnavailable
from .common import ERROR_FOR_ROW, stored_error, stored_event
from .crypto import EventCipher
from .failed_rows import FAILED_COLUMNS, failed_event

log = logging.getLogger("botpress_py.storage")

_TABLES: dict[str, tuple[str, str]] = {  # direction -> (table, column of when it finished)
    "incoming": ("inbox", "processed_at"),
    "outgoing": ("outbox", "updated_at"),
}


# Failures of the connection or the server, never of the values written (those raise DataError,
# IntegrityConstraintViolationError, ProgramLimitExceededError, ...).
_TRANSIENT = (
    asyncpg.PostgresConnectionError,  # connection lost or refused
    asyncpg.InsufficientResourcesError,  # disk full, out of memory, too many connections
    asyncpg.OperatorInterventionError,  # shutdown, statement cancelled
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.ReadOnlySQLTransactionError,  # a replica, or a server in recovery
    OSError,
    TimeoutError,
    StorageUnavailable,  # a bounded wait ran out: the database is slow or locked, not the values wrong
)


class PostgresFailedEvents:
    def is_transient_failure(self, exc: BaseException) -> bool:
        if isinstance(exc, _TRANSIENT):
            return True
        # The driver's own errors: a closed connection or pool, but not a value it cannot encode.
        return isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, ValueError)

    if TYPE_CHECKING:
        _clock: Callable[[], int]
        cipher: EventCipher

        def _get_pool(self) -> asyncpg.Pool: ...

        async def _execute(self, sql: str, *args: Any) -> str: ...

        async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]: ...

        def _transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def inbox_add_failed(self, event: IOEvent, error: str) -> bool:
        now = self._clock()
        rows = await self._fetch(
            "INSERT INTO inbox (event_id, bot_id, channel, thread_id, user_id, dedupe_key, event, status, error,"
            " attempts, created_at, processed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'failed', $8, 1, $9, $9)"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            event.id, event.botId, event.channel, event.threadId, event.target, event.dedupeKey,
            stored_event(event, self.cipher), stored_error(error, self.cipher)[1 if event.flags.get("mask") else 0],
            now)
        return bool(rows)

    async def inbox_attempt_failed(self, event_id: str, attempts: int, error: str) -> None:
        await self._execute(
            f"UPDATE inbox SET attempts = $2, error = {_error(3)} WHERE event_id = $1 AND status = 'pending'",
            event_id, attempts, *stored_error(error, self.cipher))

    async def inbox_fail(self, event_id: str, attempts: int, error: str) -> bool:
        rows = await self._fetch(
            f"UPDATE inbox SET status = 'failed', attempts = $2, error = {_error(3)}, processed_at = $5"
            " WHERE event_id = $1 AND status = 'pending' RETURNING seq", event_id, attempts,
            *stored_error(error, self.cipher), self._clock())
        return bool(rows)

    async def inbox_fail_exhausted(self, max_attempts: int, error: str) -> dict[str, int]:
        rows = await self._fetch(
            f"WITH failed AS (UPDATE inbox SET status = 'failed', error = COALESCE(error, {_error(2)}),"
            " processed_at = $4 WHERE status = 'pending' AND attempts >= $1 RETURNING bot_id)"
            " SELECT bot_id, COUNT(*) AS n FROM failed GROUP BY bot_id", max_attempts,
            *stored_error(error, self.cipher), self._clock())
        return {row["bot_id"]: int(row["n"]) for row in rows}

    async def _fail_unreadable(self, table: str, unreadable: list[tuple[str, str]]) -> None:
        """See SQLiteFailedEvents._fail_unreadable: rows written with another storage key fail, with the reason."""
        if not unreadable:
            return
        log.error("%d stored %s event(s) cannot be decrypted and are marked failed: %s", len(unreadable), table,
                  unreadable[0][1])
        status, at = ("failed", "processed_at") if table == "inbox" else ("failed", "updated_at")
        async with self._transaction() as conn:
            await conn.executemany(f"UPDATE {table} SET status = '{status}', error = $2, {at} = $3 WHERE event_id = $1",
                                   [(event_id, reason, self._clock()) for event_id, reason in unreadable])

    async def failed_events(self, direction: Direction, *, bot_id: str | None = None, after_seq: int = 0,
                            limit: int = 100) -> list[FailedEvent]:
        table, finished = _TABLES[direction]
        rows = await self._fetch(
            f"SELECT {FAILED_COLUMNS}, {finished} AS finished FROM {table}"
            " WHERE status = 'failed' AND ($1::text IS NULL OR bot_id = $1) AND seq > $2 ORDER BY seq LIMIT $3",
            bot_id, after_seq, limit)
        return [failed_event(direction, row, self.cipher) for row in rows]

    async def failed_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for direction, (table, _) in _TABLES.items():
            for row in await self._fetch(
                    f"SELECT bot_id, COUNT(*) AS n FROM {table} WHERE status = 'failed' GROUP BY bot_id"):
                counts.setdefault(row["bot_id"], {"incoming": 0, "outgoing": 0})[direction] = int(row["n"])
        return counts

    async def event_status(self, event_id: str) -> tuple[Direction, str, str] | None:
        for direction, (table, _) in _TABLES.items():
            rows = await self._fetch(f"SELECT status, bot_id FROM {table} WHERE event_id = $1", event_id)
            if rows:
                return direction, rows[0]["status"], rows[0]["bot_id"]  # type: ignore[return-value]
        return None

    async def events_retry(self, direction: Direction, event_ids: list[str]) -> list[FailedEvent]:
        if not event_ids:
            return []
        finished = _TABLES[direction][1]
        if direction == "incoming":
            rows = await self._fetch(
                "UPDATE inbox SET status = 'pending', attempts = 0, error = NULL, processed_at = NULL"
                " WHERE status = 'failed' AND event_id = ANY($1::text[])"
                f" RETURNING {FAILED_COLUMNS}, {finished} AS finished", event_ids)
        else:
            rows = await self._fetch(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = 0, error = NULL,"
                " updated_at = $2 WHERE status = 'failed' AND event_id = ANY($1::text[])"
                f" RETURNING {FAILED_COLUMNS}, {finished} AS finished", event_ids, self._clock())
        return sorted((failed_event(direction, row, self.cipher) for row in rows), key=lambda failed: failed.seq)

    async def events_discard(self, direction: Direction, event_ids: list[str]) -> list[str]:
        if not event_ids:
            return []
        table, finished = _TABLES[direction]
        rows = await self._fetch(
            f"UPDATE {table} SET status = 'discarded', {finished} = $2 WHERE status = 'failed'"
            " AND event_id = ANY($1::text[]) RETURNING event_id", event_ids, self._clock())
        return [row["event_id"] for row in rows]



def _error(first: int) -> str:
    """The error a row keeps, from parameters $first (clear) and $first+1 (encrypted): encrypted when the
    row's event is (a masked event)."""
    return ERROR_FOR_ROW.format(clear=f"${first}", encrypted=f"${first + 1}")
