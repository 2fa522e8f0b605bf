"""Failed-event rows as both backends read them back: decrypted where the event was masked.

A row whose event cannot be decrypted (written with another storage key) is still listed, so an
operator can see and discard it: its event is rebuilt from the row's plain columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..events import IOEvent
from .base import Direction, FailedEvent
from .common import error_from_stored, event_from_stored
from .crypto import EventCipher, UnreadableStoredValue

# Selected in this order by both backends, followed by the column of when the row finished.
FAILED_COLUMNS = "seq, event, status, attempts, error, bot_id, channel, thread_id, user_id, event_id"


def failed_event(direction: Direction, row: Sequence[Any] | Mapping[str, Any], cipher: EventCipher) -> FailedEvent:
    values = list(row.values()) if isinstance(row, Mapping) else list(row)
    seq, text, status, attempts, error, bot_id, channel, thread_id, user_id, event_id, finished = values
    try:
        event = event_from_stored(text, cipher)
    except UnreadableStoredValue as exc:
        event = IOEvent(type="unreadable", channel=channel, direction="incoming" if direction == "incoming"
                        else "outgoing", botId=bot_id, target=user_id, threadId=thread_id, id=event_id,
                        preview=f"(a masked event this storage key cannot read: {exc})")
    return FailedEvent(direction, int(seq), event, status, int(attempts), error_from_stored(error, cipher),
                       None if finished is None else int(finished))
