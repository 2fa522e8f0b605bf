"""What a log line is about (request id, bot, channel, user hash, event id), carried in a contextvar.

The HTTP middleware opens a request scope (the id honoured from ``X-Request-Id`` or generated);
the pipeline stamps that id on each incoming event's ``flags["requestId"]``, so it survives the
durable inbox, and copies it to the replies; processing and delivery open an event scope from the
event. Every line logged meanwhile, by the core or a module (the Send API call), carries them in
``--log-format json`` (docs/operations.md, "Logs").

A user is logged as a keyed hash, never as the raw id: lines can be followed per user without
the log holding who the user is.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import os
import re
from typing import TYPE_CHECKING, Any

from .events import new_event_id

if TYPE_CHECKING:
    from .events import IOEvent

REQUEST_ID_HEADER = "X-Request-Id"
# An incoming id is honoured only when it cannot break a log line or a header: short, plain characters.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")

_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("bp_log_fields", default=None)
# Keys of the fields dict that are not log fields: the current request's acknowledged channels, and
# the (channel, user id) a user hash is made from when a line is written (most lines never are).
_ACKED = "_acked"
_USER = "_user"

_hash_key = os.urandom(32)  # replaced by the server's stored key, so that hashes stay the same after a restart


def set_user_hash_key(key: bytes) -> None:
    global _hash_key
    _hash_key = key


def user_hash(channel: str, user_id: str) -> str:
    return hmac.new(_hash_key, f"{channel}\0{user_id}".encode(), hashlib.sha256).hexdigest()[:16]


def sane_request_id(value: str | None) -> str:
    """The incoming id when it is sane, else a new one."""
    if value and len(value) <= 64 and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return new_event_id()


def current_fields() -> dict[str, Any]:
    """The log fields in force (for a formatter: ``log_fields`` turns them into what is written)."""
    return _fields.get() or {}


def log_fields(fields: dict[str, Any]) -> dict[str, str]:
    out = {k: v for k, v in fields.items() if not k.startswith("_")}
    user = fields.get(_USER)
    if user is not None:
        out["user"] = user_hash(*user)
    return out


def current_request_id() -> str | None:
    return current_fields().get("request_id")


class _Scope:
    """Sets the log fields for a ``with`` block (a class, not a generator: it runs for every request and event)."""

    __slots__ = ("fields", "token")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __enter__(self) -> dict[str, Any]:
        self.token = _fields.set(self.fields)
        return self.fields

    def __exit__(self, *exc: object) -> None:
        _fields.reset(self.token)


def log_scope(**fields: str | None) -> _Scope:
    """Lines logged inside carry these fields (None values are left out) besides those in force."""
    return _Scope({**current_fields(), **{k: v for k, v in fields.items() if v}})


def event_scope(event: IOEvent) -> _Scope:
    """Lines logged inside are about this event (its request, bot, channel, user and id)."""
    fields: dict[str, Any] = {"event_id": event.id}
    request_id = event.flags.get("requestId")
    if request_id:
        fields["request_id"] = request_id
    if event.botId:
        fields["bot"] = event.botId
    if event.channel:
        fields["channel"] = event.channel
    if event.target:
        fields[_USER] = (event.channel, event.target)
    return _Scope(fields)


def request_scope(request_id: str) -> _Scope:
    """An HTTP request's scope; ``with`` gives its fields, whose ``acked_channels`` are filled by the
    events the request stores."""
    return _Scope({"request_id": request_id, _ACKED: set()})


def acked_channels(fields: dict[str, Any]) -> set[str]:
    return fields[_ACKED]


def stamp_incoming(events: list[IOEvent], received_at: int) -> None:
    """Give incoming events the current request id (a new one outside a request) and their arrival
    time: both are stored with the event, so processing after a restart still has them."""
    fields = current_fields()
    request_id = fields.get("request_id") or new_event_id()
    channels = fields.get(_ACKED)
    for event in events:
        event.flags.setdefault("requestId", request_id)
        event.flags.setdefault("receivedAt", received_at)
        if channels is not None:
            channels.add(event.channel)


def stamp_outgoing(event: IOEvent) -> None:
    """An outgoing event made while an event or a request is handled keeps its request id."""
    request_id = current_request_id()
    if request_id and "requestId" not in event.flags:
        event.flags["requestId"] = request_id
