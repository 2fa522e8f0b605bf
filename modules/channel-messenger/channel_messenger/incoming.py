"""Messenger webhook events → IOEvents (channel "messenger", target = sender PSID, threadId = Page id).

Events that must never be answered (echoes of the Page's own sends, deliveries, reads,
reactions, opt-ins, handovers and everything arriving as ``standby``) are still recorded,
flagged ``{"silent": True}`` so the pipeline stores them without calling bot logic.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from botpress_py.sdk import IOEvent, now_ms, payload_preview

from .rendering import SAY_PREFIX

CHANNEL = "messenger"
ATTACHMENT_TYPES = frozenset({"image", "audio", "video", "file", "sticker", "fallback"})
HANDOVER_KEYS = ("pass_thread_control", "take_thread_control", "request_thread_control", "app_roles")
SIGNAL_KEYS = ("delivery", "read", "reaction", "optin", "account_linking", "policy_enforcement")


def content_hash(*parts: Any) -> str:
    """A stable dedupe key for events that carry no ``mid``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "h:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _event(
    kind: str,
    payload: dict[str, Any],
    *,
    user: str,
    page: str,
    timestamp: Any,
    dedupe: str,
    silent: bool = False,
    flags: dict[str, Any] | None = None,
    preview: str | None = None,
) -> IOEvent:
    all_flags = dict(flags) if flags else {}
    if silent:
        all_flags["silent"] = True
    payload = {**payload, "type": kind}
    return IOEvent(
        type=kind,
        channel=CHANNEL,
        direction="incoming",
        botId="",
        target=user,
        threadId=page,
        payload=payload,
        preview=preview if preview is not None else payload_preview(payload),
        # Meta does not keep order across POSTs; its timestamp does.
        createdOn=timestamp if isinstance(timestamp, int) and timestamp > 0 else now_ms(),
        dedupeKey=dedupe,
        flags=all_flags,
    )


