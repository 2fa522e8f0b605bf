"""Outgoing payloads that are no message to the user but an act of the Page: a reaction to a message
(reactions.py) and a public reply under a comment (comments.py)."""

from __future__ import annotations

from botpress_py.sdk import IOEvent

from .comments import public_reply
from .pages import PageBinding
from .reactions import reaction_body

PAGE_ACTIONS = frozenset({"reaction", "comment-reply"})


async def send_page_action(binding: PageBinding, event: IOEvent) -> None:
    """Send one; GraphApiError (a DeliveryError: retried when transient) or a permanent DeliveryError."""
    if event.payload.get("type") == "reaction":
        await binding.graph.send(reaction_body(event))
        return
    comment = await public_reply(binding, event)
    if comment:
        event.flags["channelMessageId"] = comment  # the public reply's own comment id
