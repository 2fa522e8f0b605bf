"""Messenger webhook events → IOEvents (channel "messenger", target = sender PSID, threadId = Page id).

Events that must never be answered (echoes of the Page's own sends, deliveries, reads,
opt-ins, handovers and everything arriving as ``standby``) are still recorded, flagged
``{"silent": True}`` so the pipeline stores them without calling bot logic. Reactions, edits
and unsent messages (reactions.py) and page comments (comments.py) reach bot logic.

Every value taken from the body goes through validation.py first: an event that cannot be
read raises ``Malformed`` (the webhook skips it and logs why), and what is kept is storable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botpress_py.sdk import IOEvent, now_ms, payload_preview

from .reactions import Parts, deleted_parts, edit_parts, reaction_parts, rerun_edits
from .rendering import SAY_PREFIX
from .settings import MessengerSettings
from .validation import (
    Malformed,
    a_mid,
    a_payload,
    a_text,
    an_id,
    event_time,
    kept,
    kind_of,
    object_at,
    optional_id,
    optional_number,
    optional_text,
)

CHANNEL = "messenger"
# What a user does (as opposed to signals and the Page's own echoes): it opens the messaging window,
# and arriving as standby or not it tells who owns the conversation.
USER_EVENT_TYPES = frozenset({"text", "quick_reply", "postback", "image", "audio", "video", "file", "sticker",
                              "fallback", "location", "attachment", "referral", "reaction"})
HANDOVER_KEYS = ("pass_thread_control", "take_thread_control", "request_thread_control", "app_roles")
SIGNAL_KEYS = ("delivery", "read", "optin", "account_linking", "policy_enforcement")
PREVIEW_CHARS = 1000  # a preview is for history lists and logs: a 5 MB text needs no 5 MB preview
MAX_URL_CHARS = 4096
MAX_KIND_CHARS = 64


def content_hash(*parts: Any) -> str:
    """A stable dedupe key for events that carry no ``mid`` (parts are cleaned, JSON-safe values)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "h:" + hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _When:
    """The event's time: Meta's timestamp when plausible, else the receive time (Meta's value kept aside)."""

    created_on: int
    key: Any  # what dedupe hashes: Meta's own value, so a redelivery hashes the same
    original: Any  # Meta's value when it was replaced and is a number, for the flags

    @classmethod
    def of(cls, value: Any, received_ms: int) -> _When:
        at = event_time(value, received_ms)
        if at is not None:
            return cls(at, at, None)
        shown = kept(value, max_depth=2, max_nodes=8)
        return cls(received_ms, shown, shown if isinstance(value, int | float) and not isinstance(value, bool)
                   else None)


@dataclass(frozen=True, slots=True)
class _Context:
    """What every event mapped from one raw messaging event shares."""

    page: str
    when: _When
    silent: bool
    flags: dict[str, Any]


def _event(kind: str, payload: dict[str, Any], *, user: str, ctx: _Context, dedupe: str, silent: bool = False,
           flags: dict[str, Any] | None = None, preview: str | None = None) -> IOEvent:
    all_flags = {**ctx.flags, **(flags or {})}
    if silent or ctx.silent:
        all_flags["silent"] = True
    if ctx.when.original is not None:
        all_flags["metaTimestamp"] = ctx.when.original
    payload = {**payload, "type": kind}
    shown = preview if preview is not None else payload_preview(payload)
    return IOEvent(
        type=kind,
        channel=CHANNEL,
        direction="incoming",
        botId="",
        target=user,
        threadId=ctx.page,
        payload=payload,
        preview=shown[:PREVIEW_CHARS],
        # Meta does not keep order across POSTs; its timestamp does.
        createdOn=ctx.when.created_on,
        dedupeKey=dedupe,
        flags=all_flags,
    )


def _sticker_id(value: Any) -> int | str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if optional_id(value) is not None else None
    return optional_id(value)


