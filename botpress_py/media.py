"""Media storage for every channel: ``bot.media`` and the route that serves a stored file.

A channel that receives a file (a photo a Messenger user sent, say) keeps it with
``await bot.media.put(data, ...)``: the bytes go into the ``media`` table of the server's own
storage (SQLite or PostgreSQL), written off the event loop like every other row, so that every
node sharing the database serves it and a user erase or the retention purge deletes it with
the rest (docs/storage.md, "Media"). Each file gets a random 128-bit id, which makes its URL,
``/api/v1/bots/{botId}/media/{mediaId}``, unguessable; the route needs no token.

What the route answers is built so that a file a stranger sent can never run as a page of this
server: the stored Content-Type (checked when stored), ``nosniff``, a CSP that forbids any script
or subresource (``sandbox``), and ``attachment`` for anything but images, audio and video.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .events import now_ms
from .storage.base import Storage
from .storage.media_rows import StoredMedia

MEDIA_ID = re.compile(r"[0-9a-f]{32}")
# type/subtype as RFC 6838 allows them; parameters (charset=...) are dropped when a file is stored.
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_SHOWN_INLINE = ("image/", "audio/", "video/")
MAX_FILENAME_CHARS = 200
# The contents under one id never change, and an erase must be able to take them back: browsers
# may keep a file a day, shared caches never (private).
CACHE_CONTROL = "private, max-age=86400"
MEDIA_ROUTE = "/api/v1/bots/{botId}/media/{mediaId}"
DEFAULT_MAX_BYTES = 26_214_400  # storage.media.maxBytes: 25 MB, Messenger's own attachment limit


def media_max_bytes(storage_config: dict[str, Any]) -> int:
    """``storage.media.maxBytes`` of the server config's ``storage`` object."""
    media = storage_config.get("media") if isinstance(storage_config.get("media"), dict) else {}
    value = media.get("maxBytes", DEFAULT_MAX_BYTES)
    return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_BYTES


class MediaTooLarge(ValueError):
    """``bot.media.put`` was given more bytes than ``storage.media.maxBytes`` allows."""


def clean_content_type(value: str) -> str:
    """``type/subtype`` in lower case without parameters; ValueError when it is not one."""
    text = value.split(";", 1)[0].strip().lower() if isinstance(value, str) else ""
    if not _CONTENT_TYPE.fullmatch(text):
        raise ValueError(f"content type {str(value)[:80]!r} is not a type/subtype such as image/jpeg")
    return text


def clean_filename(value: str | None) -> str | None:
    """A file name safe to keep and to send back in Content-Disposition (no path, no control characters)."""
    if not value:
        return None
    name = re.sub(r"[\x00-\x1f\x7f/\\]", "_", str(value)).strip().strip(".")
    return name[:MAX_FILENAME_CHARS] or None


def _as_info(media: StoredMedia, url: str) -> dict[str, Any]:
    return {"id": media.media_id, "url": url, "contentType": media.content_type, "size": media.size,
            "channel": media.channel, "userId": media.user_id, "filename": media.filename,
            "createdOn": media.created_at}


class StorageMediaStore:
    """``bot.media``: one bot's media files in the server's storage (the MediaStore of docs/modules.md)."""

    def __init__(self, storage: Storage, bot_id: str, external_url: Callable[[], str], max_bytes: int) -> None:
        self._storage = storage
        self._bot_id = bot_id
        self._external_url = external_url
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"<MediaStore bot={self._bot_id!r}>"

    @staticmethod
    def new_id() -> str:
        """A fresh media id (128 random bits, 32 hex digits): reserve one before the file arrives, so its URL
        can be handed out (and recorded) already."""
        return secrets.token_hex(16)

    def url(self, media_id: str) -> str:
        """The file's stable URL, served by this server (and by every node sharing its storage)."""
        return f"{self._external_url().rstrip('/')}/api/v1/bots/{self._bot_id}/media/{media_id}"

    async def put(self, data: bytes, *, content_type: str, user_id: str, channel: str, media_id: str | None = None,
                  filename: str | None = None) -> dict[str, Any]:
        """Store a file of ``user_id`` on ``channel``; returns its info (``id``, ``url``, ``contentType``,
        ``size``, ``channel``, ``userId``, ``filename``, ``createdOn``).

        Raises MediaTooLarge past ``storage.media.maxBytes``, ValueError for a bad content type or id, and
        StorageUnavailable when storage cannot take it now.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"media data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) > self.max_bytes:
            raise MediaTooLarge(f"{len(data)} bytes is more than storage.media.maxBytes ({self.max_bytes})")
        media_id = media_id or self.new_id()
        if not MEDIA_ID.fullmatch(media_id):
            raise ValueError("a media id is 32 lower-case hex digits (use bot.media.new_id())")
        if not user_id or not channel:
            raise ValueError("media belongs to a user of a channel: give user_id and channel")
        media = StoredMedia(media_id, self._bot_id, channel, user_id, clean_content_type(content_type), len(data),
                            clean_filename(filename), now_ms(), data)
        await self._storage.media_put(media)
        return _as_info(media, self.url(media_id))

    async def info(self, media_id: str) -> dict[str, Any] | None:
        """The file's info (as ``put`` returns it), or None when no such file is stored for this bot."""
        if not MEDIA_ID.fullmatch(media_id or ""):
            return None
        media = await self._storage.media_get(self._bot_id, media_id, with_data=False)
        return None if media is None else _as_info(media, self.url(media_id))

    async def read(self, media_id: str) -> tuple[dict[str, Any], bytes] | None:
        """The file's info and bytes, or None."""
        if not MEDIA_ID.fullmatch(media_id or ""):
            return None
        media = await self._storage.media_get(self._bot_id, media_id)
        if media is None or media.data is None:
            return None
        return _as_info(media, self.url(media_id)), media.data

    async def delete(self, media_id: str) -> bool:
        """Delete the file now; False when there was none."""
        if not MEDIA_ID.fullmatch(media_id or ""):
            return False
        return await self._storage.media_delete(self._bot_id, media_id)


def _disposition(media: StoredMedia) -> str:
    kind = "inline" if media.content_type.startswith(_SHOWN_INLINE) else "attachment"
    if not media.filename:
        return kind
    ascii_name = re.sub(r'[^A-Za-z0-9._ -]', "_", media.filename)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(media.filename, safe='')}"


class MediaRoute:
    """``GET /api/v1/bots/{botId}/media/{mediaId}`` (HEAD too): a stored file, as it was stored."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(MEDIA_ROUTE, self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        bot_id, media_id = request.match_info["botId"], request.match_info["mediaId"]
        if not MEDIA_ID.fullmatch(media_id):
            raise web.HTTPNotFound(text="no such media")
        etag = f'"{media_id}"'
        if request.headers.get("If-None-Match") == etag:
            media = await self._storage.media_get(bot_id, media_id, with_data=False)
            if media is not None:
                return web.Response(status=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
        media = await self._storage.media_get(bot_id, media_id)
        if media is None or media.data is None:
            raise web.HTTPNotFound(text="no such media")
        return web.Response(body=media.data, headers={
            "Content-Type": media.content_type,
            "Content-Disposition": _disposition(media),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": CACHE_CONTROL,
            "ETag": etag,
        })
