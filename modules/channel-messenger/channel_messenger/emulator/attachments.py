"""The Graph emulator's Attachment Upload API: attachment ids per Page and platform, and their expiry.

- ``POST /{page-id}/message_attachments`` (or ``/me/…``) with ``{"message": {"attachment": {"type",
  "payload": {"url", "is_reusable": true}}}, "platform"?: "instagram"}`` answers
  ``{"attachment_id"}``, as Meta does;
- a Send API message with ``payload.attachment_id`` is refused with error #100 when the id is not
  one this Page uploaded for that platform (a Messenger id on Instagram, say), when its type differs
  from the attachment's, or once it expired (``expire``, or ``POST /_emulator/attachments/expire``);
- ``broken_urls`` makes uploads of those URLs fail as when Meta cannot fetch them.

Errors are raised through the ``error`` factory the emulator passes in (its ``GraphError``).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

MEDIA_TYPES = ("image", "audio", "video", "file")
PLATFORMS = ("messenger", "instagram")
FETCH_FAILED_SUBCODE = 2018008  # Meta: "Failed to fetch the file from the url"

ErrorFactory = Callable[..., Exception]


class AttachmentStore:
    """Uploaded attachments: ``items`` maps an attachment id to ``{page, platform, type, url, time, expired}``."""

    def __init__(self, error: ErrorFactory) -> None:
        self.error = error
        self.items: dict[str, dict[str, Any]] = {}
        self.broken_urls: set[str] = set()
        self._ids = itertools.count(1)

    def route(self, method: str, path: str, page_id: str, body: Any, *,
              instagram_linked: bool) -> dict[str, Any] | None:
        """Answer an upload, or None when ``path`` is not the Attachment Upload API."""
        match = re.fullmatch(r"/([0-9]+|me)/message_attachments", path)
        if match is None:
            return None
        if method != "POST":
            raise self.error(400, 100, f"Unsupported {method} request")
        if match.group(1) not in ("me", page_id):
            raise self.error(400, 100, "(#100) The Page of the access token differs from the Page in the path")
        body = body if isinstance(body, dict) else {}
        platform = body.get("platform") or "messenger"
        if platform not in PLATFORMS:
            raise self.error(400, 100, "(#100) param platform must be one of {MESSENGER, INSTAGRAM}")
        if platform == "instagram" and not instagram_linked:
            raise self.error(400, 100, "(#100) The Page has no Instagram professional account linked")
        message = body.get("message")
        attachment = message.get("attachment") if isinstance(message, dict) else None
        payload = attachment.get("payload") if isinstance(attachment, dict) else None
        kind = attachment.get("type") if isinstance(attachment, dict) else None
        if kind not in MEDIA_TYPES or not isinstance(payload, dict):
            raise self.error(400, 100, "(#100) param message[attachment][type] must be one of image, audio, video, "
                                       "file, with a payload")
        url = payload.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://", url):
            raise self.error(400, 100, "(#100) payload.url must be an http(s) URL")
        if payload.get("is_reusable") is not True:
            raise self.error(400, 100, "(#100) payload.is_reusable must be true to get a reusable attachment_id")
        if url in self.broken_urls:
            raise self.error(400, 100, "(#100) Failed to fetch the file from the url", subcode=FETCH_FAILED_SUBCODE)
        attachment_id = str(10**15 + next(self._ids))
        self.items[attachment_id] = {"page": page_id, "platform": platform, "type": kind, "url": url,
                                     "time": time.time(), "expired": False}
        return {"attachment_id": attachment_id}

    def check_send(self, page_id: str, platform: str, message: Any) -> None:
        """A message sending an ``attachment_id`` must name a live attachment of this Page and platform."""
        attachment = message.get("attachment") if isinstance(message, dict) else None
        payload = attachment.get("payload") if isinstance(attachment, dict) else None
        if not isinstance(payload, dict) or payload.get("attachment_id") is None:
            return
        item = self.items.get(str(payload["attachment_id"]))
        if item is None or item["page"] != page_id or item["platform"] != platform or item["expired"] \
                or item["type"] != attachment.get("type"):
            raise self.error(400, 100, "(#100) The attachment_id is invalid, expired or not this Page's")

    def expire(self, ids: Iterable[str] | None = None) -> int:
        """Expire these attachments (all when None); returns how many were live."""
        chosen = self.items if ids is None else {i: self.items[i] for i in ids if i in self.items}
        live = [item for item in chosen.values() if not item["expired"]]
        for item in live:
            item["expired"] = True
        return len(live)

    def uploads(self, page_id: str | None = None) -> list[dict[str, Any]]:
        return [{"id": i, **item} for i, item in self.items.items() if page_id is None or item["page"] == page_id]


def add_control_routes(app: web.Application, store: AttachmentStore) -> None:
    """``GET /_emulator/attachments`` (every upload) and ``POST /_emulator/attachments/expire`` (``{"ids"?}``)."""

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"attachments": store.uploads(request.query.get("page") or None)})

    async def expire(request: web.Request) -> web.Response:
        spec: Any = {}
        if request.can_read_body:
            try:
                spec = await request.json()
            except ValueError:
                return web.json_response({"error": "the body must be JSON"}, status=400)
        ids = spec.get("ids") if isinstance(spec, dict) else None
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            return web.json_response({"error": "ids must be a list of attachment ids"}, status=400)
        return web.json_response({"expired": store.expire(ids)})

    app.router.add_get("/_emulator/attachments", listing)
    app.router.add_post("/_emulator/attachments/expire", expire)
