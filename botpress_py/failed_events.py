"""Failed events (a dead-letter state): how processing failures are retried, counted and handled.

An incoming event whose processing fails for a reason other than its bot logic (storage
refusing a write, a full disk, a read before bot logic) is tried again with exponential
backoff and jitter, its conversation waiting meanwhile, up to ``storage.failedEvents.maxAttempts``
attempts (counted in storage, so a restart does not start the count over). Then it is marked
``failed`` with its last error and its conversation moves on. Outgoing events whose delivery
failed for good are failed events too. An operator lists them, retries them (back to pending,
queued again) or discards them through the admin API or ``botpress-py events``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .config.server_config import parse_duration
from .events import MASK, IOEvent
from .storage import FailedEvent, OutboxRow, Storage
from .storage.base import Direction

DIRECTIONS: tuple[Direction, ...] = ("incoming", "outgoing")
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF = "1s"
MAX_BACKOFF_SECONDS = 300.0
# Events one bulk retry or discard call handles; the rest waits for the next call.
BULK_DEFAULT = 1000
BULK_MAX = 10_000
LIST_DEFAULT = 100
LIST_MAX = 1000
_PREVIEW_CHARS = 200
# How long a refresh of the counts waits after reading them for a failure counted late (FailedCounts).
REFRESH_SETTLE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and how far apart, an incoming event's processing is tried."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: float = 1.0  # seconds before the second attempt; doubled for each one after

    @classmethod
    def from_config(cls, storage_config: Mapping[str, Any]) -> RetryPolicy:
        failed = storage_config.get("failedEvents", {})
        return cls(int(failed.get("maxAttempts", DEFAULT_MAX_ATTEMPTS)),
                   parse_duration(failed.get("backoff", DEFAULT_BACKOFF)))

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure, with jitter so that
        conversations that failed together (a full disk) do not all retry at once."""
        base = min(MAX_BACKOFF_SECONDS, self.backoff * 2 ** max(0, failed_attempts - 1))
        return base * random.uniform(0.8, 1.2)


class FailedCounts:
    """How many failed events are stored, per bot and direction: kept up to date as events fail,
    are retried or discarded (read from storage at start and after each purge), so that
    /metrics and /status never count rows."""

    def __init__(self) -> None:
        self._by_bot: dict[str, dict[str, int]] = {}
        self._changes = 0  # how many times add() was called: tells a recount that raced with it

    def replace(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        self._by_bot = {bot: {d: int(c.get(d, 0)) for d in DIRECTIONS} for bot, c in counts.items()
                        if any(c.values())}

    async def refresh(self, read: Callable[[], Awaitable[Mapping[str, Mapping[str, int]]]],
                      settle: float = REFRESH_SETTLE_SECONDS) -> bool:
        """Replace the counts by ``read()`` (storage's), unless they changed while it read or just
        after: the read may or may not include that change, so it is dropped (False) and tried
        another time. "Just after" because a failed event is counted here once its write returned:
        a write committed before the read but counted after it would be counted twice."""
        changes = self._changes
        counts = await read()
        await asyncio.sleep(settle)
        if self._changes != changes:
            return False
        self.replace(counts)
        return True

    def add(self, bot_id: str, direction: str, count: int = 1) -> None:
        self._changes += 1
        entry = self._by_bot.setdefault(bot_id, {d: 0 for d in DIRECTIONS})
        entry[direction] = max(0, entry[direction] + count)
        if not any(entry.values()):
            del self._by_bot[bot_id]

    def of(self, bot_id: str) -> dict[str, int]:
        return dict(self._by_bot.get(bot_id) or {d: 0 for d in DIRECTIONS})

    def totals(self) -> dict[str, int]:
        entries = list(self._by_bot.values())  # a copy: /metrics reads it from a thread
        return {d: sum(entry[d] for entry in entries) for d in DIRECTIONS}

    def gauge(self) -> dict[str, float]:
        return {d: float(n) for d, n in self.totals().items()}

    def status(self) -> dict[str, Any]:
        """The ``failedEvents`` key of GET /status."""
        totals = self.totals()
        return {**totals, "total": sum(totals.values()),
                "bots": {bot: dict(entry) for bot, entry in sorted(self._by_bot.items())}}


class Requeue(Protocol):
    """What the pipeline offers for events an operator retries."""

    def requeue_incoming(self, bot_ids: Iterable[str]) -> None: ...

    def requeue_outgoing(self, rows: list[OutboxRow]) -> None: ...


class EventNotFound(LookupError):
    pass


class EventNotFailed(Exception):
    def __init__(self, event_id: str, direction: str, status: str) -> None:
        super().__init__(f"{direction} event {event_id} is {status}, not failed: only failed events can be "
                         "retried or discarded")
        self.status = status


class EventNotRetryable(Exception):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"outgoing event {event_id} is masked: its text was masked in storage when it failed, so "
                         "it cannot be sent again; discard it")


def _retryable(direction: str, event: IOEvent) -> bool:
    # A masked reply is stored masked once it failed: sending it again would send the mask.
    return direction == "incoming" or not event.flags.get("mask")


