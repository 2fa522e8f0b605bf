"""Group commit (docs/architecture.md, "Durability points"): many concurrent writers, one transaction.

A webhook may answer 200 only once its events are stored. Committing each request on its
own costs one transaction (and on SQLite one WAL write) per request; instead the requests
that arrive within a millisecond or so share one ``inbox_add`` call, and each caller gets
its own slice of the result once that single transaction has committed.

Sharing a transaction must not mean sharing a failure: when one fails, its items are split in
halves and each half committed again (and so on), until every item is either stored or has
failed on its own. Only then does an item's failure reach its caller, and only its caller. A
batch with one bad item costs about two transactions per halving (2 log2 n) instead of one;
the path where nothing fails pays nothing for it. A failure that says nothing about the
items (the database locked, unreachable or full: ``Storage.is_transient_failure``) is not
split: every caller gets it at once, as splitting would repeat it once per item.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Generic, TypeVar

from ..events import IOEvent
from ..logthrottle import LogThrottle
from .base import Completion, SentMark, Storage
from .common import describe_error, sanitised_event

log = logging.getLogger("botpress_py.storage")

T = TypeVar("T")
R = TypeVar("R")

# One add() call: its items and the future its caller awaits.
_Caller = tuple[list[Any], asyncio.Future[list[Any]]]


def _fail(callers: Iterable[_Caller], exc: Exception) -> None:
    for _, future in callers:
        if not future.done():  # a cancelled caller has nobody to tell
            future.set_exception(exc)


class _ItemFailed:
    """Stands in for the result of an item that failed on its own."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class _WrongResultCount(RuntimeError):
    """A commit function returned the wrong number of results: a bug, not a bad item."""


