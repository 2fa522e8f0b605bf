"""Media users send: downloaded into the server's media storage (``bot.media``) before Meta's URLs expire.

Messenger gives an attachment's bytes only as a temporary CDN URL. The channel keeps them:

1. **At the webhook** (``reserve``), before the events are stored, each image, audio, video, file or
   sticker gets a media id and its stable URL in ``payload.media`` (``{"id", "url"}``), so the stored
   event and its history entry already name where the file will be.
2. **Once the events are stored** (``prefetch``), their downloads start in the background: the webhook
   answers 200 without waiting. At most ``CONCURRENCY`` downloads run at once per server; at most
   ``MAX_TRACKED`` wait in memory (past that, a download starts when bot logic reaches its event).
3. **Before bot logic** (the ``messenger-media`` incoming middleware, ``attach``), the event waits for its
   download, at most ``mediaWait``, and ``payload.media`` gets the outcome: ``status`` ``"stored"``
   (with ``contentType`` and ``size``), ``"refused"`` (too large, or not the type the attachment
   claims: never retried), ``"failed"`` (the host kept failing: retried ``ATTEMPTS`` times with
   backoff first), or ``"pending"`` (still downloading: the URL works once it lands). A failure is
   also logged. After a restart the middleware starts the download itself (a file already stored
   under the reserved id is found, not fetched again).

Each attempt is bounded (``ATTEMPT_TIMEOUT``), the size is checked against ``mediaMaxBytes`` (and
``storage.media.maxBytes``) from the Content-Length and again while reading, and the Content-Type must
fit the attachment's kind (any type for a ``file``). Logs name the host, never the URL (Meta's carry
signatures).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from botpress_py.sdk import BotContext, IOEvent, LogThrottle, MediaTooLarge, StorageUnavailable

from .settings import MessengerSettings

log = logging.getLogger("botpress_py.module.channel-messenger.media")

# Attachment kind -> content types accepted for it (None: any).
ACCEPTED_TYPES: dict[str, tuple[str, ...] | None] = {
    "image": ("image/",),
    "sticker": ("image/",),
    "audio": ("audio/", "video/mp4", "video/3gpp", "video/webm", "application/ogg"),
    "video": ("video/",),
    "file": None,
}
CONCURRENCY = 4
MAX_TRACKED = 10_000
ATTEMPTS = 3
BACKOFF_FIRST_SECONDS = 1.0  # doubled after each failed attempt
ATTEMPT_TIMEOUT = 30.0
MAX_REDIRECTS = 3
CHUNK = 65_536
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# Statuses that mean the URL will never work (expired, forbidden): retrying only wastes the wait.
_GONE = frozenset({400, 401, 403, 404, 410})


class Refused(Exception):
    """The file must not be kept (too large, wrong type, not a web URL): reported, never retried."""


class Gone(Exception):
    """The URL does not serve the file any more (404, 403, ...): reported, never retried."""


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


def content_type_of(header: str | None) -> str:
    text = (header or "").split(";", 1)[0].strip().lower()
    return text if _CONTENT_TYPE.fullmatch(text) else "application/octet-stream"


def accepted(kind: str, content_type: str) -> bool:
    allowed = ACCEPTED_TYPES.get(kind, ())
    return allowed is None or content_type.startswith(allowed)


def reserved_media(event: IOEvent) -> dict[str, Any] | None:
    media = event.payload.get("media")
    return media if isinstance(media, dict) and isinstance(media.get("id"), str) else None


class MediaDownloads:
    """One server's attachment downloads. ``attempts``, ``backoff_first`` and ``attempt_timeout`` are read
    per download: a test may shrink them on a running server's channel."""

    def __init__(self) -> None:
        self.attempts = ATTEMPTS
        self.backoff_first = BACKOFF_FIRST_SECONDS
        self.attempt_timeout = ATTEMPT_TIMEOUT
        self._http: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._tasks: OrderedDict[str, asyncio.Task[dict[str, Any]]] = OrderedDict()  # event id -> download
        self._whose: dict[str, tuple[str, str, str]] = {}  # event id -> (bot id, user id, media id), while tracked
        self._throttle = LogThrottle(60.0)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        # Cancelled or failed: a download dies with the server (its event downloads again after a restart).
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._whose.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2),
                                               headers={"User-Agent": "botpress-py channel-messenger"})
        return self._http

    # -- at the webhook ---------------------------------------------------------------------------
    @staticmethod
    def reserve(bot: BotContext, settings: MessengerSettings, events: list[IOEvent]) -> None:
        """Give each downloadable attachment of a user its media id and stable URL, before it is stored."""
        if not settings.events.download_media:
            return
        for event in events:
            url = event.payload.get("url")
            if event.type not in ACCEPTED_TYPES or event.flags.get("echo") or not isinstance(url, str) \
                    or reserved_media(event) is not None:
                continue
            try:
                media_id = bot.media.new_id()
                event.payload["media"] = {"id": media_id, "url": bot.media.url(media_id)}
            except RuntimeError:
                return  # no media storage (a context made by hand): nothing can be kept

    def prefetch(self, bot: BotContext, settings: MessengerSettings, events: list[IOEvent]) -> None:
        """Start the downloads of freshly stored events; never awaited (the webhook answers now)."""
        if not settings.events.download_media:
            return
        for event in events:
            if reserved_media(event) is not None:
                self._start(bot, settings, event)

    def _start(self, bot: BotContext, settings: MessengerSettings,
               event: IOEvent) -> asyncio.Task[dict[str, Any]] | None:
        task = self._tasks.get(event.id)
        if task is not None:
            return task
        if len(self._tasks) >= MAX_TRACKED:
            for done in [key for key, each in self._tasks.items() if each.done()]:
                self._forget(done)
            if len(self._tasks) >= MAX_TRACKED:
                return None  # too many waiting: the middleware starts this one when its event's turn comes
        media = reserved_media(event)
        assert media is not None
        task = asyncio.create_task(self._download(bot, settings, event, media["id"]),
                                   name=f"messenger-media-{event.id}")
        self._tasks[event.id] = task
        self._whose[event.id] = (bot.id, event.target, media["id"])
        if event.silent:  # no middleware will collect it: forget it once done
            task.add_done_callback(lambda _: self._forget(event.id))
        return task

    def _forget(self, event_id: str) -> None:
        self._tasks.pop(event_id, None)
        self._whose.pop(event_id, None)

    async def forget_user(self, bot: BotContext, user_id: str) -> None:
        """A user erase: their downloads still running stop, and what one stored meanwhile goes too."""
        mine = [(event_id, media_id) for event_id, (bot_id, user, media_id) in list(self._whose.items())
                if bot_id == bot.id and user == user_id]
        for event_id, media_id in mine:
            task = self._tasks.get(event_id)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self._forget(event_id)
            await bot.media.delete(media_id)

    # -- before bot logic -------------------------------------------------------------------------
    async def attach(self, event: IOEvent, bot: BotContext, settings: MessengerSettings) -> None:
        """Wait (at most ``mediaWait``) for the event's download; its outcome goes on ``payload.media``."""
        media = reserved_media(event)
        if media is None or "status" in media:
            return
        if not settings.events.download_media:
            event.payload["media"] = {"id": media["id"], "status": "skipped"}
            return
        task = self._tasks.get(event.id) or self._start(bot, settings, event)
        if task is None:  # over the bound even now: run it here, in the event's own turn
            task = asyncio.ensure_future(self._download(bot, settings, event, media["id"]))
        try:
            outcome = await asyncio.wait_for(asyncio.shield(task), settings.events.media_wait_ms / 1000)
        except TimeoutError:
            event.payload["media"] = {**media, "status": "pending"}
            task.add_done_callback(lambda _: self._forget(event.id))
            return
        except Exception as exc:  # a bug in the download: this event's file is lost, its bot logic runs on
            bot.logger.exception("Media of event %s: the download failed unexpectedly", event.id)
            outcome = {"id": media["id"], "status": "failed",
                       "error": f"{type(exc).__name__} (a bug: please report it)"}
        self._forget(event.id)
        event.payload["media"] = outcome

    # -- the download -----------------------------------------------------------------------------
    async def _download(self, bot: BotContext, settings: MessengerSettings, event: IOEvent,
                        media_id: str) -> dict[str, Any]:
        url = str(event.payload.get("url") or "")
        if (urlsplit(url).scheme or "").lower() not in ("http", "https"):
            return self._report(bot, event, {"id": media_id, "status": "refused",
                                             "error": "the attachment has no http(s) URL"})
        try:
            known = await bot.media.info(media_id)
        except Exception:
            known = None  # storage stalls: try the download, its put says more
        if known is not None:  # stored before a restart: its event replays
            return _stored(known)
        limit = settings.events.media_max_bytes
        if bot.media.max_bytes:
            limit = min(limit, bot.media.max_bytes)
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._slots:
                    data, content_type = await asyncio.wait_for(self._fetch(url, event.type, limit),
                                                                self.attempt_timeout)
                info = await bot.media.put(data, content_type=content_type, user_id=event.target,
                                           channel=event.channel, media_id=media_id)
                return _stored(info)
            except (Refused, MediaTooLarge) as exc:
                return self._report(bot, event, {"id": media_id, "status": "refused", "error": str(exc)})
            except Gone as exc:
                return self._report(bot, event, {"id": media_id, "status": "failed", "error": str(exc),
                                                 "attempts": attempt})
            except (aiohttp.ClientError, TimeoutError, OSError, StorageUnavailable, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if isinstance(exc, TimeoutError):
                    error = f"no complete answer within {self.attempt_timeout:g} s"
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_first * 2 ** (attempt - 1))
        return self._report(bot, event, {"id": media_id, "status": "failed", "attempts": self.attempts,
                                         "error": f"{error} (from {_host(url)}, {self.attempts} attempts)"})

    async def _fetch(self, url: str, kind: str, limit: int) -> tuple[bytes, str]:
        async with self._session().get(url, max_redirects=MAX_REDIRECTS) as response:
            if response.status in _GONE:
                raise Gone(f"{_host(url)} answered HTTP {response.status}: the URL no longer serves the file")
            if response.status != 200:
                raise aiohttp.ClientResponseError(response.request_info, (), status=response.status,
                                                  message=f"HTTP {response.status} from {_host(url)}")
            content_type = content_type_of(response.headers.get("Content-Type"))
            if not accepted(kind, content_type):
                raise Refused(f"{_host(url)} sent {content_type}, which is not a{'n' if kind[0] in 'aeiou' else ''} "
                              f"{kind}")
            if response.content_length is not None and response.content_length > limit:
                raise Refused(f"the {kind} is {response.content_length} bytes, over the {limit} allowed "
                              "(mediaMaxBytes)")
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > limit:
                    raise Refused(f"the {kind} is over the {limit} bytes allowed (mediaMaxBytes)")
            return bytes(body), content_type

    def _report(self, bot: BotContext, event: IOEvent, outcome: dict[str, Any]) -> dict[str, Any]:
        self._throttle.log(bot.logger, logging.WARNING, ("media", bot.id, outcome["status"]),
                           "Media of event %s (%s from page %s) not kept: %s: %s", event.id, event.type,
                           event.threadId, outcome["status"], outcome.get("error"))
        return outcome


def _stored(info: dict[str, Any]) -> dict[str, Any]:
    return {"id": info["id"], "url": info["url"], "status": "stored", "contentType": info["contentType"],
            "size": info["size"]}
