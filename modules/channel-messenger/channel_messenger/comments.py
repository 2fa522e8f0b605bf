"""Comments on the Page's posts (webhook field ``feed``) and the replies bot logic may give them.

A Page webhook entry carries ``changes`` instead of ``messaging``: ``{"field": "feed", "value": {"item":
"comment", "verb": "add", "comment_id", "post_id", "parent_id"?, "message"?, "from": {"id", "name"}?,
"created_time": seconds, "photo"?}}``. Each new comment (verb ``add``) by someone other than the Page
becomes a ``comment`` event on the ``messenger`` channel, payload ``{"commentId", "postId", "parentId",
"text", "author": {"id", "name"}, "createdTime" (ms), "photo"?}``, whose user is the author (the comment id
when Meta leaves ``from`` out). Edits, removals, hides, the Page's own comments and other feed items
(posts, reactions, shares) are ignored, as Meta's Private Replies guide does; a change that cannot be read
is skipped and logged like any event.

Replies, per Meta's Private Replies guide (2026): **one** message to the comment's author, sent with the
Send API and ``recipient: {"comment_id"}``, within **7 days** of the comment. Bot logic answers a comment
event with ``bot.reply`` like any message: the first message goes as that private reply (answering.py marks
it), every later one is refused with the reason, and so is one past the 7 days. Meta answers with the
author's PSID; once the person answers in Messenger the conversation continues there, in that PSID's own
conversation. ``{"type": "custom", "messenger": {"public_reply": {"message"}}}`` answers in public instead,
under the comment (Graph ``POST /{comment-id}/comments``, permission ``pages_manage_engagement``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botpress_py.sdk import DeliveryError, IOEvent

from .incoming import CHANNEL, PREVIEW_CHARS
from .pages import PageBinding
from .rendering import Pause, Rendering
from .validation import Malformed, a_text, an_id, event_time, kind_of, object_at, optional_id, optional_text

PRIVATE_REPLY_WINDOW_MS = 7 * 86_400_000
MAX_PUBLIC_REPLY_CHARS = 8000


def entry_comments(entry: dict[str, Any], page_id: str, received_ms: int) -> Iterator[IOEvent | Malformed]:
    """The ``comment`` events of one entry's ``changes``, with a ``Malformed`` for each change that cannot be
    read (ignored changes yield nothing)."""
    changes = entry.get("changes")
    if changes is None:
        return
    if not isinstance(changes, list):
        yield Malformed("entry.changes", f"expected a list, got {kind_of(changes)}")
        return
    for index, change in enumerate(changes):
        try:
            event = comment_event(change, index, page_id, received_ms)
        except Malformed as exc:
            yield exc
            continue
        if event is not None:
            yield event


def comment_event(change: Any, index: int, page_id: str, received_ms: int) -> IOEvent | None:
    where = f"changes[{index}]"
    change = object_at(change, where)
    if change.get("field") != "feed":
        return None  # another Page field the App subscribed to: not ours
    value = object_at(change.get("value"), f"{where}.value")
    if value.get("item") != "comment" or value.get("verb") != "add":
        return None  # posts, reactions, shares; edits, removals and hides of comments
    author = value.get("from") if isinstance(value.get("from"), dict) else {}
    author_id = optional_id(author.get("id"))
    if author_id == page_id:
        return None  # the Page's own comment (a person or an app answering in public)
    comment_id = an_id(value.get("comment_id"), f"{where}.value.comment_id")
    post_id = an_id(value.get("post_id"), f"{where}.value.post_id")
    text = a_text(value["message"], f"{where}.value.message") if value.get("message") is not None else ""
    created = value.get("created_time")
    seconds = created if isinstance(created, int) and not isinstance(created, bool) else None
    created_ms = event_time(seconds * 1000, received_ms) if seconds is not None and seconds < 2**40 else None
    payload: dict[str, Any] = {
        "type": "comment", "commentId": comment_id, "postId": post_id,
        "parentId": optional_id(value.get("parent_id")), "text": text,
        "author": {"id": author_id, "name": optional_text(author.get("name"), 200)},
        "createdTime": created_ms or received_ms,
    }
    photo = optional_text(value.get("photo"), 4096)
    if photo:
        payload["photo"] = photo
    return IOEvent(type="comment", channel=CHANNEL, direction="incoming", botId="", target=author_id or comment_id,
                   threadId=page_id, payload=payload, preview=(text or "[comment]")[:PREVIEW_CHARS],
                   createdOn=created_ms or received_ms, dedupeKey=f"comment:{comment_id}")


def comment_context(payload: dict[str, Any]) -> dict[str, Any]:
    """What a reply needs of a comment event: its id and when it was made."""
    return {"commentId": payload.get("commentId"), "postId": payload.get("postId"),
            "createdTime": payload.get("createdTime")}


def private_reply(event: IOEvent) -> dict[str, Any] | None:
    """The comment an outgoing event answers privately (flagged by answering.py), or None."""
    comment = event.flags.get("privateReply")
    return comment if isinstance(comment, dict) and isinstance(comment.get("commentId"), str) else None


def as_private_reply(rendering: Rendering, comment: dict[str, Any], now_ms: int) -> Rendering:
    """The rendering of a reply to a comment, addressed to the comment: one message, within 7 days.

    Sender actions and pauses are left out (there is no conversation yet to show them in). Raises a
    permanent DeliveryError when Meta's rules forbid the reply: it is recorded as failed with the reason.
    """
    messages = [step for step in rendering.steps if not isinstance(step, Pause) and "message" in step]
    if not messages:
        return Rendering(notes=rendering.notes)  # a typing indicator: nothing to show without a conversation
    if comment.get("used"):
        raise DeliveryError("not sent: Meta allows one private reply per comment, and this comment has had it; the "
                            "conversation continues once the person answers in Messenger", permanent=True,
                            code="private_reply_used")
    created = comment.get("createdTime")
    if isinstance(created, int) and now_ms - created > PRIVATE_REPLY_WINDOW_MS:
        days = (now_ms - created) / 86_400_000
        raise DeliveryError(f"not sent: private replies are allowed within 7 days of the comment, and this one is "
                            f"{days:.1f} days old", permanent=True, code="private_reply_window")
    if len(messages) > 1:
        raise DeliveryError(f"not sent: a private reply is one message, and this payload needs {len(messages)} "
                            "(shorten the text, or answer in Messenger once the person writes)", permanent=True,
                            code="private_reply_too_long")
    steps: list[dict[str, Any] | Pause] = [{**messages[0], "recipient": {"comment_id": comment["commentId"]}}]
    return Rendering(steps=steps, notes=rendering.notes)


async def public_reply(binding: PageBinding, reply: dict[str, Any]) -> str:
    """A ``public_reply`` (``{"message", "comment_id"}``): an answer under the comment; the new comment's id."""
    comment_id = reply.get("comment_id")
    text = reply.get("message")
    if not isinstance(comment_id, str) or optional_id(comment_id) is None:
        raise DeliveryError("a public_reply needs the \"comment_id\" to answer (a reply to a comment event has it)",
                            permanent=True)
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_PUBLIC_REPLY_CHARS:
        raise DeliveryError(f"a public_reply needs a \"message\" of 1 to {MAX_PUBLIC_REPLY_CHARS} characters",
                            permanent=True)
    answer = await binding.graph.reply_to_comment(comment_id, text)
    return str(answer.get("id") or "")
