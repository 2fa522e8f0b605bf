"""What users and Page people do besides typing, in the emulator: webhook events as Meta sends them, and
the Graph routes that answer the bot about them.

Events (builders, also used by the chat): a photo or other attachment (``attachment_event``; the file
is hosted by the emulator itself, like Meta's CDN: ``host_media``, ``GET /_emulator/media/{name}``), a
reaction to a message (``reaction_event``), an edit (``edit_event``), an unsent message
(``unsend_event``), a person's answer from the Page Inbox (``inbox_echo``), a comment on a Page post
(``comment_change`` in a ``feed`` delivery, ``feed_body``).

Graph, with Meta's rules: sender actions ``react``/``unreact`` (``payload.message_id``, ``reaction``);
private replies (Send API ``recipient: {"comment_id"}``): one per comment (error 10900 after), within
7 days of it (error 10903 after), answered with the author's PSID; public replies ``POST
/{comment-id}/comments`` (``{"id"}`` of the new comment).
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .events import user_event, webhook_body
from .faults import GraphError
from .routing import PAGE_INBOX_APP_ID
from .send_checks import SENDER_ACTIONS, check_message

REACTIONS = ("react", "unreact")
# What POST /_emulator/send may ask besides text, postback and quick_reply.
ACTIVITY_KEYS = ("image", "attachment", "react", "unreact", "edit", "unsend", "replyTo", "inbox", "comment")
PRIVATE_REPLY_DAYS = 7
SAMPLE_IMAGE = "sample.png"
# A 1x1 PNG: what /image sends when no file is named.
SAMPLE_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                           "1f15c4890000000d49444154789c6360f8cfc0000003010100c9fe92ef0000000049454e44ae426082")
MAX_HOSTED_BYTES = 30 * 1024 * 1024


def _now() -> int:
    return int(time.time() * 1000)


def _mid(psid: str, kind: str) -> str:
    return f"m_{psid}_{_now()}_{hashlib.sha1(f'{kind}:{time.time_ns()}'.encode()).hexdigest()[:10]}"


def attachment_event(page_id: str, psid: str, url: str, kind: str = "image", *,
                     sticker_id: int | None = None) -> dict[str, Any]:
    """A user sends one attachment (image, audio, video, file, sticker) hosted at ``url``."""
    payload: dict[str, Any] = {"url": url}
    if sticker_id is not None:
        payload["sticker_id"] = sticker_id
    return {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": _now(),
            "message": {"mid": _mid(psid, kind), "attachments": [{"type": kind, "payload": payload}]}}


def reaction_event(page_id: str, psid: str, mid: str, emoji: str = "👍", *, action: str = "react") -> dict[str, Any]:
    """A user reacts to (or unreacts from) the message ``mid``."""
    names = {"👍": "like", "❤": "love", "❤️": "love", "😆": "smile", "😮": "wow", "😢": "sad", "😠": "angry"}
    body: dict[str, Any] = {"action": action, "mid": mid}
    if action == "react":
        body.update(emoji=emoji, reaction=names.get(emoji, "other"))
    return {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": _now(), "reaction": body}


def edit_event(page_id: str, psid: str, mid: str, text: str, num_edit: int = 1) -> dict[str, Any]:
    """A user edits their message ``mid`` to ``text``."""
    return {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": _now(),
            "message_edit": {"mid": mid, "text": text, "num_edit": num_edit}}


def unsend_event(page_id: str, psid: str, mid: str) -> dict[str, Any]:
    """A user unsends their message ``mid``."""
    return {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": _now(),
            "message": {"mid": mid, "is_deleted": True}}


def reply_event(page_id: str, psid: str, text: str, reply_to: str) -> dict[str, Any]:
    """A user quotes the message ``reply_to`` and answers it with ``text``."""
    return {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": _now(),
            "message": {"mid": _mid(psid, "reply"), "text": text, "reply_to": {"mid": reply_to,
                                                                               "is_self_reply": False}}}


def inbox_echo(page_id: str, psid: str, text: str, app_id: str) -> dict[str, Any]:
    """A person answers ``psid`` from the Page Inbox (app ``app_id``): the echo Meta sends the bot's app."""
    return {"sender": {"id": page_id}, "recipient": {"id": psid}, "timestamp": _now(),
            "message": {"mid": _mid(page_id, "echo"), "is_echo": True, "app_id": int(app_id), "text": text}}


