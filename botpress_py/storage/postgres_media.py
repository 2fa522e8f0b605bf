"""PostgresStorage's media calls (the ``media`` table, BYTEA); see ``Storage`` and docs/storage.md, "Media"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .media_rows import MEDIA_COLUMNS, MEDIA_PURGE_CHUNK, StoredMedia, media_from_row

if TYPE_CHECKING:
    import asyncpg


class PostgresMedia:
    if TYPE_CHECKING:
        async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]: ...

        async def _execute(self, sql: str, *args: Any) -> str: ...

    async def media_put(self, media: StoredMedia) -> None:
        if media.data is None:
            raise ValueError("media_put needs the media's data")
        await self._execute(
            f"INSERT INTO media ({MEDIA_COLUMNS.replace('created_at', 'data, created_at')}) VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, $9)", media.media_id, media.bot_id, media.channel, media.user_id,
            media.content_type, media.size, media.filename, media.data, media.created_at)

    async def media_get(self, bot_id: str, media_id: str, *, with_data: bool = True) -> StoredMedia | None:
        columns = MEDIA_COLUMNS + (", data" if with_data else "")
        rows = await self._fetch(f"SELECT {columns} FROM media WHERE media_id = $1 AND bot_id = $2",
                                 media_id, bot_id)
        return media_from_row(tuple(rows[0]), with_data) if rows else None

    async def media_delete(self, bot_id: str, media_id: str) -> bool:
        status = await self._execute("DELETE FROM media WHERE media_id = $1 AND bot_id = $2", media_id, bot_id)
        return status.rsplit(" ", 1)[-1] != "0"

    async def _purge_media(self, before: int) -> int:
        """Media stored before ``before`` (ms epoch), a few rows per statement (their blobs are big)."""
        total = 0
        while True:
            status = await self._execute(
                "DELETE FROM media WHERE media_id IN (SELECT media_id FROM media WHERE created_at < $1 LIMIT $2)",
                before, MEDIA_PURGE_CHUNK)
            deleted = int(status.rsplit(" ", 1)[-1])
            total += deleted
            if deleted < MEDIA_PURGE_CHUNK:
                return total
