"""PostgresStorage's maintenance: the retention purge and a user's erase (with a VACUUM after it).

Apart from postgres.py, which holds the pool and transaction machinery, so that each file keeps
to one concern. Neither is on the path of an event: the purge runs in the background, an erase
when an operator asks for one.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import asyncpg

from .base import StorageUnavailable
from .postgres_statements import MAINTENANCE_SECONDS, allow_long_statements, row_count

log = logging.getLogger("botpress_py.storage")

# The tables an erase deletes from, vacuumed after it; and how long that VACUUM may take.
_ERASED_TABLES = ("users", "conversations", "messages", "inbox", "outbox", "contacts", "media")
_ERASE_VACUUM_SECONDS = 30.0


class PostgresMaintenance:
    if TYPE_CHECKING:
        async def _purge_media(self, before: int) -> int: ...

        def _connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        def _transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def purge(self, *, processed_before: int, messages_before: int,
                    failed_before: int | None = None, media_before: int | None = None) -> dict[str, int]:
        failed_before = processed_before if failed_before is None else failed_before
        # Finished rows are kept for storage.retention.events; failed and discarded ones for .failed.
        statements = [
            ("inbox", "DELETE FROM inbox WHERE status IN ('done', 'dropped', 'error') AND processed_at < $1",
             processed_before),
            ("inbox", "DELETE FROM inbox WHERE status IN ('failed', 'discarded') AND processed_at < $1",
             failed_before),
            ("outbox", "DELETE FROM outbox WHERE status IN ('sent', 'dropped') AND updated_at < $1", processed_before),
            ("outbox", "DELETE FROM outbox WHERE status IN ('failed', 'discarded') AND updated_at < $1",
             failed_before),
            ("messages", "DELETE FROM messages WHERE created_at < $1", messages_before),
        ]
        counts: dict[str, int] = {"inbox": 0, "outbox": 0, "messages": 0}
        async with self._transaction() as conn:
            await allow_long_statements(conn)
            for table, sql, before in statements:
                counts[table] += row_count(await conn.execute(sql, before, timeout=MAINTENANCE_SECONDS))
        if media_before is not None:
            counts["media"] = await self._purge_media(media_before)
        return counts

    async def erase_user(self, bot_id: str, channel: str, user_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        async with self._transaction() as conn:
            for table in _ERASED_TABLES:
                status = await conn.execute(
                    f"DELETE FROM {table} WHERE bot_id = $1 AND channel = $2 AND user_id = $3",
                    bot_id,
                    channel,
                    user_id,
                )
                counts[table] = row_count(status)
        await self._vacuum_after_erase()
        return counts

    async def _vacuum_after_erase(self) -> None:
        """VACUUM the tables an erase deleted from (outside a transaction: VACUUM refuses to run in one).

        Deleted rows stay in the table files until VACUUM; after it their space is free for reuse,
        but PostgreSQL does not zero it, and its WAL and backups keep them longer (docs/storage.md).
        """
        try:
            async with self._connection() as conn:
                await conn.execute(f"SET statement_timeout = {int(_ERASE_VACUUM_SECONDS * 1000)}")
                await conn.execute("VACUUM " + ", ".join(_ERASED_TABLES), timeout=_ERASE_VACUUM_SECONDS + 1)
        except (StorageUnavailable, asyncpg.PostgresError) as exc:
            # The erase itself is committed; autovacuum gets to the tables later.
            log.warning("VACUUM after a user erase did not finish (%s); autovacuum will reclaim the rows later", exc)