def _attachment_payload(attachment: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(event type, payload, preview) of one incoming attachment; bad optional parts are left out."""
    kind = optional_text(attachment.get("type"), MAX_KIND_CHARS) or "attachment"
    body = attachment.get("payload") if isinstance(attachment.get("payload"), dict) else {}
    url = optional_text(body.get("url"), MAX_URL_CHARS)
    if kind == "image":
        return "image", {"image": url, "url": url}, f"[image] {url or ''}".strip()
    if kind in ("audio", "video", "file"):
        return kind, {"url": url}, f"[{kind}] {url or ''}".strip()
    if kind == "sticker" or body.get("sticker_id") is not None:
        return "sticker", {"url": url, "stickerId": _sticker_id(body.get("sticker_id"))}, "[sticker]"
    if kind == "fallback":
        title = optional_text(attachment.get("title")) or optional_text(body.get("title"))
        url = url or optional_text(attachment.get("url"), MAX_URL_CHARS)
        return "fallback", {"url": url, "title": title}, f"[link] {title or url or ''}".strip()
    if kind == "location":
        coords = body.get("coordinates") if isinstance(body.get("coordinates"), dict) else {}
        return "location", {"latitude": optional_number(coords.get("lat"), -90, 90),
                            "longitude": optional_number(coords.get("long"), -180, 180)}, "[location]"
    return "attachment", {"attachmentType": kind, "raw": kept(attachment)}, f"[{kind}]"


def _message_events(message: dict[str, Any], user: str, ctx: _Context) -> list[IOEvent]:
    mid = a_mid(message["mid"], "message.mid") if message.get("mid") is not None else None
    common: dict[str, Any] = {}
    reply_to = message.get("reply_to")
    if isinstance(reply_to, dict) and reply_to.get("mid") is not None:
        try:
            common["replyTo"] = a_mid(reply_to["mid"], "message.reply_to.mid")
            if isinstance(reply_to.get("is_self_reply"), bool):
                common["replyToSelf"] = reply_to["is_self_reply"]
        except Malformed:
            pass  # only informative: the message itself stands without it
    if mid:
        common["mid"] = mid

    def key(suffix: str, *content: Any) -> str:
        return f"{mid}{suffix}" if mid else content_hash(user, ctx.when.key, suffix, *content)

    events: list[IOEvent] = []
    text = a_text(message["text"], "message.text") if message.get("text") is not None else None
    quick_reply = message.get("quick_reply")
    reply_value = None
    if quick_reply is not None:
        quick_reply = object_at(quick_reply, "message.quick_reply")
        if quick_reply.get("payload") is not None:
            reply_value = a_payload(quick_reply["payload"], "message.quick_reply.payload")
    if reply_value is not None:
        # The payload is what the bot offered (the choice's value); the title is only what the user saw.
        events.append(_event("quick_reply", {"text": text or "", "payload": reply_value, **common}, user=user,
                             ctx=ctx, dedupe=key("", "qr", reply_value), preview=text or reply_value))
    elif text is not None:
        events.append(_event("text", {"text": text, **common}, user=user, ctx=ctx, dedupe=key("", "text", text)))
    attachments = message.get("attachments")
    if attachments is not None:
        if not isinstance(attachments, list):
            raise Malformed("message.attachments", f"expected a list, got {kind_of(attachments)}")
        for index, attachment in enumerate(attachments):
            attachment = object_at(attachment, f"message.attachments[{index}]")
            kind, body, preview = _attachment_payload(attachment)
            # One mid can carry several attachments (and a text): each gets its own key.
            suffix = "" if not events and index == 0 else f"#{index + 1}"
            dedupe = key(suffix) if mid else key(suffix, "att", kept(attachment))
            events.append(_event(kind, {**body, **common}, user=user, ctx=ctx, dedupe=dedupe, preview=preview))
    if not events:
        raw = kept(message)
        events.append(_event("message", {"raw": raw, **common}, user=user, ctx=ctx, dedupe=key("", "msg", raw),
                             silent=True, preview="[message]"))
    return events


def _postback_event(postback: dict[str, Any], user: str, ctx: _Context) -> IOEvent:
    value = "" if postback.get("payload") is None else a_payload(postback["payload"], "postback.payload")
    title = optional_text(postback.get("title")) or ""
    mid = a_mid(postback["mid"], "postback.mid") if postback.get("mid") is not None else None
    dedupe = mid or content_hash(user, ctx.when.key, "postback", value, title)
    extra: dict[str, Any] = {"mid": mid} if mid else {}
    if isinstance(postback.get("referral"), dict):
        extra["referral"] = kept(postback["referral"])
    if value.startswith(SAY_PREFIX):
        # A "Say something" button: the user meant to say this text.
        said = value[len(SAY_PREFIX):]
        return _event("text", {"text": said, **extra}, user=user, ctx=ctx, dedupe=dedupe)
    return _event("postback", {"payload": value, "title": title, **extra}, user=user, ctx=ctx, dedupe=dedupe,
                  preview=title or value)


def _party(raw: dict[str, Any], key: str) -> str:
    """The sender's or recipient's id; "" when the event has none (an app_roles event, a user_ref opt-in)."""
    value = raw.get(key)
    if value is None:
        return ""
    party = object_at(value, key)
    return "" if party.get("id") is None else an_id(party["id"], f"{key}.id")


def _required(user: str, key: str) -> str:
    if not user:
        raise Malformed(f"{key}.id", "missing: a message needs the user it comes from")
    return user


def _from_parts(parts: Parts, user: str, ctx: _Context) -> IOEvent:
    kind, payload, preview, dedupe = parts
    return _event(kind, payload, user=user, ctx=ctx, dedupe=dedupe, preview=preview)


def map_messaging_event(raw: Any, page_id: str, *, standby: bool = False,
                        received_ms: int | None = None) -> list[IOEvent]:
    """One entry of ``messaging`` (or ``standby``) → IOEvents; unknown shapes are recorded silently.

    Raises ``Malformed`` when the event cannot be read.
    """
    raw = object_at(raw, "event")
    sender = _party(raw, "sender")
    recipient = _party(raw, "recipient")
    ctx = _Context(page_id, _When.of(raw.get("timestamp"), received_ms or now_ms()), standby,
                   {"standby": True} if standby else {})

    if raw.get("message") is not None:
        message = object_at(raw["message"], "message")
        if message.get("is_deleted") is True and message.get("is_echo") is not True:
            return [_from_parts(deleted_parts(message), _required(sender, "sender"), ctx)]
        if message.get("is_echo") is True:
            # The Page's own send: the user is the recipient, and nobody answers it.
            echo_flags = {**ctx.flags, "echo": True}
            app_id = optional_id(message.get("app_id"))
            if app_id is not None:
                echo_flags["appId"] = app_id
            echo = _Context(page_id, ctx.when, True, echo_flags)
            return _message_events(message, _required(recipient, "recipient"), echo)
        return _message_events(message, _required(sender, "sender"), ctx)

    if raw.get("postback") is not None:
        return [_postback_event(object_at(raw["postback"], "postback"), _required(sender, "sender"), ctx)]

    if raw.get("referral") is not None:
        referral = object_at(raw["referral"], "referral")
        payload = {k: kept(referral[k], max_depth=2) for k in ("ref", "source", "ad_id", "referer_uri")
                   if k in referral}
        if "type" in referral:
            payload["referralType"] = kept(referral["type"], max_depth=2)  # "type" is the event's own type
        ref = optional_text(referral.get("ref")) or ""
        return [_event("referral", payload, user=_required(sender, "sender"), ctx=ctx,
                       dedupe=content_hash(sender, ctx.when.key, "referral", kept(referral)),
                       preview=f"[referral] {ref}".strip())]

    if raw.get("message_edit") is not None:
        return [_from_parts(edit_parts(object_at(raw["message_edit"], "message_edit")), _required(sender, "sender"),
                            ctx)]

    if raw.get("reaction") is not None:
        body = object_at(raw["reaction"], "reaction")
        key = content_hash(sender, ctx.when.key, "reaction", kept(body))
        return [_from_parts(reaction_parts(body, key), _required(sender, "sender"), ctx)]

    for signal in SIGNAL_KEYS:
        if raw.get(signal) is not None:
            body = kept(object_at(raw[signal], signal))
            # A reaction's mid is the message reacted to, not an id of the reaction: hash the whole.
            payload = {("signalType" if k == "type" else k): v for k, v in body.items()}
            return [_event(signal, payload, user=sender, ctx=ctx, dedupe=content_hash(sender, ctx.when.key, signal,
                                                                                      body),
                           silent=True, preview=f"[{signal}]")]

    for handover in HANDOVER_KEYS:
        if handover in raw:
            detail = kept(raw.get(handover))
            return [_event("handover", {"action": handover, "detail": detail}, user=sender, ctx=ctx,
                           dedupe=content_hash(sender, ctx.when.key, handover, detail), silent=True,
                           preview=f"[{handover}]")]

    known = {"sender", "recipient", "timestamp"}
    rest = kept({k: v for k, v in raw.items() if k not in known})
    return [_event("unknown", {"raw": rest}, user=sender, ctx=ctx,
                   dedupe=content_hash(sender, ctx.when.key, "unknown", rest), silent=True, preview="[unknown]")]


def entry_events(entry: dict[str, Any]) -> Iterator[tuple[Any, bool] | Malformed]:
    """The raw events of one entry, ``messaging`` then ``standby`` (with the flag), in their order;
    a ``Malformed`` in their place when a list is not a list."""
    for key, standby in (("messaging", False), ("standby", True)):
        batch = entry.get(key)
        if batch is None:
            continue
        if not isinstance(batch, list):
            yield Malformed(f"entry.{key}", f"expected a list, got {kind_of(batch)}")
            continue
        for raw in batch:
            yield raw, standby


def map_entry(entry: dict[str, Any], page_id: str, *,
              received_ms: int | None = None) -> tuple[list[IOEvent], list[Malformed]]:
    """Every readable event of one entry, and why each other one was skipped (the webhook does the same,
    with a pause for the event loop now and then)."""
    events: list[IOEvent] = []
    skipped: list[Malformed] = []
    received_ms = received_ms or now_ms()
    for item in entry_events(entry):
        if isinstance(item, Malformed):
            skipped.append(item)
            continue
        raw, standby = item
        try:
            events.extend(map_messaging_event(raw, page_id, standby=standby, received_ms=received_ms))
        except Malformed as exc:
            skipped.append(exc)
    return events, skipped


def apply_incoming_flags(settings: MessengerSettings, events: list[IOEvent]) -> None:
    """The bot's data-protection and session settings, as flags the core acts on; edits as the bot wants them."""
    if settings.events.rerun_on_edit:
        rerun_edits(events)
    for event in events:
        # An echo is the Page's own message (the bot's, or a person's in the Page Inbox).
        if settings.mask_outgoing if event.flags.get("echo") else settings.mask_incoming:
            event.flags["mask"] = True
        if settings.mask_outgoing and not event.silent:
            event.flags["maskReplies"] = True
        if settings.session_timeout_seconds:
            event.flags["sessionTimeout"] = settings.session_timeout_seconds