class GroupCommit(Generic[T, R]):
    """Merges concurrent ``add()`` calls into one call of ``commit`` (one transaction).

    ``commit(items)`` must return one result per item, in order, and store all items or none;
    each caller gets the results of its own items. When it raises for several items, they are
    split and committed again in halves, so that only the guilty items fail: ``_alone_failed``
    then decides what a caller gets for an item that failed by itself (by default, the error).

    One commit runs at a time. The first caller after a quiet spell waits ``window_ms`` for
    company; callers that arrive while a commit runs form the next batch, which goes as soon
    as that commit is done, so batches grow by themselves when the database is slow. A batch
    holds whole callers and at most ``max_batch`` events (a bigger single caller goes alone).
    """

    def __init__(self, commit: Callable[[list[T]], Awaitable[list[R]]], *, name: str,
                 window_ms: float = 0.0, max_batch: int = 500,
                 transient: Callable[[Exception], bool] | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit_fn = commit
        # A failure that says nothing about the items (a locked database): splitting would only
        # repeat it once per item, so every caller gets it at once.
        self._transient = transient or (lambda exc: False)
        # A flood of bad events must not flood the log: the first line of a kind goes out, the
        # next one 10 s later says how many were held back.
        self._throttle = LogThrottle(10.0)
        self._name = name
        self._window = max(window_ms, 0.0) / 1000
        self._max_batch = max_batch
        self._waiting: deque[_Caller] = deque()
        self._waiting_events = 0
        self._full = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    async def add(self, events: list[T]) -> list[R]:
        """Store ``events`` durably; per event True if new, False if a duplicate.

        Returns only after the transaction holding them has committed. Raises the storage's
        exception when one of the caller's own items failed (by itself: the other items of
        the batch, and this caller's other items, are stored).
        """
        if self._closed:
            raise RuntimeError(f"{self._name} group commit is closed")
        if not events:
            return []
        # A caller that gives up (cancelled) does not take its events out: they are committed
        # with the batch all the same, and a redelivery is then recognised as a duplicate.
        return await self.submit(events)

    def submit(self, events: list[T]) -> asyncio.Future[list[R]]:
        """``add`` without the coroutine: the future of the results, done once they are committed.

        For a caller on the hot path that reacts to the commit in a done-callback instead of a
        task of its own (the pipeline's webhook acknowledgement): no task per caller. The future
        is this caller's alone; cancelling it does not take the events out of the batch.
        """
        if self._closed:
            raise RuntimeError(f"{self._name} group commit is closed")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if not events:
            future.set_result([])
            return future
        self._waiting.append((list(events), future))
        self._waiting_events += len(events)
        if self._waiting_events >= self._max_batch:
            self._full.set()
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_loop(), name=f"{self._name}-group-commit")
        return future

    async def close(self) -> None:
        """Commit whatever is waiting, then refuse new events."""
        self._closed = True
        self._full.set()
        if self._committer is not None:
            await asyncio.shield(self._committer)

    async def _commit_loop(self) -> None:
        try:
            if self._window <= 0:
                # No timer: the callers that arrive in this turn of the event loop (under load,
                # the many requests one poll returns) form the batch.
                await asyncio.sleep(0)
            elif not self._full.is_set():
                try:
                    async with asyncio.timeout(self._window):
                        await self._full.wait()
                except TimeoutError:
                    pass
            while self._waiting:
                await self._commit(self._take_batch())
        except BaseException:
            # Cancelled (loop shutting down): nobody may be left waiting forever.
            _fail(self._waiting, RuntimeError(f"{self._name} group commit was cancelled before storing"))
            self._waiting.clear()
            self._waiting_events = 0
            raise
        finally:
            self._committer = None

    def _take_batch(self) -> list[_Caller]:
        batch = [self._waiting.popleft()]
        size = len(batch[0][0])
        while self._waiting and size + len(self._waiting[0][0]) <= self._max_batch:
            size += len(self._waiting[0][0])
            batch.append(self._waiting.popleft())
        self._waiting_events -= size
        if self._waiting_events < self._max_batch and not self._closed:
            self._full.clear()
        return batch

    async def _commit(self, batch: list[_Caller]) -> None:
        merged = [event for events, _ in batch for event in events]
        try:
            results = await self._commit_batch(merged)
        except _WrongResultCount as exc:
            _fail(batch, exc)
            return
        except BaseException:
            # Cancelled mid-commit: the outcome is unknown, so the callers must not answer 200.
            _fail(batch, RuntimeError(f"{self._name} group commit was cancelled while storing"))
            raise
        start = 0
        for events, future in batch:
            mine = results[start : start + len(events)]
            start += len(events)
            if future.done():
                continue
            failed = next((r for r in mine if isinstance(r, _ItemFailed)), None)
            if failed is not None:
                # Its webhook answers 5xx and the channel redelivers: nothing acknowledged is lost.
                future.set_exception(failed.exc)
            else:
                future.set_result(mine)

    async def _commit_batch(self, items: list[T]) -> list[R | _ItemFailed]:
        """One result per item of a batch (a subclass may commit a batch in parts)."""
        return await self._commit_split(items)

    async def _commit_split(self, items: list[Any], *, first: bool = True,
                            commit: Callable[[list[Any]], Awaitable[list[Any]]] | None = None) -> list[Any]:
        """Commit ``items`` in one transaction (``commit``, by default the group's own); if it fails,
        commit each half the same way."""
        commit = commit or self._commit_fn
        try:
            results = await commit(items)
        except Exception as exc:
            if self._transient(exc):
                return [_ItemFailed(exc)] * len(items)
            if len(items) == 1:
                return [await self._alone_failed(items[0], exc)]
            if first:  # the halvings below say nothing new
                self._throttle.log(log, logging.WARNING, (self._name, type(exc)),
                              "%s: a transaction of %d items failed (%s); committing them in halves to find the "
                              "guilty ones", self._name, len(items), type(exc).__name__)
            half = len(items) // 2
            return [*await self._commit_split(items[:half], first=False, commit=commit),
                    *await self._commit_split(items[half:], first=False, commit=commit)]
        if len(results) != len(items):
            raise _WrongResultCount(f"{self._name} commit returned {len(results)} results for {len(items)} items")
        return list(results)

    async def _alone_failed(self, item: T, exc: Exception) -> R | _ItemFailed:
        """What the caller of ``item`` gets when committing it by itself raised ``exc``."""
        return _ItemFailed(exc)


# What GroupCommitInbox answers for an event the inbox refused and that was stored, sanitised,
# as a failed event instead (acknowledged, never processed unless an operator retries it).
STORED_AS_FAILED: Final = "stored-as-failed"


