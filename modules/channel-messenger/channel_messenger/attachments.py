"""Media the bot sends, uploaded once per Page: the Attachment Upload API and its ``attachment_id``.

A bot that sends the same picture to every user makes Meta fetch it again for every send. Meta's
Attachment Upload API (``POST /{page-id}/message_attachments``, Messenger Platform reference,
2024-2026 editions) fetches a URL once and answers an ``attachment_id`` that later sends use
instead of the URL. The same API serves the Page's Instagram account with ``platform:
"instagram"`` (its ids are that account's, so they are kept apart).

How it goes, per (platform, Page, media type, URL):

- the first send of a URL goes out at once, by its URL, as before; *after* it was accepted the
  upload starts in the background, so no reply ever waits for Meta to fetch a file;
- later sends use the stored ``attachment_id`` (a storage read when it is not in memory);
- ids are kept in the module's storage (``server.state``, ``attachment/<platform>/<page>/<hash>``,
  the URL itself is not stored), so a restart reuses them; they are used for
  ``ATTACHMENT_TTL_SECONDS`` (Meta lets them expire after 90 days), then the URL is sent and
  uploaded again;
- a send with a stored id that Meta refuses as an invalid parameter (code 100: Meta documents no
  code of its own for an expired or deleted attachment) is sent again at once by its URL; when
  that is accepted, the id is forgotten and the URL uploaded again (when it is refused too, the id
  was not the trouble and is kept).

Only attachments rendered with ``is_reusable: true`` (every image, file, video and audio payload)
are handled: a ``custom`` payload without it is sent exactly as given. ``reuseAttachments: false``
turns all of this off for a bot (a URL whose content changes must be fetched every time).
Memory is bounded: at most ``MEMORY_LIMIT`` ids, ``MAX_PENDING_UPLOADS`` uploads waiting and
``MAX_PARALLEL_UPLOADS`` running; a failed upload is tried again after ``RETRY_UPLOAD_AFTER_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import logging
from collections import OrderedDict
from typing import Any

from botpress_py.sdk import KeyValueStore, LogThrottle, now_ms

from .graph_client import GraphApiError
from .pages import PageBinding

# Read when used, so a test can shorten them for the servers it starts.
ATTACHMENT_TTL_SECONDS = 80 * 86400  # Meta: "Attachment IDs expire after 90 days"; renewed ten days early
RETRY_UPLOAD_AFTER_SECONDS = 600.0
UPLOAD_TIMEOUT = 90.0  # Meta gives a video URL 75 s to be fetched
MEMORY_LIMIT = 2_000
MAX_PENDING_UPLOADS = 64
MAX_PARALLEL_UPLOADS = 4
MEDIA_TYPES = frozenset({"image", "audio", "video", "file"})
INVALID_PARAMETER = 100

log = logging.getLogger("botpress_py.module.channel-messenger.attachments")


def media_of(step: dict[str, Any]) -> tuple[str, str] | None:
    """(type, URL) of a Send API body that sends a reusable media URL, else None."""
    message = step.get("message")
    attachment = message.get("attachment") if isinstance(message, dict) else None
    payload = attachment.get("payload") if isinstance(attachment, dict) else None
    if not isinstance(payload, dict) or attachment.get("type") not in MEDIA_TYPES:
        return None
    url = payload.get("url")
    if payload.get("is_reusable") is not True or not isinstance(url, str) or not url:
        return None
    return str(attachment["type"]), url


def with_attachment_id(step: dict[str, Any], attachment_id: str) -> dict[str, Any]:
    """The same body sending ``attachment_id`` instead of the URL (the rendered step stays as it was)."""
    body = copy.deepcopy(step)
    body["message"]["attachment"]["payload"] = {"attachment_id": attachment_id}
    return body


def state_key(platform: str, page_id: str, kind: str, url: str) -> str:
    digest = hashlib.sha256(f"{kind}\0{url}".encode()).hexdigest()[:40]
    return f"attachment/{platform}/{page_id}/{digest}"


def means_gone(error: GraphApiError) -> bool:
    """Whether Meta refused a send that carried a stored attachment_id in a way that says the id is no good."""
    return error.permanent and error.code == INVALID_PARAMETER and not error.thread_owned_elsewhere


class Attachments:
    """The attachment ids of every Page and Instagram account of one server, and their uploads."""

    def __init__(self) -> None:
        self.state: KeyValueStore | None = None
        self._known: OrderedDict[str, tuple[str, int]] = OrderedDict()  # state key -> (id, uploaded at, ms)
        self._uploads: dict[str, asyncio.Task[None]] = {}
        self._failed: OrderedDict[str, float] = OrderedDict()  # state key -> loop time of a failed upload
        self._slots = asyncio.Semaphore(MAX_PARALLEL_UPLOADS)
        self._throttle = LogThrottle(60.0)

    def start(self, state: KeyValueStore) -> None:
        self.state = state

    async def close(self) -> None:
        tasks = list(self._uploads.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._uploads.clear()

    @property
    def uploading(self) -> int:
        return len(self._uploads)

    async def send(self, binding: PageBinding, step: dict[str, Any]) -> dict[str, Any]:
        """Send one message body; a reusable media URL goes by its attachment_id when one is stored."""
        media = media_of(step)
        if media is None or not binding.settings.reuse_attachments or self.state is None:
            return await binding.graph.send(step)
        kind, url = media
        key = state_key(binding.platform, binding.facebook_page_id, kind, url)
        attachment_id = await self._stored_id(key)
        if attachment_id is not None:
            try:
                return await binding.graph.send(with_attachment_id(step, attachment_id))
            except GraphApiError as exc:
                if not means_gone(exc):
                    raise
                # By its URL at once. Should Meta refuse that too, the id was not the trouble: it is kept.
                answer = await binding.graph.send(step)
                await self._forget(key)
                binding.bot.logger.info("A stored %s attachment of %s %s was refused (%s): sent by its URL and "
                                        "uploaded again", kind, binding.platform, binding.page_id, exc)
                self._upload_later(binding, key, kind, url)
                return answer
        answer = await binding.graph.send(step)
        self._upload_later(binding, key, kind, url)
        return answer

    # -- the ids ---------------------------------------------------------------------------------
    async def _stored_id(self, key: str) -> str | None:
        known = self._known.get(key)
        if known is None and self.state is not None:
            try:
                stored = await self.state.get(key)
            except Exception as exc:  # storage trouble: the URL still works
                self._throttle.log(log, logging.WARNING, ("read",), "Stored attachment ids not readable (%s: %s); "
                                   "media go by their URL meanwhile", type(exc).__name__, exc)
                return None
            if isinstance(stored, dict) and isinstance(stored.get("id"), str) and isinstance(stored.get("at"), int):
                known = (stored["id"], stored["at"])
                self._remember(key, *known)
        if known is None:
            return None
        self._known.move_to_end(key)
        if now_ms() - known[1] >= ATTACHMENT_TTL_SECONDS * 1000:
            await self._forget(key)  # about to expire at Meta: upload it again
            return None
        return known[0]

    def _remember(self, key: str, attachment_id: str, at: int) -> None:
        self._known[key] = (attachment_id, at)
        self._known.move_to_end(key)
        while len(self._known) > MEMORY_LIMIT:
            self._known.popitem(last=False)

    async def _forget(self, key: str) -> None:
        self._known.pop(key, None)
        if self.state is not None:
            with contextlib.suppress(Exception):  # a stale id left in storage is refused and forgotten again
                await self.state.delete(key)

    # -- uploads ---------------------------------------------------------------------------------
    def _upload_later(self, binding: PageBinding, key: str, kind: str, url: str) -> None:
        if key in self._uploads or key in self._known:
            # One upload per URL at a time, other sends going by URL meanwhile; and none once its id is known
            # (a send by URL that began before an upload ended must not start another).
            return
        loop = asyncio.get_running_loop()
        failed_at = self._failed.get(key)
        if failed_at is not None and loop.time() - failed_at < RETRY_UPLOAD_AFTER_SECONDS:
            return
        if len(self._uploads) >= MAX_PENDING_UPLOADS:
            log.debug("attachment upload skipped: %d uploads already wait", len(self._uploads))
            return  # the next send of the URL asks again
        task = loop.create_task(self._upload(binding, key, kind, url), name=f"messenger-upload:{key[-12:]}")
        self._uploads[key] = task
        task.add_done_callback(lambda done: self._uploads.pop(key, None) if self._uploads.get(key) is done else None)

    async def _upload(self, binding: PageBinding, key: str, kind: str, url: str) -> None:
        platform = None if binding.platform == "messenger" else binding.platform
        where = f"{binding.platform} {binding.page_id}"
        async with self._slots:
            try:
                answer = await asyncio.wait_for(
                    binding.graph.upload_attachment(binding.facebook_page_id, kind, url, platform=platform,
                                                    timeout=UPLOAD_TIMEOUT), UPLOAD_TIMEOUT + 5)
            except (GraphApiError, TimeoutError) as exc:
                self._failed_upload(key)
                self._throttle.log(binding.bot.logger, logging.INFO, ("upload", where, getattr(exc, "code", None)),
                                   "A %s attachment of %s was not uploaded (%s): it goes by its URL, and the upload "
                                   "is tried again later", kind, where, exc or "no answer")
                return
        attachment_id = answer.get("attachment_id")
        if not isinstance(attachment_id, str | int) or not str(attachment_id).strip():
            self._failed_upload(key)
            self._throttle.log(binding.bot.logger, logging.WARNING, ("no id", where), "The Attachment Upload API "
                               "answered no attachment_id for %s: media go by their URL", where)
            return
        at = now_ms()
        self._remember(key, str(attachment_id), at)
        self._failed.pop(key, None)
        if self.state is not None:
            try:
                await self.state.set(key, {"id": str(attachment_id), "at": at, "type": kind})
            except Exception as exc:  # kept in memory; a restart uploads it again
                self._throttle.log(log, logging.WARNING, ("write",), "Attachment id not stored (%s: %s)",
                                   type(exc).__name__, exc)

    def _failed_upload(self, key: str) -> None:
        self._failed[key] = asyncio.get_running_loop().time()
        while len(self._failed) > MEMORY_LIMIT:
            self._failed.popitem(last=False)