def comment_change(page_id: str, author: str, text: str, *, name: str = "Test User", post_id: str | None = None,
                   comment_id: str | None = None, created_s: int | None = None, verb: str = "add") -> dict[str, Any]:
    """A ``feed`` change: ``author`` comments ``text`` on a post of the Page."""
    post_id = post_id or f"{page_id}_{secrets.randbelow(10**12)}"
    comment_id = comment_id or f"{post_id.split('_')[-1]}_{secrets.randbelow(10**12)}"
    return {"field": "feed", "value": {
        "from": {"id": author, "name": name}, "post": {"id": post_id, "status_type": "added_photos"},
        "message": text, "post_id": post_id, "comment_id": comment_id, "created_time": created_s or int(time.time()),
        "item": "comment", "parent_id": post_id, "verb": verb}}


def feed_body(page_id: str, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """A delivery of the Page's feed changes (comments), as Meta makes it."""
    return {"object": "page", "entry": [{"id": page_id, "time": _now(), "changes": changes}]}


def check_sender_action(body: dict[str, Any]) -> None:
    """Send API sender actions: typing and seen alone, ``react``/``unreact`` with their ``payload``."""
    action = body.get("sender_action")
    if action in SENDER_ACTIONS:
        return
    if action not in REACTIONS:
        raise GraphError(400, 100, "(#100) Param sender_action must be one of {TYPING_ON, TYPING_OFF, MARK_SEEN, "
                         "REACT, UNREACT}")
    payload = body.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("message_id"), str) or not payload["message_id"]:
        raise GraphError(400, 100, "(#100) payload.message_id is required to react to a message")
    if action == "react" and (not isinstance(payload.get("reaction"), str) or not payload["reaction"]):
        raise GraphError(400, 100, "(#100) payload.reaction (an emoji) is required to react")