class GroupCommitInbox(GroupCommit[IOEvent, bool | str]):
    """Concurrent webhooks' events stored with one ``storage.inbox_add``.

    Per event: True (new), False (a duplicate) or ``STORED_AS_FAILED``. Channels are meant to
    hand over only events storage accepts; one that slips through and is refused by itself is
    stored sanitised as a failed event (so the operator sees it, and the webhook can still be
    acknowledged). Only when even that fails, or when sanitising changes nothing (then the
    cause is not the event but the database, and a redelivery may well succeed), does its
    caller get the error.
    """

    def __init__(self, storage: Storage, window_ms: float = 0.0, max_batch: int = 500) -> None:
        super().__init__(storage.inbox_add, name="inbox", window_ms=window_ms, max_batch=max_batch,
                         transient=storage.is_transient_failure)
        self._storage = storage

    async def _alone_failed(self, item: IOEvent, exc: Exception) -> bool | str | _ItemFailed:
        try:
            sanitised, changed = sanitised_event(item)
        except Exception:  # an object whose every accessor raises: nothing can be made of it
            log.exception("inbox: event of bot %r could not be sanitised", getattr(item, "botId", None))
            return _ItemFailed(exc)
        masked = bool(sanitised.flags.get("mask"))
        error = describe_error(exc, masked=masked)
        if not changed:
            self._throttle.log(log, logging.ERROR, ("refused", sanitised.botId, type(exc)),
                          "inbox: event %s of bot %s could not be stored: %s", sanitised.id, sanitised.botId, error)
            return _ItemFailed(exc)
        try:
            stored = await self._storage.inbox_add_failed(sanitised, f"could not be stored as received: {error}")
        except Exception as second:
            self._throttle.log(log, logging.ERROR, ("refused", sanitised.botId, type(exc)),
                          "inbox: event %s of bot %s could not be stored (%s), nor its sanitised copy (%s)",
                          sanitised.id, sanitised.botId, error, describe_error(second, masked=masked))
            return _ItemFailed(exc)
        self._throttle.log(log, logging.ERROR, ("stored-failed", sanitised.botId, type(exc)),
                      "inbox: event %s of bot %s could not be stored as received (%s); stored sanitised as a failed "
                      "event (see botpress-py events failed)", sanitised.id, sanitised.botId, error)
        return STORED_AS_FAILED if stored else False


class GroupCommitCompletions(GroupCommit[Completion, list[int]]):
    """Processed events and their replies recorded with one ``storage.inbox_complete``.

    A completion that fails by itself fails its caller only (the pipeline retries it, then
    marks that event failed); the others of its batch are recorded.
    """

    def __init__(self, storage: Storage, window_ms: float = 0.0, max_batch: int = 500) -> None:
        super().__init__(storage.inbox_complete, name="inbox-complete", window_ms=window_ms, max_batch=max_batch,
                         transient=storage.is_transient_failure)


class GroupCommitSent(GroupCommit[SentMark, None]):
    """Delivered outgoing events marked sent (and added to history) with one ``storage.outbox_sent_many``.

    A mark that fails by itself fails its caller only; the others of its batch are recorded.
    """

    def __init__(self, storage: Storage, window_ms: float = 0.0, max_batch: int = 500) -> None:
        super().__init__(storage.outbox_sent_many, name="outbox-sent", window_ms=window_ms, max_batch=max_batch,
                         transient=storage.is_transient_failure)


class GroupCommitOutcomes(GroupCommit[Completion | SentMark, list[int] | None]):
    """Completions and sent marks that are ready at the same moment, recorded in ONE transaction.

    Per item: a completion's outbox seqs (as ``inbox_complete``), None for a sent mark. Under load
    an answered event costs a completion and a sent mark; as two group commits they were two
    transactions (two hand-offs to the SQLite writer, two COMMITs, and a COMMIT, which writes every
    page the transaction touched to the WAL, is a quarter of the writer's time). Merged, whatever
    of both kinds waits while a commit runs goes in the next one. A sent mark still never waits
    for company (no window): held back, the history would show a reply after the user's next
    message. A failed batch is split as any other, across kinds, so only the guilty item fails.

    A backend that cannot record both kinds in one transaction (``records_outcomes_together`` False:
    PostgreSQL, whose completions are fenced in cluster mode) gets each kind of the batch committed
    by its own call as before, the two at the same time.
    """

    def __init__(self, storage: Storage, window_ms: float = 0.0, max_batch: int = 500) -> None:
        super().__init__(storage.record_outcomes, name="outcomes", window_ms=window_ms, max_batch=max_batch,
                         transient=storage.is_transient_failure)
        self._storage = storage

    async def _commit_batch(self, items: list[Completion | SentMark]) -> list[Any]:
        if self._storage.records_outcomes_together:
            return await self._commit_split(items)
        completions = [item for item in items if isinstance(item, Completion)]
        marks = [item for item in items if not isinstance(item, Completion)]
        if not marks or not completions:
            return await self._commit_split(items, commit=self._storage.outbox_sent_many if marks
                                            else self._storage.inbox_complete)
        done, marked = await asyncio.gather(self._commit_split(completions, commit=self._storage.inbox_complete),
                                            self._commit_split(marks, commit=self._storage.outbox_sent_many))
        completed, sent = iter(done), iter(marked)
        return [next(completed) if isinstance(item, Completion) else next(sent) for item in items]
