"""What a visitor may send, and what a visitor's browser receives.

Incoming: ``text``, ``quick_reply`` (a choice button: its title and value) and ``postback``
(a card button: its payload and title). Every field is checked here, at the boundary, so
storage and bot logic only ever see well-formed strings of bounded length.

Outgoing: stored or delivered events become one small JSON shape for the browser
(``public_message``); the browser renders it, escaping every text.
"""

from __future__ import annotations

import re
from typing import Any

from botpress_py.sdk import IOEvent

CHANNEL = "web"
INCOMING_TYPES = ("text", "quick_reply", "postback")
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CLIENT_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_PAYLOAD_VALUE = 1000  # a postback or quick-reply value: bot-made strings, never long
MAX_TITLE = 200


class BadInput(ValueError):
    """A request the visitor must fix: ``field`` names where, the message says what."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _string(body: dict[str, Any], key: str, where: str, *, max_length: int, required: bool = True,
            allow_empty: bool = False) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BadInput(f"{where}.{key}", "must be a string" if key in body else "is required")
    if not allow_empty and not value.strip():
        raise BadInput(f"{where}.{key}", "must not be empty")
    if len(value) > max_length:
        raise BadInput(f"{where}.{key}", f"is longer than {max_length} characters")
    if "\x00" in value:
        raise BadInput(f"{where}.{key}", "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{where}.{key}", "is not valid unicode text") from None
    return value


def incoming_payload(raw: Any, max_text: int) -> tuple[dict[str, Any], str]:
    """The payload to store and its preview, or BadInput."""
    if not isinstance(raw, dict):
        raise BadInput("payload", "must be an object such as {\"type\": \"text\", \"text\": \"hello\"}")
    kind = raw.get("type")
    if kind == "text":
        text = _string(raw, "text", "payload", max_length=max_text)
        return {"type": "text", "text": text}, text
    if kind == "quick_reply":
        title = _string(raw, "text", "payload", max_length=MAX_TITLE)
        value = _string(raw, "payload", "payload", max_length=MAX_PAYLOAD_VALUE)
        return {"type": "quick_reply", "text": title, "payload": value}, title
    if kind == "postback":
        value = _string(raw, "payload", "payload", max_length=MAX_PAYLOAD_VALUE)
        title = _string(raw, "title", "payload", max_length=MAX_TITLE, required=False, allow_empty=True)
        return {"type": "postback", "payload": value, "title": title}, title or value
    raise BadInput("payload.type", f"must be one of {', '.join(INCOMING_TYPES)}")


def conversation_id(raw: Any, where: str = "conversationId") -> str:
    if not isinstance(raw, str) or not CONVERSATION_ID.match(raw):
        raise BadInput(where, "must be a conversation id from POST .../conversations (letters, digits, - and _)")
    return raw


def client_message_id(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not CLIENT_MESSAGE_ID.match(raw):
        raise BadInput("clientMessageId", "must be 1 to 64 letters, digits, - or _")
    return raw


def shown_payload(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The payload the browser renders: ``custom`` shows its ``web`` part (a standard payload)
    when it has one; anything else custom, and typing, is not part of the visible history."""
    kind = payload.get("type")
    if kind == "custom":
        web = payload.get("web")
        if isinstance(web, dict) and web.get("type") not in (None, "custom", "typing"):
            return web
        return None
    if kind == "typing":
        return None
    return payload


def public_message(event: dict[str, Any], seq: int | None = None) -> dict[str, Any] | None:
    """One history entry (or a delivered event's dict) as the browser gets it, or None when hidden."""
    payload = shown_payload(event.get("payload") or {})
    if payload is None:
        return None
    message: dict[str, Any] = {
        "id": event.get("id"),
        "conversationId": event.get("threadId"),
        "direction": event.get("direction"),
        "type": payload.get("type"),
        "payload": payload,
        "createdOn": event.get("createdOn"),
    }
    if seq is not None:
        message["seq"] = seq
    client_id = (event.get("flags") or {}).get("clientMessageId")
    if client_id:
        message["clientMessageId"] = client_id
    return message


def incoming_event(bot_id: str, user_id: str, conversation: str, payload: dict[str, Any], preview: str,
                   client_id: str | None) -> IOEvent:
    return IOEvent(
        type=payload["type"], channel=CHANNEL, direction="incoming", botId=bot_id, target=user_id,
        threadId=conversation, payload=payload, preview=preview,
        # The visitor's browser retries a send after a network blip with the same id: the retry is
        # recognised as the same message (per visitor, so visitors cannot collide).
        dedupeKey=f"{user_id}:{client_id}" if client_id else None,
        flags={"clientMessageId": client_id} if client_id else {},
    )
