"""What a reply needs to know of the message it answers, remembered between bot logic and the outbox.

An outgoing event names only the incoming event it answers (``incomingEventId``). Some replies need more:
a reaction without ``message_id`` reacts to the user's message (its Messenger mid), a public reply without
``comment_id`` answers the comment, and any other reply to a ``comment`` event goes to that comment as
Meta's one private reply (actions.py, comments.py). The incoming middleware notes them just before bot
logic runs (``note``); ``transform_output``, which runs while bot logic replies and before the reply is
stored, copies them into the reply (``prepare``): into its payload or its flags (``privateReply``). Stored
with the reply, they survive a restart; the notes themselves are memory only, and a replayed event is
noted again by the middleware before its bot logic runs again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from botpress_py.sdk import IOEvent

from .actions import page_action
from .comments import comment_context
from .incoming import CHANNEL

MAX_NOTES = 10_000
# Replies that are no message of their own: they never use up a comment's one private reply.
NOT_MESSAGES = frozenset({"typing"})


class Answering:
    def __init__(self) -> None:
        self._notes: OrderedDict[str, dict[str, Any]] = OrderedDict()  # incoming event id -> what replies need

    def note(self, event: IOEvent) -> None:
        """Before bot logic: remember the event's mid, and the comment it is."""
        if event.channel != CHANNEL or event.direction != "incoming":
            return
        note: dict[str, Any] = {}
        mid = event.payload.get("mid")
        if isinstance(mid, str) and event.type not in ("reaction", "delete"):
            note["mid"] = mid  # a reaction's or a deletion's mid is another message's
        if event.type == "comment":
            note["comment"] = comment_context(event.payload)
            note["privateReplies"] = 0
        if not note:
            return
        self._notes[event.id] = note
        self._notes.move_to_end(event.id)
        while len(self._notes) > MAX_NOTES:
            self._notes.popitem(last=False)

    def prepare(self, event: IOEvent) -> None:
        """``transform_output`` of a Messenger reply: address it as its incoming event requires."""
        note = self._notes.get(event.incomingEventId or "")
        if note is None:
            return
        action = page_action(event.payload)
        comment = note.get("comment")
        if action is not None:
            kind, native = action
            if kind == "reaction" and note.get("mid"):
                payload = native.setdefault("payload", {})
                if isinstance(payload, dict):
                    payload.setdefault("message_id", note["mid"])
            elif kind == "public_reply" and comment is not None:
                native["public_reply"].setdefault("comment_id", comment["commentId"])
            return
        if comment is None:
            return
        if event.payload.get("type") in NOT_MESSAGES:
            # Addressed to the comment too, so that it renders to nothing (no typing without a conversation).
            event.flags["privateReply"] = {**comment, "used": False}
            return
        # Meta allows one private reply per comment: the first message of bot logic's answer is it.
        event.flags["privateReply"] = {**comment, "used": note["privateReplies"] > 0}
        note["privateReplies"] += 1