class FailedEvents:
    """The operator's tools: list, retry and discard failed events (behind the admin API)."""

    def __init__(self, storage: Storage, requeue: Requeue, counts: FailedCounts) -> None:
        self.storage = storage
        self.requeue = requeue
        self.counts = counts

    async def list(self, *, bot_id: str | None = None, direction: Direction | None = None,
                   limit: int = LIST_DEFAULT, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of failed events (incoming ones first, each direction oldest first) and the
        cursor of the next page (None when this one is the last)."""
        directions = [direction] if direction else list(DIRECTIONS)
        start, after = parse_cursor(cursor, directions)
        items: list[dict[str, Any]] = []
        next_cursor: str | None = None
        for current in directions[directions.index(start):]:
            wanted = limit - len(items)
            rows = await self.storage.failed_events(current, bot_id=bot_id, limit=wanted + 1,
                                                    after_seq=after if current == start else 0)
            items += [describe(row) for row in rows[:wanted]]
            if len(rows) > wanted:
                next_cursor = f"{current}:{rows[wanted - 1].seq}"
                break
            if len(items) >= limit:
                later = directions[directions.index(current) + 1:]
                next_cursor = f"{later[0]}:0" if later else None
                break
        return items, next_cursor

    async def retry(self, event_id: str) -> dict[str, Any]:
        direction, bot_id = await self._failed(event_id)
        if direction == "outgoing":
            row = await self.storage.outbox_get(event_id)
            if row is not None and not _retryable(direction, row.event):
                raise EventNotRetryable(event_id)
        rows = await self.storage.events_retry(direction, [event_id])
        if not rows:  # changed state since it was looked up
            await self._failed(event_id)
            raise EventNotFound(event_id)
        self._retried(bot_id, direction, rows)
        return {"id": event_id, "direction": direction, "botId": bot_id, "status": "pending"}

    async def discard(self, event_id: str) -> dict[str, Any]:
        direction, bot_id = await self._failed(event_id)
        if not await self.storage.events_discard(direction, [event_id]):
            await self._failed(event_id)
            raise EventNotFound(event_id)
        self.counts.add(bot_id, direction, -1)
        return {"id": event_id, "direction": direction, "botId": bot_id, "status": "discarded"}

    async def retry_bot(self, bot_id: str, direction: Direction | None = None,
                        limit: int = BULK_DEFAULT) -> dict[str, Any]:
        """Retry up to ``limit`` of a bot's failed events, oldest first (incoming ones first);
        ``skipped`` counts those that cannot be retried (masked outgoing events), left failed."""
        done = skipped = 0
        for current in [direction] if direction else DIRECTIONS:
            after = 0
            while done < limit:
                rows = await self.storage.failed_events(current, bot_id=bot_id, after_seq=after, limit=limit - done)
                if not rows:
                    break
                after = rows[-1].seq
                retryable = [row.event.id for row in rows if _retryable(current, row.event)]
                skipped += len(rows) - len(retryable)
                changed = await self.storage.events_retry(current, retryable)
                self._retried(bot_id, current, changed)
                done += len(changed)
        return {"botId": bot_id, "retried": done, "skipped": skipped,
                "remaining": self._remaining(bot_id, direction)}

    async def discard_bot(self, bot_id: str, direction: Direction | None = None,
                          limit: int = BULK_DEFAULT) -> dict[str, Any]:
        done = 0
        for current in [direction] if direction else DIRECTIONS:
            rows = await self.storage.failed_events(current, bot_id=bot_id, limit=limit - done)
            changed = await self.storage.events_discard(current, [row.event.id for row in rows])
            self.counts.add(bot_id, current, -len(changed))
            done += len(changed)
        return {"botId": bot_id, "discarded": done, "remaining": self._remaining(bot_id, direction)}

    async def _failed(self, event_id: str) -> tuple[Direction, str]:
        found = await self.storage.event_status(event_id)
        if found is None:
            raise EventNotFound(event_id)
        direction, status, bot_id = found
        if status != "failed":
            raise EventNotFailed(event_id, direction, status)
        return direction, bot_id

    def _retried(self, bot_id: str, direction: Direction, rows: list[FailedEvent]) -> None:
        if not rows:
            return
        self.counts.add(bot_id, direction, -len(rows))
        if direction == "incoming":
            self.requeue.requeue_incoming({row.event.botId for row in rows})
        else:
            self.requeue.requeue_outgoing([OutboxRow(row.seq, row.event, 0, 0, "pending") for row in rows])

    def _remaining(self, bot_id: str, direction: Direction | None) -> int:
        counts = self.counts.of(bot_id)
        return counts[direction] if direction else sum(counts.values())


def parse_cursor(cursor: str | None, directions: list[Direction]) -> tuple[Direction, int]:
    """``"<direction>:<seq>"`` as handed out by ``FailedEvents.list``; ValueError when it is not one."""
    if not cursor:
        return directions[0], 0
    direction, _, seq = cursor.partition(":")
    if direction not in directions or not seq.isdigit():
        raise ValueError(f"cursor {cursor!r} is not one this listing handed out (expected <direction>:<number> "
                         f"with direction {' or '.join(directions)})")
    return direction, int(seq)  # type: ignore[return-value]


def describe(row: FailedEvent) -> dict[str, Any]:
    """A failed event as the admin API shows it; a masked event's text shows as masked."""
    event = row.event
    masked = bool(event.flags.get("mask"))
    preview = MASK if masked and event.preview else event.preview[:_PREVIEW_CHARS]
    return {"id": event.id, "direction": row.direction, "botId": event.botId, "channel": event.channel,
            "userId": event.target, "threadId": event.threadId, "type": event.type, "preview": preview,
            "status": row.status, "attempts": row.attempts, "error": row.error, "failedAt": row.updated_at,
            "createdOn": event.createdOn}