def _attachment_payload(attachment: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(event type, payload, preview) of one incoming attachment."""
    kind = str(attachment.get("type") or "attachment")
    body = attachment.get("payload") if isinstance(attachment.get("payload"), dict) else {}
    url = body.get("url")
    if kind == "image":
        return "image", {"image": url, "url": url}, f"[image] {url or ''}".strip()
    if kind in ("audio", "video", "file"):
        return kind, {"url": url}, f"[{kind}] {url or ''}".strip()
    if kind == "sticker" or body.get("sticker_id"):
        return "sticker", {"url": url, "stickerId": body.get("sticker_id")}, "[sticker]"
    if kind == "fallback":
        title = attachment.get("title") or body.get("title")
        return "fallback", {"url": url or attachment.get("url"), "title": title}, f"[link] {title or url or ''}".strip()
    if kind == "location":
        coords = body.get("coordinates") or {}
        return "location", {"latitude": coords.get("lat"), "longitude": coords.get("long")}, "[location]"
    return "attachment", {"attachmentType": kind, "raw": attachment}, f"[{kind}]"


def _message_events(
    message: dict[str, Any], user: str, page: str, timestamp: Any, silent: bool, flags: dict[str, Any]
) -> list[IOEvent]:
    mid = message.get("mid")
    common: dict[str, Any] = {}
    if isinstance(message.get("reply_to"), dict) and message["reply_to"].get("mid"):
        common["replyTo"] = message["reply_to"]["mid"]
    if mid:
        common["mid"] = mid

    def key(suffix: str, *content: Any) -> str:
        return f"{mid}{suffix}" if mid else content_hash(user, timestamp, suffix, *content)

    events: list[IOEvent] = []
    text = message.get("text")
    quick_reply = message.get("quick_reply")
    if isinstance(quick_reply, dict) and quick_reply.get("payload") is not None:
        # The payload is what the bot offered (the choice's value); the title is only what the user saw.
        events.append(
            _event(
                "quick_reply",
                {"text": text or "", "payload": str(quick_reply["payload"]), **common},
                user=user, page=page, timestamp=timestamp, dedupe=key("", "qr", quick_reply["payload"]),
                silent=silent, flags=flags, preview=text or str(quick_reply["payload"]),
            )
        )
    elif isinstance(text, str):
        events.append(
            _event("text", {"text": text, **common}, user=user, page=page, timestamp=timestamp,
                   dedupe=key("", "text", text), silent=silent, flags=flags)
        )
    attachments = message.get("attachments")
    if isinstance(attachments, list):
        for index, attachment in enumerate(a for a in attachments if isinstance(a, dict)):
            kind, body, preview = _attachment_payload(attachment)
            # One mid can carry several attachments (and a text): each gets its own key.
            suffix = "" if not events and index == 0 else f"#{index + 1}"
            events.append(
                _event(kind, {**body, **common}, user=user, page=page, timestamp=timestamp,
                       dedupe=key(suffix, "att", attachment), silent=silent, flags=flags, preview=preview)
            )
    if not events:
        events.append(
            _event("message", {"raw": message, **common}, user=user, page=page, timestamp=timestamp,
                   dedupe=key("", "msg", message), silent=True, flags=flags, preview="[message]")
        )
    return events


def _postback_event(
    postback: dict[str, Any], user: str, page: str, timestamp: Any, silent: bool, flags: dict[str, Any]
) -> IOEvent:
    value = postback.get("payload")
    value = "" if value is None else str(value)
    title = postback.get("title") or ""
    mid = postback.get("mid")
    dedupe = mid or content_hash(user, timestamp, "postback", value, title)
    extra: dict[str, Any] = {"mid": mid} if mid else {}
    if isinstance(postback.get("referral"), dict):
        extra["referral"] = postback["referral"]
    if value.startswith(SAY_PREFIX):
        # A "Say something" button: the user meant to say this text.
        said = value[len(SAY_PREFIX):]
        return _event("text", {"text": said, **extra}, user=user, page=page, timestamp=timestamp,
                      dedupe=dedupe, silent=silent, flags=flags)
    return _event("postback", {"payload": value, "title": title, **extra}, user=user, page=page,
                  timestamp=timestamp, dedupe=dedupe, silent=silent, flags=flags, preview=title or value)


def map_messaging_event(raw: dict[str, Any], page_id: str, *, standby: bool = False) -> list[IOEvent]:
    """One entry of ``messaging`` (or ``standby``) → IOEvents; unknown shapes are recorded silently."""
    if not isinstance(raw, dict):
        return []
    sender = str((raw.get("sender") or {}).get("id") or "")
    recipient = str((raw.get("recipient") or {}).get("id") or "")
    timestamp = raw.get("timestamp")
    flags: dict[str, Any] = {"standby": True} if standby else {}
    silent = standby

    message = raw.get("message")
    if isinstance(message, dict):
        if message.get("is_echo"):
            # The Page's own send: the user is the recipient, and nobody answers it.
            echo_flags = {**flags, "echo": True}
            if message.get("app_id") is not None:
                echo_flags["appId"] = str(message["app_id"])
            return _message_events(message, recipient, page_id, timestamp, True, echo_flags)
        return _message_events(message, sender, page_id, timestamp, silent, flags)

    postback = raw.get("postback")
    if isinstance(postback, dict):
        return [_postback_event(postback, sender, page_id, timestamp, silent, flags)]

    referral = raw.get("referral")
    if isinstance(referral, dict):
        payload = {k: referral[k] for k in ("ref", "source") if k in referral}
        if "type" in referral:
            payload["referralType"] = referral["type"]  # "type" is the event's own type
        for extra in ("ad_id", "referer_uri"):
            if extra in referral:
                payload[extra] = referral[extra]
        return [
            _event("referral", payload, user=sender, page=page_id, timestamp=timestamp,
                   dedupe=content_hash(sender, timestamp, "referral", referral), silent=silent, flags=flags,
                   preview=f"[referral] {referral.get('ref') or ''}".strip())
        ]

    for signal in SIGNAL_KEYS:
        if isinstance(raw.get(signal), dict):
            body = raw[signal]
            # A reaction's mid is the message reacted to, not an id of the reaction: hash the whole.
            dedupe = content_hash(sender, timestamp, signal, body)
            payload = {("signalType" if k == "type" else k): v for k, v in body.items()}
            return [
                _event(signal, payload, user=sender, page=page_id, timestamp=timestamp, dedupe=dedupe,
                       silent=True, flags=flags, preview=f"[{signal}]")
            ]

    for handover in HANDOVER_KEYS:
        if handover in raw:
            return [
                _event("handover", {"action": handover, "detail": raw.get(handover)}, user=sender, page=page_id,
                       timestamp=timestamp, dedupe=content_hash(sender, timestamp, handover, raw.get(handover)),
                       silent=True, flags=flags, preview=f"[{handover}]")
            ]

    known = {"sender", "recipient", "timestamp"}
    rest = {k: v for k, v in raw.items() if k not in known}
    return [
        _event("unknown", {"raw": rest}, user=sender, page=page_id, timestamp=timestamp,
               dedupe=content_hash(sender, timestamp, "unknown", rest), silent=True, flags=flags,
               preview="[unknown]")
    ]


def map_entry(entry: dict[str, Any]) -> list[IOEvent]:
    """Every event of one webhook entry, ``messaging`` and ``standby`` alike, in their order."""
    page_id = str(entry.get("id") or "")
    events: list[IOEvent] = []
    for key, standby in (("messaging", False), ("standby", True)):
        batch = entry.get(key)
        if isinstance(batch, list):
            for raw in batch:
                events.extend(map_messaging_event(raw, page_id, standby=standby))
    return events
