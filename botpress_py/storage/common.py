"""Helpers both storage backends share: how events become rows and rows become events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from ..events import IOEvent, masked_copy
from .crypto import EventCipher, UnreadableStoredValue, is_encrypted

INBOX_DONE_STATUSES = frozenset({"done", "dropped", "error"})
OUTBOX_STATUSES = frozenset({"pending", "sent", "failed"})

T = TypeVar("T")


# One encoder for every write: json.dumps with separators builds a new encoder per call, which
# costs as much as the encoding itself (bench/: 8.1 against 4.6 us for a stored event).
# ensure_ascii (the default) keeps NUL characters and lone surrogates, both possible in user
# text from a webhook body, as \u escapes, so the text is valid for SQLite and PostgreSQL alike.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def to_json(value: Any) -> str:
    return _ENCODER.encode(value)


_EVENT_FIELDS = tuple(IOEvent.__dataclass_fields__)


def event_json(event: IOEvent) -> str:
    # A shallow dict: json.dumps only reads it, and dataclasses.asdict's deep copy cost
    # ~5x more on the hot path (bench profile), four times per answered event.
    return to_json({name: getattr(event, name) for name in _EVENT_FIELDS})


def event_from_json(text: str) -> IOEvent:
    return IOEvent.from_dict(json.loads(text))


def stored_event(event: IOEvent, cipher: EventCipher) -> str:
    """An event as its new inbox or outbox row holds it: encrypted when flagged ``mask``."""
    text = event_json(event)
    return cipher.encrypt(text) if event.flags.get("mask") else text


def event_from_stored(text: str, cipher: EventCipher) -> IOEvent:
    """The event of an inbox or outbox row; raises UnreadableStoredValue when its key is not ours."""
    return event_from_json(cipher.decrypt(text) if is_encrypted(text) else text)


def stored_error(error: str | None, cipher: EventCipher) -> tuple[str | None, str | None]:
    """(clear, encrypted) forms of an error reason; a row whose event is encrypted keeps the latter.

    Error reasons may quote the message (an exception raised on its text), so a masked event's
    error is kept encrypted like the event. Which form a row gets is decided in SQL, from its
    ``event`` column: callers that record an error do not have to know whether it was masked.
    """
    error = plain_error(error)
    return error, None if error is None else cipher.encrypt(error)


def error_from_stored(error: str | None, cipher: EventCipher) -> str | None:
    if not is_encrypted(error):
        return error
    try:
        return cipher.decrypt(error)  # type: ignore[arg-type]
    except UnreadableStoredValue as exc:
        return f"(the error of a masked event, unreadable: {exc})"


# The SQL that picks the error form for a row, given (clear, encrypted) as parameters.
ERROR_FOR_ROW = "CASE WHEN event LIKE 'enc1:%' THEN {encrypted} ELSE {clear} END"


def readable_rows(rows: Sequence[tuple[Any, str, T]], cipher: EventCipher,
                  ) -> tuple[list[tuple[IOEvent, T]], list[tuple[str, str]]]:
    """Rows of (event id, stored event, extra) split into (event, extra) pairs that decrypt and
    (event id, reason) of those that do not (stored with another key: those must fail, clearly)."""
    good: list[tuple[IOEvent, T]] = []
    bad: list[tuple[str, str]] = []
    for event_id, text, extra in rows:
        try:
            good.append((event_from_stored(text, cipher), extra))
        except UnreadableStoredValue as exc:
            bad.append((str(event_id), f"cannot read this masked event: {exc}"))
    return good, bad


def history_form(event: IOEvent) -> IOEvent:
    """What message history may hold of an event: never the text of one flagged ``mask`` (masking is
    idempotent, so the masked copy the pipeline records stays as it is)."""
    return masked_copy(event) if event.flags.get("mask") else event


def plain_text(text: str) -> str:
    """User text safe to bind as a SQL text parameter (for the ``preview`` column).

    PostgreSQL refuses NUL characters and neither driver can encode a lone surrogate, which
    ``json.loads`` happily produces from ``"\\ud800"``; such a message must not fail its write.
    """
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def plain_error(error: str | None) -> str | None:
    # Error reasons often quote user input: they must not be able to fail their write either.
    return None if error is None else plain_text(error)


def first_occurrences(events: Sequence[IOEvent]) -> list[bool]:
    """Per event, False when an earlier event of the same list has its id or dedupe key.

    The database only sees the first of such twins, so the flags for one ``inbox_add`` call
    stay "first one wins" whatever order the database reports inserted rows in.
    """
    seen_ids: set[str] = set()
    seen_keys: set[tuple[str, str, str]] = set()
    flags: list[bool] = []
    for event in events:
        key = (event.botId, event.channel, event.dedupeKey) if event.dedupeKey is not None else None
        fresh = event.id not in seen_ids and (key is None or key not in seen_keys)
        flags.append(fresh)
        seen_ids.add(event.id)
        if key is not None:
            seen_keys.add(key)
    return flags


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def require_status(status: str, allowed: frozenset[str], what: str) -> None:
    if status not in allowed:
        raise ValueError(f"{what} status {status!r} is not one of {sorted(allowed)}")


def split_by_sizes(items: Sequence[T], sizes: Sequence[int]) -> list[list[T]]:
    """Cut a flat list back into consecutive pieces of the given sizes."""
    out: list[list[T]] = []
    start = 0
    for size in sizes:
        out.append(list(items[start : start + size]))
        start += size
    return out


def message_params(event: IOEvent, channel_message_id: str | None) -> tuple[Any, ...]:
    """Parameters of a ``messages`` row, in the column order both backends insert them."""
    event = history_form(event)
    return (event.id, event.botId, event.channel, event.threadId, event.target, event.direction, event.type,
            event_json(event), plain_text(event.preview), channel_message_id, event.createdOn)


def new_contact_id() -> str:
    return "c_" + uuid.uuid4().hex
