"""Outgoing payloads that are no message to the user but an act of the Page, given as ``custom`` payloads in
Meta's own shapes (the core knows only the standard payload types):

- a reaction to a message (reactions.py): ``{"type": "custom", "messenger": {"sender_action": "react",
  "payload": {"reaction": "👍", "message_id"?}}}``, or ``"sender_action": "unreact"``;
- a public reply under a comment (comments.py): ``{"type": "custom", "messenger": {"public_reply":
  {"message": "Thanks!", "comment_id"?}}}``.

Without ``message_id`` (``comment_id``) they answer the message (the comment) bot logic is answering
(answering.py fills it in). They are sent on their own, failures reported like any reply's.
"""

from __future__ import annotations

from typing import Any

from botpress_py.sdk import IOEvent

from .comments import public_reply
from .pages import PageBinding
from .reactions import REACTION_ACTIONS, reaction_body


def page_action(payload: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``("reaction" | "public_reply", the messenger part)`` of such a payload, or None."""
    if payload.get("type") != "custom" or not isinstance(payload.get("messenger"), dict):
        return None
    native = payload["messenger"]
    if native.get("sender_action") in REACTION_ACTIONS:
        return "reaction", native
    if isinstance(native.get("public_reply"), dict):
        return "public_reply", native
    return None


async def send_page_action(binding: PageBinding, event: IOEvent, kind: str, native: dict[str, Any]) -> None:
    """Send one; GraphApiError (a DeliveryError: retried when transient) or a permanent DeliveryError."""
    if kind == "reaction":
        await binding.graph.send(reaction_body(event.target, native))
        return
    comment = await public_reply(binding, native["public_reply"])
    if comment:
        event.flags["channelMessageId"] = comment  # the public reply's own comment id
