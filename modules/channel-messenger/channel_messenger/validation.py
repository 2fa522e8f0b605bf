"""What a value of a Messenger webhook body must be before it becomes part of an IOEvent.

A delivery is signed by Meta, yet what it holds goes on to storage (ids are keys and columns,
times integer columns), to logs, to bot logic and back to the Graph API (a PSID is a URL
segment). A value that does not fit must not get that far: one event with a 31-digit
timestamp or a list for a ``mid`` once failed the shared transaction of every event stored
with it. So every value is checked here, with these rules (docs/channels/messenger.md,
"What the webhook accepts"):

- ids (sender, recipient, Page, app, sticker) are at most 64 letters, digits, ``-``, ``_`` or
  ``.`` (Meta's are digits; test tools use names such as ``user-1``); a JSON number is taken as
  its digits when it is a whole number below 2**63;
- a ``mid`` is at most 512 printable ASCII characters (or such a number);
- a postback or quick-reply payload is a string of at most 1000 characters (Meta's limit);
- a timestamp is a whole number of milliseconds between Facebook's launch and a day after the
  receive time, otherwise the receive time stands in for it;
- text is any string, with NUL and lone UTF-16 surrogates (which neither UTF-8 nor PostgreSQL
  can store) replaced by U+FFFD;
- what is kept as it came (attachments of unknown types, unknown events, referral and signal
  bodies) is copied with the same string cleaning, at most ``MAX_KEPT_DEPTH`` levels deep and
  ``MAX_KEPT_NODES`` values in all; deeper or further values become the ``DROPPED`` marker.

A value that the event's meaning depends on and that breaks a rule raises ``Malformed``; the
webhook then skips that event (and logs why), never the rest of the delivery.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_ID_CHARS = 64
MAX_MID_CHARS = 512
MAX_PAYLOAD_CHARS = 1000
MAX_TITLE_CHARS = 1000
MAX_KEPT_DEPTH = 16
MAX_KEPT_NODES = 10_000
EARLIEST_MS = 1_075_852_800_000  # 2004-02-04, Facebook's launch: no Messenger event is older
MAX_AHEAD_MS = 86_400_000  # a sender's clock a day ahead of ours is already wrong
DROPPED = "[dropped: nested too deep or too large]"
DROPPED_KEY = "[dropped]"
_BIGGEST_ID = 2**63
_MID = re.compile(r"[!-~]+")
_ID = re.compile(r"[0-9A-Za-z_.-]+")


class Malformed(ValueError):
    """A webhook event that cannot be read: ``field`` says where, ``reason`` what is wrong (never the value)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def kind_of(value: Any) -> str:
    """A value's JSON type, for reasons that must not quote the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer" if -_BIGGEST_ID <= value < _BIGGEST_ID else "an integer out of range"
    if isinstance(value, float):
        return "a fraction"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def clean_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD (C-speed checks: cheap on megabytes)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Surrogate pairs split in two code points come together again; lone halves become U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def object_at(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(field, f"expected an object, got {kind_of(value)}")
    return value


def an_id(value: Any, field: str) -> str:
    """A Meta id (PSID, Page, app, sticker) as its digits."""
    if type(value) is str and 0 < len(value) <= MAX_ID_CHARS and value.isascii() and value.isdigit():
        return value  # Meta's own ids: the common case, without the regex
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < _BIGGEST_ID:
            return str(value)
    elif isinstance(value, str) and len(value) <= MAX_ID_CHARS and _ID.fullmatch(value):
        return value
    raise Malformed(field, f"expected an id (up to {MAX_ID_CHARS} letters, digits, '-', '_' or '.'), "
                           f"got {kind_of(value)}")


def optional_id(value: Any) -> str | None:
    """An id where one is only informative: a bad one is left out rather than failing the event."""
    try:
        return None if value is None else an_id(value, "")
    except Malformed:
        return None


def a_mid(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _BIGGEST_ID:
        return str(value)
    if isinstance(value, str) and len(value) <= MAX_MID_CHARS and _MID.fullmatch(value):
        return value
    raise Malformed(field, f"expected a message id (up to {MAX_MID_CHARS} printable ASCII characters), "
                           f"got {kind_of(value)}")


def a_payload(value: Any, field: str) -> str:
    """A postback or quick-reply payload: the value a button or quick reply was given."""
    if isinstance(value, int) and not isinstance(value, bool) and -_BIGGEST_ID <= value < _BIGGEST_ID:
        return str(value)
    if isinstance(value, str) and len(value) <= MAX_PAYLOAD_CHARS:
        return clean_text(value)
    raise Malformed(field, f"expected a string of at most {MAX_PAYLOAD_CHARS} characters, got {kind_of(value)}")


def a_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise Malformed(field, f"expected a string, got {kind_of(value)}")
    return clean_text(value)


def optional_text(value: Any, limit: int = MAX_TITLE_CHARS) -> str | None:
    """A display-only string (a title, a URL): cleaned and cut; any other type is left out."""
    return clean_text(value[:limit]) if isinstance(value, str) else None


def optional_number(value: Any, low: float, high: float) -> float | int | None:
    """A coordinate: a finite number within [low, high], else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
            and low <= value <= high:
        return value
    return None


def event_time(value: Any, received_ms: int) -> int | None:
    """The event's time when ``value`` is a plausible Meta timestamp (ms), else None (use the receive time)."""
    if isinstance(value, int) and not isinstance(value, bool) and EARLIEST_MS <= value <= received_ms + MAX_AHEAD_MS:
        return value
    return None


class _Budget:
    __slots__ = ("left",)

    def __init__(self, nodes: int) -> None:
        self.left = nodes


def kept(value: Any, *, max_depth: int = MAX_KEPT_DEPTH, max_nodes: int = MAX_KEPT_NODES) -> Any:
    """A storable copy of a value kept as it came: strings cleaned, numbers JSON-safe, depth and size capped."""
    return _kept(value, max_depth, _Budget(max_nodes))


def _kept(value: Any, depth_left: int, budget: _Budget) -> Any:
    budget.left -= 1
    if budget.left < 0:
        return DROPPED
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Some readers of stored JSON refuse integers past 64 bits (or past 4300 digits): keep the digits.
        return value if -_BIGGEST_ID <= value < _BIGGEST_ID else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth_left <= 0:
        return DROPPED
    if isinstance(value, dict):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if budget.left <= 0:
                copied[DROPPED_KEY] = DROPPED
                break
            copied[clean_text(str(key))] = _kept(item, depth_left - 1, budget)
        return copied
    if isinstance(value, list):
        items: list[Any] = []
        for item in value:
            if budget.left <= 0:
                items.append(DROPPED)
                break
            items.append(_kept(item, depth_left - 1, budget))
        return items
    return None