class ActivityApi:
    """Media hosting, comments and replies to them, mixed into ``GraphEmulator``."""

    comments: dict[str, dict[str, Any]]  # comment id -> {page, author, created (ms), replied}
    hosted: dict[str, tuple[bytes, str]]  # name -> (bytes, content type)
    calls: list[dict[str, Any]]
    _ids: itertools.count[int]
    url: str
    clock: Callable[[], int]

    def init_activity(self) -> None:
        self.comments = {}
        self.hosted = {SAMPLE_IMAGE: (SAMPLE_PNG, "image/png")}
        self.clock = _now

    def add_activity_routes(self, app: web.Application) -> None:
        app.router.add_get("/_emulator/media/{name}", self._serve_media)
        app.router.add_post("/_emulator/media", self._upload_media)

    # -- media, as Meta's CDN would serve it -------------------------------------------------------
    def host_media(self, data: bytes, content_type: str, name: str = "") -> str:
        """Serve ``data`` at a URL of the emulator; returns the URL (for an attachment a user sends)."""
        if len(data) > MAX_HOSTED_BYTES:
            raise ValueError(f"at most {MAX_HOSTED_BYTES} bytes can be hosted")
        suffix = name.rsplit(".", 1)[-1] if "." in name else "bin"
        key = f"{secrets.token_hex(8)}.{''.join(c for c in suffix if c.isalnum())[:8] or 'bin'}"
        self.hosted[key] = (data, content_type or "application/octet-stream")
        return f"{self.url}/_emulator/media/{key}"

    def sample_image_url(self) -> str:
        return f"{self.url}/_emulator/media/{SAMPLE_IMAGE}"

    async def _serve_media(self, request: web.Request) -> web.Response:
        hosted = self.hosted.get(request.match_info["name"])
        if hosted is None:
            raise web.HTTPNotFound(text="URL signature expired")
        return web.Response(body=hosted[0], headers={"Content-Type": hosted[1]})

    async def _upload_media(self, request: web.Request) -> web.Response:
        """``POST /_emulator/media`` with the file as body (its Content-Type kept): ``{"url"}`` to send it."""
        data = await request.read()
        try:
            url = self.host_media(data, request.headers.get("Content-Type", ""), request.query.get("name", ""))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=413)
        return web.json_response({"url": url}, status=201)

    # -- comments ------------------------------------------------------------------------------------
    def add_comment(self, page_id: str, author: str, text: str, **options: Any) -> dict[str, Any]:
        """A comment the emulator knows (so it can be answered); returns its ``feed`` change."""
        change = comment_change(page_id, author, text, **options)
        value = change["value"]
        self.comments[value["comment_id"]] = {"page": page_id, "author": author,
                                              "created": int(value["created_time"]) * 1000, "replied": False}
        return change

    def private_reply(self, page_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send API with ``recipient: {"comment_id"}``: Meta's private reply rules."""
        comment_id = str(body["recipient"]["comment_id"])
        comment = self.comments.get(comment_id)
        if comment is None or comment["page"] != page_id:
            raise GraphError(400, 100, f"(#100) No comment with ID '{comment_id}' on this Page")
        if comment["replied"]:
            raise GraphError(400, 10900, "Activity already replied to")
        if self.clock() - comment["created"] > PRIVATE_REPLY_DAYS * 86_400_000:
            raise GraphError(400, 10903, "This user cant reply to this activity")
        if "sender_action" in body or "message" not in body:
            raise GraphError(400, 100, "(#100) A private reply is a message")
        check_message(body["message"])
        comment["replied"] = True
        return {"recipient_id": comment["author"], "message_id": f"m_emulated_{next(self._ids)}"}

    def comment_route(self, method: str, path: str, page_id: str, body: Any) -> dict[str, Any] | None:
        """``POST /{comment-id}/comments``: a public reply under a comment; None for other paths."""
        parts = path.strip("/").split("/")
        if len(parts) != 2 or parts[1] != "comments" or "_" not in parts[0]:
            return None
        comment = self.comments.get(parts[0])
        if method != "POST":
            raise GraphError(400, 100, f"Unsupported {method} request")
        if comment is None or comment["page"] != page_id:
            raise GraphError(400, 100, f"(#100) No comment with ID '{parts[0]}' on this Page")
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message.strip():
            raise GraphError(400, 100, "(#100) param message is required")
        return {"id": f"{parts[0].split('_')[0]}_{next(self._ids)}"}

    # -- what the Page said ----------------------------------------------------------------------------
    def last_page_message(self, page_id: str, psid: str) -> tuple[str, str] | None:
        """(mid, text) of the last message the Page sent ``psid`` (what a user's reaction is about)."""
        for call in reversed(self.calls):
            body = call.get("json") if call.get("accepted") else None
            answer = call.get("answer") or {}
            if isinstance(body, dict) and "message" in body and call.get("page") == page_id \
                    and (body.get("recipient") or {}).get("id") == psid and answer.get("message_id"):
                message = body["message"]
                text = message.get("text") or f"[{(message.get('attachment') or {}).get('type', 'message')}]"
                return str(answer["message_id"]), str(text)
        return None

    # -- POST /_emulator/send ------------------------------------------------------------------------
    def delivery_for(self, page_id: str, psid: str, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The delivery a ``/_emulator/send`` request asks for, and its event (or feed change).

        ``text`` | ``postback`` | ``quick_reply`` (with ``title``); ``image`` (a URL; ``""``: a sample picture)
        or ``attachment`` (a kind) with ``url``; ``react`` (an emoji) or ``unreact``, with ``mid`` (default: the
        Page's last message to the user); ``edit`` (the new text) with ``mid``; ``unsend`` (a mid); ``text``
        with ``replyTo`` (a mid); ``inbox`` (a person's answer from the Page Inbox, or ``app``'s); ``comment``
        (a comment on a Page post, ``post`` optional). ValueError says what is missing.
        """
        if "comment" in spec:
            change = self.add_comment(page_id, psid, str(spec["comment"]), post_id=spec.get("post") or None,
                                      name=str(spec.get("name") or "Test User"))
            return feed_body(page_id, [change]), change
        if "image" in spec or "attachment" in spec:
            url = str(spec.get("image") or spec.get("url") or "") or self.sample_image_url()
            event = attachment_event(page_id, psid, url, str(spec.get("attachment") or "image"))
        elif "react" in spec or "unreact" in spec:
            mid = spec.get("mid")
            if not mid:
                last = self.last_page_message(page_id, psid)
                if last is None:
                    raise ValueError("no message of the Page to react to yet: give \"mid\"")
                mid = last[0]
            action = "unreact" if "unreact" in spec else "react"
            event = reaction_event(page_id, psid, str(mid), str(spec.get("react") or "👍"), action=action)
        elif "edit" in spec or "unsend" in spec:
            mid = spec.get("mid") or spec.get("unsend")
            if not isinstance(mid, str) or not mid:
                raise ValueError("give the \"mid\" of the user's message to edit or unsend")
            event = edit_event(page_id, psid, mid, str(spec["edit"])) if "edit" in spec \
                else unsend_event(page_id, psid, mid)
        elif "inbox" in spec:
            event = inbox_echo(page_id, psid, str(spec["inbox"]), str(spec.get("app") or PAGE_INBOX_APP_ID))
        elif "replyTo" in spec:
            event = reply_event(page_id, psid, str(spec.get("text") or ""), str(spec["replyTo"]))
        else:
            event = user_event(page_id, psid, text=spec.get("text"), postback=spec.get("postback"),
                               quick_reply=spec.get("quick_reply"), title=spec.get("title"))
        return webhook_body(page_id, [event]), event
