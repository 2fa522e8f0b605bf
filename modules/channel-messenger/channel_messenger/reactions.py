"""Reactions, edits and unsent messages: what they become for bot logic, and the bot reacting itself.

Incoming (Meta's webhook references: ``message_reactions``, ``message_edits``, ``messages``):

- ``{"reaction": {"reaction", "emoji", "action": "react"|"unreact", "mid"}}`` → a ``reaction`` event,
  payload ``{"reaction", "emoji", "action", "mid"}`` (``mid``: the message reacted to);
- ``{"message_edit": {"mid", "text", "num_edit"}}`` → an ``edit`` event, payload ``{"mid", "text",
  "numEdit"}``; with ``rerunOnEdit`` a ``text`` event instead, payload ``{"text", "mid", "edited": true,
  "numEdit"}``, so bot logic answers the new text as it answers any message;
- ``{"message": {"mid", "is_deleted": true}}`` (the user unsent it) → a ``delete`` event, payload ``{"mid"}``.

They reach bot logic like messages (qna answers none of them) and are recorded in history. These
functions build their parts from checked values only (validation.py); incoming.py makes the events.

Outgoing: ``{"type": "custom", "messenger": {"sender_action": "react", "payload": {"reaction": "👍",
"message_id"?}}}`` (or ``"unreact"``) is sent as that Send API sender action (Meta's "Sender Actions" guide,
2026). Without ``message_id``, the message answered is reacted to (answering.py fills it in).
"""

from __future__ import annotations

import hashlib
from typing import Any

from botpress_py.sdk import DeliveryError, IOEvent

from .validation import Malformed, a_mid, a_text, optional_text

REACTION_ACTIONS = ("react", "unreact")
MAX_EMOJI_CHARS = 32
Parts = tuple[str, dict[str, Any], str, str]  # (event type, payload, preview, dedupe key)


def reaction_parts(body: dict[str, Any], content_key: str) -> Parts:
    """A ``reaction`` webhook body → its event's parts. ``content_key``: dedupe for the whole change (a
    reaction has no id of its own, and the same user may react, unreact and react again to one message)."""
    action = body.get("action")
    if action not in REACTION_ACTIONS:
        raise Malformed("reaction.action", "expected \"react\" or \"unreact\"")
    mid = a_mid(body.get("mid"), "reaction.mid")
    emoji = optional_text(body.get("emoji"), MAX_EMOJI_CHARS)
    name = optional_text(body.get("reaction"), MAX_EMOJI_CHARS)
    payload: dict[str, Any] = {"action": action, "mid": mid, "emoji": emoji, "reaction": name}
    preview = f"[{action} {emoji or name or ''}]".replace(" ]", "]")
    return "reaction", payload, preview, content_key


def edit_parts(body: dict[str, Any]) -> Parts:
    """A ``message_edit`` webhook body → an ``edit`` event's parts (deduplicated per edit of the message)."""
    mid = a_mid(body.get("mid"), "message_edit.mid")
    text = a_text(body.get("text", ""), "message_edit.text")
    count = body.get("num_edit")
    number = count if isinstance(count, int) and not isinstance(count, bool) and 0 <= count < 1000 else None
    if isinstance(count, str) and count.isdigit() and len(count) < 4:
        number = int(count)
    payload: dict[str, Any] = {"mid": mid, "text": text, "numEdit": number}
    return "edit", payload, text, f"{mid}#edit{number if number is not None else ''}:{hash_text(text)}"


def deleted_parts(message: dict[str, Any]) -> Parts:
    """A message the user unsent (``is_deleted``) → a ``delete`` event's parts."""
    mid = a_mid(message.get("mid"), "message.mid")
    return "delete", {"mid": mid}, "[message deleted]", f"{mid}#deleted"


def hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:12]


def rerun_edits(events: list[IOEvent]) -> None:
    """``rerunOnEdit``: each ``edit`` becomes a ``text`` event, which bot logic answers like a message."""
    for event in events:
        if event.type == "edit" and not event.silent:
            event.type = "text"
            event.payload = {"type": "text", "text": event.payload.get("text", ""), "mid": event.payload.get("mid"),
                             "edited": True, "numEdit": event.payload.get("numEdit")}


def reaction_body(psid: str, native: dict[str, Any]) -> dict[str, Any]:
    """The Send API body of a ``custom`` reaction (``{"sender_action", "payload": {"message_id", "reaction"}}``);
    DeliveryError (permanent) when it cannot be sent at all."""
    action = native.get("sender_action")
    payload = native.get("payload") if isinstance(native.get("payload"), dict) else {}
    mid = payload.get("message_id")
    if not isinstance(mid, str) or not mid:
        raise DeliveryError("a reaction needs payload.message_id, the message to react to (a reply to a user's "
                            "message reacts to that message by itself)", permanent=True)
    body: dict[str, Any] = {"recipient": {"id": psid}, "sender_action": action, "payload": {"message_id": mid}}
    if action == "react":
        emoji = payload.get("reaction")
        if not isinstance(emoji, str) or not emoji.strip() or len(emoji) > MAX_EMOJI_CHARS:
            raise DeliveryError(f"a reaction needs payload.reaction, an emoji (at most {MAX_EMOJI_CHARS} characters)",
                                permanent=True)
        body["payload"]["reaction"] = emoji.strip()
    return body
