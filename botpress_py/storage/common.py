"""Helpers both storage backends share: how events become rows and rows become events."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import orjson

from ..events import EVENT_FIELDS, IOEvent, masked_copy, new_event_id, now_ms
from .crypto import EventCipher, UnreadableStoredValue, is_encrypted

# What processing an incoming event can end in (bot logic ran); ``failed`` and ``discarded``
# are set by their own calls (the pipeline gave up on the event; an operator discarded it).
INBOX_DONE_STATUSES = frozenset({"done", "dropped", "error"})
OUTBOX_STATUSES = frozenset({"pending", "sent", "failed", "dropped", "discarded"})
DIRECTIONS = ("incoming", "outgoing")

T = TypeVar("T")


# The standard library's encoder, for what orjson refuses (below). One encoder for every call:
# json.dumps with separators builds a new encoder per call, which costs as much as the encoding.
# ensure_ascii (the default) keeps lone surrogates, possible in user text from a webhook body,
# as \u escapes, so the text is valid for SQLite and PostgreSQL alike.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
# orjson encodes an event 5-7x faster than the standard library (1 against 6 us for a stored
# event), and an answered event is encoded four times (its inbox row, its reply, and the history
# entries of both, those two on the SQLite writer thread, holding the GIL). It must write what the
# standard library writes, or refuse it the same way, so it gets only plain JSON values (str, int,
# bool, None, finite floats in dicts, lists and tuples: what both write alike; checking costs about
# half the standard library's encoding); anything else (a set, an enum, a UUID, a subclass, NaN,
# which orjson would write as null) and whatever orjson refuses (a lone surrogate, an integer
# beyond 64 bits, a key that is not a string, nesting past 254 levels) goes to the standard
# library, which writes it or raises as it always did.
_PLAIN_CHECK_BUDGET = 10_000  # containers and non-string values; past it (or a cycle), the standard library


def to_json(value: Any) -> str:
    """Compact JSON of ``value``, as ``json.dumps(value, separators=(",", ":"))`` writes it (except
    that characters beyond ASCII are written as themselves rather than escaped: the same JSON)."""
    if _is_plain(value):
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # orjson.JSONEncodeError
            pass
    return _ENCODER.encode(value)


def _is_plain(value: Any) -> bool:
    """Whether ``value`` holds only plain JSON values (iterative: no recursion limit to meet)."""
    budget = _PLAIN_CHECK_BUDGET
    stack = [value]
    pop = stack.pop
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        budget -= 1
        if budget < 0:
            return False
        if kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is not float or not math.isfinite(item):
            return False
    return True


_EVENT_FIELDS = EVENT_FIELDS


def event_json(event: IOEvent) -> str:
    # A shallow dict: json.dumps only reads it, and dataclasses.asdict's deep copy cost
    # ~5x more on the hot path (bench profile), four times per answered event.
    return to_json({name: getattr(event, name) for name in _EVENT_FIELDS})


def event_from_json(text: str) -> IOEvent:
    return IOEvent.from_dict(json.loads(text))


def stored_event(event: IOEvent, cipher: EventCipher, text: str | None = None) -> str:
    """An event as its new inbox or outbox row holds it: encrypted when flagged ``mask``.

    ``text``: the event's ``event_json`` when the caller already has it (replies are encoded once,
    when they are sent, to check that they are JSON)."""
    if text is None:
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


def outgoing_encodings(completions: Sequence[Any]) -> list[str] | None:
    """The callers' ``event_json`` of every outgoing event of these completions, if each gave them."""
    if all(c.outgoing_json is not None or not c.outgoing for c in completions):
        return [text for c in completions for text in c.outgoing_json or ()]
    return None


def new_contact_id() -> str:
    return "c_" + uuid.uuid4().hex


# -- events that storage refused, and errors worth keeping ----------------------------------------------
# Longest stored error reason: a driver error can quote a whole value.
MAX_ERROR_CHARS = 1000
# Longest id-like text (user, thread, dedupe key) a sanitised record keeps: with bot and channel
# it stays well under PostgreSQL's 2,704-byte limit for a B-tree index entry.
_MAX_ID_CHARS = 500
_MAX_NAME_CHARS = 100
# Deeper values are cut from a sanitised record; the JSON encoder itself gives up near 1,000.
_MAX_SANITISED_DEPTH = 64
_MAX_SEARCH_DEPTH = 500
# createdOn values a record keeps: what both databases' 64-bit integers and JSON readers that
# use doubles can hold.
_MAX_SAFE_INT = 2**53


def describe_error(exc: BaseException, *, masked: bool = False) -> str:
    """``Type: message`` for storing and logging, bounded; only the type for a masked event.

    Driver errors quote the values they refused, so a masked event's reason must not carry them.
    """
    name = type(exc).__name__
    if masked:
        return f"{name} (details withheld: the event is masked)"
    text = str(exc)
    return plain_text(f"{name}: {text}" if text else name)[:MAX_ERROR_CHARS]


def unserialisable_path(value: Any, path: str) -> tuple[str, str] | None:
    """(key path, reason) of the first part of ``value`` that json.dumps refuses, or None."""
    return _find_unserialisable(value, path, 0, set())


