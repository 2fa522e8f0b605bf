"""SQLiteStorage's media calls (the ``media`` table); see ``Storage`` and docs/storage.md, "Media".

Apart from sqlite.py, which holds the connection and transaction machinery. A blob is written on
the writer thread and read on the reader thread like every other row, never on the event loop;
``secure_delete`` overwrites a deleted blob with zeros, so an erase or the purge leaves nothing of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .media_rows import MEDIA_COLUMNS, MEDIA_PURGE_CHUNK, StoredMedia, media_from_row

T = TypeVar("T")
Db = sqlite3.Connection


class SQLiteMedia:
    if TYPE_CHECKING:
        async def _write(self, body: Callable[[Db], T], priority: int = ...) -> T: ...

        async def _read(self, body: Callable[[Db], T]) -> T: ...

    async def media_put(self, media: StoredMedia) -> None:
        if media.data is None:
            raise ValueError("media_put needs the media's data")
        params = (media.media_id, media.bot_id, media.channel, media.user_id, media.content_type, media.size,
                  media.filename, media.data, media.created_at)
        await self._write(lambda db: db.execute(
            f"INSERT INTO media ({MEDIA_COLUMNS.replace('created_at', 'data, created_at')}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?)", params).close())

    async def media_get(self, bot_id: str, media_id: str, *, with_data: bool = True) -> StoredMedia | None:
        columns = MEDIA_COLUMNS + (", data" if with_data else "")
        rows = await self._read(lambda db: db.execute(
            f"SELECT {columns} FROM media WHERE media_id = ? AND bot_id = ?", (media_id, bot_id)).fetchall())
        return media_from_row(rows[0], with_data) if rows else None

    async def media_delete(self, bot_id: str, media_id: str) -> bool:
        deleted = await self._write(lambda db: db.execute(
            "DELETE FROM media WHERE media_id = ? AND bot_id = ?", (media_id, bot_id)).rowcount)
        return bool(deleted)

    async def _purge_media(self, before: int) -> int:
        """Media stored before ``before`` (ms epoch), a few rows per transaction."""
        total = 0
        while True:
            deleted = await self._write(lambda db: db.execute(
                "DELETE FROM media WHERE rowid IN (SELECT rowid FROM media WHERE created_at < ? LIMIT ?)",
                (before, MEDIA_PURGE_CHUNK)).rowcount)
            total += deleted
            if deleted < MEDIA_PURGE_CHUNK:
                return total
