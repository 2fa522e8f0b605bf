"""What storage keeps of one media file (the ``media`` table, migration 6), for both backends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Columns read back, in this order, by both backends (the blob last: left out when only metadata is asked).
MEDIA_COLUMNS = "media_id, bot_id, channel, user_id, content_type, size, filename, created_at"
# A purge transaction deletes at most this many media rows: they can be megabytes each, and SQLite
# overwrites what it deletes (secure_delete), so a big slice would hold the write lock for long.
MEDIA_PURGE_CHUNK = 50


@dataclass(slots=True)
class StoredMedia:
    """One stored media file: who it belongs to (an erase of that user deletes it), its type and size."""

    media_id: str
    bot_id: str
    channel: str
    user_id: str
    content_type: str
    size: int
    filename: str | None
    created_at: int  # ms epoch: the purge deletes it after storage.retention.media
    data: bytes | None = None  # None when only the metadata was read


def media_from_row(row: Sequence[Any], with_data: bool) -> StoredMedia:
    """A row of ``MEDIA_COLUMNS`` (plus ``data`` when ``with_data``)."""
    media_id, bot_id, channel, user_id, content_type, size, filename, created_at = row[:8]
    data = row[8] if with_data else None
    return StoredMedia(str(media_id), str(bot_id), str(channel), str(user_id), str(content_type), int(size),
                       None if filename is None else str(filename), int(created_at),
                       None if data is None else bytes(data))