def _find_unserialisable(value: Any, path: str, depth: int, active: set[int]) -> tuple[str, str] | None:
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return None
    if depth > _MAX_SEARCH_DEPTH:
        return path, f"nested deeper than {_MAX_SEARCH_DEPTH} levels"
    if isinstance(value, dict | list | tuple):
        if id(value) in active:
            return path, "refers to itself (a circular reference)"
        active.add(id(value))
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if not (key is None or isinstance(key, str | int | float)):
                        return f"{path}[{type(key).__name__} key]", \
                            f"a key of type {type(key).__name__} (keys must be strings)"
                    found = _find_unserialisable(item, f"{path}.{key}" if path else str(key), depth + 1, active)
                    if found:
                        return found
            else:
                for index, item in enumerate(value):
                    found = _find_unserialisable(item, f"{path}[{index}]", depth + 1, active)
                    if found:
                        return found
        finally:
            active.discard(id(value))
        return None
    return path, f"a {type(value).__name__} is not JSON (use strings, numbers, booleans, null, lists, objects)"


class _Sanitiser:
    """Turns any value into one storage accepts, remembering whether anything had to change."""

    def __init__(self) -> None:
        self.changed = False

    def text(self, value: Any, limit: int | None) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            text = value
        else:
            self.changed = True
            text = to_json(self.json(value, 0))
        cleaned = plain_text(text)[:limit]
        if cleaned != text:
            self.changed = True
        return cleaned

    def json(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if value is None or kind is str or kind is bool:
            return value
        if kind is int:
            if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
                return value
            self.changed = True
            return str(value)
        if kind is float:
            if math.isfinite(value):
                return value
            self.changed = True
            return str(value)
        if kind is dict or kind is list:
            if depth >= _MAX_SANITISED_DEPTH:
                self.changed = True
                return f"(cut: nested deeper than {_MAX_SANITISED_DEPTH} levels)"
            if kind is list:
                return [self.json(item, depth + 1) for item in value]
            out: dict[str, Any] = {}
            for key, item in value.items():
                if type(key) is not str:
                    self.changed = True
                    key = self.text(key, _MAX_NAME_CHARS) or "null"
                out[key] = self.json(item, depth + 1)
            return out
        self.changed = True
        return f"({kind.__name__})"


def sanitised_event(event: IOEvent) -> tuple[IOEvent, bool]:
    """A copy of an incoming event that any backend can store, and whether it differs at all.

    Ids become bounded strings (a non-string dedupe key becomes its JSON text, so a redelivery
    still dedupes), an impossible ``createdOn`` becomes the receive time, and every part of
    payload, flags and user becomes plain JSON of bounded depth.
    """
    clean = _Sanitiser()
    created = event.createdOn
    if type(created) is not int or not 0 <= created <= _MAX_SAFE_INT:
        clean.changed = True
        created = now_ms()

    def as_object(value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            result = clean.json(value, 0)
            assert isinstance(result, dict)
            return result
        clean.changed = True
        return {} if value is None else {"value": clean.json(value, 1)}

    def required(value: Any, limit: int | None, default: str) -> str:
        text = clean.text(value, limit)
        if text is None:  # NOT NULL in storage
            clean.changed = True
            return default
        return text

    sanitised = IOEvent(
        type=required(event.type, _MAX_NAME_CHARS, "unknown"),
        channel=required(event.channel, _MAX_NAME_CHARS, "unknown"),
        direction="incoming",
        botId=required(event.botId, _MAX_NAME_CHARS, "unknown"),
        target=required(event.target, _MAX_ID_CHARS, "unknown"),
        threadId=clean.text(event.threadId, _MAX_ID_CHARS),
        payload=as_object(event.payload),
        preview=required(event.preview, None, ""),
        id=required(event.id, _MAX_ID_CHARS, new_event_id()),
        createdOn=created,
        incomingEventId=clean.text(event.incomingEventId, _MAX_ID_CHARS),
        dedupeKey=clean.text(event.dedupeKey, _MAX_ID_CHARS),
        flags=as_object(event.flags),
        user=as_object(event.user),
    )
    return sanitised, clean.changed


def history_query(bot_id: str, channel: str, user_id: str, limit: int, thread_id: str | None,
                  after_seq: int | None, before_seq: int | None, placeholder: Any) -> tuple[str, list[Any], bool]:
    """SQL for ``messages_for`` (both backends), its parameters, and whether rows come newest first.

    ``placeholder(n)`` renders the n-th parameter (``?`` for SQLite, ``$n`` for PostgreSQL).
    """
    params: list[Any] = [bot_id, channel, user_id]
    where = [f"bot_id = {placeholder(1)}", f"channel = {placeholder(2)}", f"user_id = {placeholder(3)}"]
    for column, op, value in (("thread_id", "=", thread_id), ("seq", ">", after_seq), ("seq", "<", before_seq)):
        if value is not None:
            params.append(value)
            where.append(f"{column} {op} {placeholder(len(params))}")
    # Forward from a position (catching up since the last seen message) reads oldest first;
    # otherwise the newest page, reversed by the caller.
    newest_first = after_seq is None
    params.append(limit)
    sql = (f"SELECT seq, event, channel_message_id FROM messages WHERE {' AND '.join(where)} "
           f"ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT {placeholder(len(params))}")
    return sql, params, newest_first
