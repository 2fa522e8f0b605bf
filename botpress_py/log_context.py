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

import contextlib
import contextvars
import hashlib
import hmac
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .events import new_event_id

if TYPE_CHECKING:
    from .events import IOEvent

REQUEST_ID_HEADER = "X-Request-Id"
# An incoming id is honoured only when it cannot break a log line or a header: short, plain characters.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

_fields: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("bp_log_fields", default=None)
# The channels whose events the current HTTP request stored: its answer is then an acknowledgement.
_acked_channels: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("bp_acked_channels", default=None)

_hash_key = os.urandom(32)  # replaced by the server's stored key, so that hashes stay the same after a restart


def set_user_hash_key(key: bytes) -> None:
    global _hash_key
    _hash_key = key


def user_hash(channel: str, user_id: str) -> str:
    return hmac.new(_hash_key, f"{channel}\0{user_id}".encode(), hashlib.sha256).hexdigest()[:16]


def sane_request_id(value: str | None) -> str:
    """The incoming id when it is sane, else a new one."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return new_event_id()


def current_fields() -> dict[str, str]:
    return _fields.get() or {}


def current_request_id() -> str | None:
    return current_fields().get("request_id")


@contextlib.contextmanager
def log_scope(**fields: str | None) -> Iterator[None]:
    """Lines logged inside carry these fields (None values are left out)."""
    merged = {**current_fields(), **{k: v for k, v in fields.items() if v}}
    token = _fields.set(merged)
    try:
        yield
    finally:
        _fields.reset(token)


def event_fields(event: IOEvent) -> dict[str, Any]:
    return {"request_id": event.flags.get("requestId") or None, "bot": event.botId or None,
            "channel": event.channel or None, "event_id": event.id,
            "user": user_hash(event.channel, event.target) if event.target else None}


@contextlib.contextmanager
def event_scope(event: IOEvent) -> Iterator[None]:
    with log_scope(**event_fields(event)):
        yield


@contextlib.contextmanager
def request_scope(request_id: str) -> Iterator[set[str]]:
    """An HTTP request's scope; yields the set of channels whose events it stores."""
    channels: set[str] = set()
    ack_token = _acked_channels.set(channels)
    try:
        with log_scope(request_id=request_id):
            yield channels
    finally:
        _acked_channels.reset(ack_token)


def stamp_incoming(events: list[IOEvent], received_at: int) -> None:
    """Give incoming events the current request id (a new one outside a request) and their arrival
    time: both are stored with the event, so processing after a restart still has them."""
    request_id = current_request_id() or new_event_id()
    channels = _acked_channels.get()
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
