"""The IO event model (docs/architecture.md; docs/modules.md, "IOEvent") and the standard outgoing payload types."""

from __future__ import annotations

import copy
import itertools
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["incoming", "outgoing"]

# Botpress's standard outgoing payload types; every channel renders each of them.
STANDARD_PAYLOAD_TYPES = frozenset(
    {"text", "image", "file", "video", "audio", "card", "carousel", "single-choice", "typing", "custom", "handover"}
)
CARD_ACTIONS = frozenset({"Open URL", "Postback", "Say something"})


class _EventIds:
    """32 hex characters, unique across processes and restarts: 64 random bits drawn once per
    process, then a counter. Same shape as a uuid4 hex, but 8x cheaper: a uuid4 reads the OS
    random source for every event, two or three times per answered message."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self.counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


_event_ids = _EventIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_event_ids.reseed)  # a forked child must not repeat ids


def new_event_id() -> str:
    """A new event id; order comes from createdOn, not from the id."""
    return _event_ids()


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class IOEvent:
    """One message or signal moving between a channel and bot logic.

    ``target`` is the user id on the channel (a Messenger PSID), ``threadId`` the
    channel-side thread (a Messenger Page id). ``dedupeKey`` lets the pipeline drop a
    redelivered event (a Messenger ``mid``). ``flags`` carries channel hints such as
    ``{"silent": True}`` for events that are recorded but must never be answered.
    """

    type: str
    channel: str
    direction: Direction
    botId: str
    target: str
    threadId: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    preview: str = ""
    id: str = field(default_factory=new_event_id)
    createdOn: int = field(default_factory=now_ms)
    incomingEventId: str | None = None
    dedupeKey: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    user: dict[str, Any] = field(default_factory=dict)
    # Which module answered this incoming event while it is being handled (``mark_handled``).
    # Not part of the event's data: never stored, copied or compared (not in EVENT_FIELDS).
    _handled_by: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def conversation_key(self) -> tuple[str, str, str, str]:
        """Events sharing this key are processed strictly in order."""
        return (self.botId, self.channel, self.threadId or "", self.target)

    @property
    def silent(self) -> bool:
        return bool(self.flags.get("silent"))

    def mark_handled(self, by: str = "") -> None:
        """Say that this incoming event has been answered, so that fallback logic (qna's
        fallback) stays quiet. ``bot.reply`` marks the event itself; call this when a module
        answers in another way (a handover, a reply sent later). ``by`` names the module, for logs."""
        if self._handled_by is None:
            self._handled_by = by or "a module"

    @property
    def handled(self) -> bool:
        """True once a module replied to this event (or marked it handled) while it is processed."""
        return self._handled_by is not None

    @property
    def handled_by(self) -> str | None:
        """The module that first marked this event handled, or None."""
        return self._handled_by

    def to_dict(self) -> dict[str, Any]:
        """Every field, as a deep copy (changing the dict never changes the event)."""
        return {name: _json_copy(getattr(self, name)) for name in EVENT_FIELDS}

    def copy(self) -> IOEvent:
        """A deep copy: what is done to the copy's payload, flags or user never reaches this event."""
        return IOEvent(**self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IOEvent:
        known = {k: v for k, v in data.items() if k in EVENT_FIELDS}
        return cls(**known)

    def reply_event(self, payload: dict[str, Any]) -> IOEvent:
        """An outgoing event answering this one on the same channel and thread.

        A channel that masks replies (data protection) flags the incoming event with
        ``maskReplies``; the replies then carry ``mask`` and are stored masked once sent. A reply keeps
        the request id of what it answers (its log lines follow the webhook's) and that event's arrival
        time (``incomingReceivedAt``: the end-to-end latency is measured when it is delivered).
        """
        flags: dict[str, Any] = {"mask": True} if self.flags.get("maskReplies") else {}
        for key, reply_key in (("requestId", "requestId"), ("receivedAt", "incomingReceivedAt")):
            if key in self.flags:
                flags[reply_key] = self.flags[key]
        return IOEvent(
            type=str(payload.get("type", "text")),
            channel=self.channel,
            direction="outgoing",
            botId=self.botId,
            target=self.target,
            threadId=self.threadId,
            payload=dict(payload),
            preview=payload_preview(payload),
            incomingEventId=self.id,
            flags=flags,
        )


# The event's data: what is stored, copied and sent to clients (a handled mark is not).
EVENT_FIELDS = tuple(name for name in IOEvent.__dataclass_fields__ if not name.startswith("_"))
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _json_copy(value: Any) -> Any:
    # Events hold JSON-shaped values: copying dicts and lists by hand is ~9x cheaper than
    # dataclasses.asdict's generic deep copy (bench/: 49 against 6 us per event).
    kind = type(value)
    if kind is dict:
        return {key: _json_copy(item) for key, item in value.items()}
    if kind is list:
        return [_json_copy(item) for item in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


def payload_preview(payload: dict[str, Any]) -> str:
    """A short human-readable text for logs and message history."""
    kind = payload.get("type")
    if kind in ("text", "single-choice"):
        return str(payload.get("text", ""))
    if kind == "card":
        return str(payload.get("title", ""))
    if kind == "carousel":
        return ", ".join(str(i.get("title", "")) for i in payload.get("items", []))
    if kind == "image":
        return str(payload.get("title") or payload.get("image", ""))
    if kind in ("file", "video", "audio"):
        return str(payload.get("title") or payload.get("url", ""))
    return f"[{kind}]"


MASK = "***"


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str) and key not in ("type", "action"):
        return MASK
    return value


def masked_copy(event: IOEvent) -> IOEvent:
    """The event with every text of its payload and its preview masked (data protection).

    Structure, types and ids stay, so history still shows what kind of message was exchanged.
    """
    data = event.to_dict()
    data["payload"] = _mask(data["payload"])
    data["preview"] = MASK if data["preview"] else ""
    data["user"] = {k: v for k, v in data["user"].items() if k in ("id", "contactId")}
    return IOEvent.from_dict(data)


def validate_outgoing_payload(payload: Any) -> list[str]:
    """Problems that make a payload unrenderable by any channel (empty list when fine)."""
    if not isinstance(payload, dict):
        return ["payload must be an object"]
    kind = payload.get("type")
    if kind not in STANDARD_PAYLOAD_TYPES:
        return [f"type {kind!r} is not one of {sorted(STANDARD_PAYLOAD_TYPES)}"]
    required: dict[str, tuple[str, ...]] = {
        "text": ("text",),
        "image": ("image",),
        "file": ("url",),
        "video": ("url",),
        "audio": ("url",),
        "card": ("title",),
        "carousel": ("items",),
        "single-choice": ("text", "choices"),
        "typing": (),
        "custom": (),
        "handover": (),  # {target?: "inbox" | an app id, metadata?}: pass the conversation to a human
    }
    return [f"{kind} payload needs '{key}'" for key in required[kind] if key not in payload]


MiddlewareHandler = Callable[[IOEvent, Any], Awaitable[bool | None] | bool | None]


@dataclass(slots=True)
class Middleware:
    """A step of the incoming or outgoing pipeline.

    Handlers run by ascending ``order``; a handler may change the event in place and
    returns ``False`` to stop it (the event is recorded as dropped by ``name``).
    """

    name: str
    direction: Direction
    handler: MiddlewareHandler
    order: int = 100
    description: str = ""


class DeliveryError(Exception):
    """Raised by a channel's ``on_outgoing`` when a send failed.

    ``permanent=True`` (bad token, user unavailable, outside the messaging window) marks the
    outgoing event failed with this message; otherwise the pipeline retries it with
    exponential backoff, keeping later replies of the same conversation behind it.
    ``retry_after`` (seconds) overrides the next backoff step when the channel knows better.
    ``hold=True``: the channel cannot send for this bot until its operator fixes something (a
    refused access token): the event stays pending without using up its attempts, and is tried
    again as soon as the bot is mounted anew (a config reload), else after ``retry_after`` (default
    ``HOLD_RETRY_SECONDS``), however long that takes.
    The message must never contain secrets: it is stored and logged.
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None,
                 code: str | int | None = None, hold: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.code = code
        self.hold = hold and not permanent
