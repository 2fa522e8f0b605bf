"""Group commit (DESIGN.md section 7): many concurrent writers, one transaction.

A webhook may answer 200 only once its events are stored. Committing each request on its
own costs one transaction (and on SQLite one WAL write) per request; instead the requests
that arrive within a millisecond or so share one ``inbox_add`` call, and each caller gets
its own slice of the result once that single transaction has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

from ..events import IOEvent
from .base import Completion, SentMark, Storage

log = logging.getLogger("botpress_py.storage")

T = TypeVar("T")
R = TypeVar("R")

# One add() call: its items and the future its caller awaits.
_Caller = tuple[list[Any], asyncio.Future[list[Any]]]


def _fail(callers: Iterable[_Caller], exc: Exception) -> None:
    for _, future in callers:
        if not future.done():  # a cancelled caller has nobody to tell
            future.set_exception(exc)


class GroupCommit(Generic[T, R]):
    """Merges concurrent ``add()`` calls into one call of ``commit`` (one transaction).

    ``commit(items)`` must return one result per item, in order; each caller gets the
    results of its own items.

    One commit runs at a time. The first caller after a quiet spell waits ``window_ms`` for
    company; callers that arrive while a commit runs form the next batch, which goes as soon
    as that commit is done, so batches grow by themselves when the database is slow. A batch
    holds whole callers and at most ``max_batch`` events (a bigger single caller goes alone).
    """

    def __init__(self, commit: Callable[[list[T]], Awaitable[list[R]]], *, name: str,
                 window_ms: float = 0.0, max_batch: int = 500) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit_fn = commit
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

        Returns only after the transaction holding them has committed, and raises the
        storage's exception if it failed (nothing of that batch is stored then).
        """
        if self._closed:
            raise RuntimeError(f"{self._name} group commit is closed")
        if not events:
            return []
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((list(events), future))
        self._waiting_events += len(events)
        if self._waiting_events >= self._max_batch:
            self._full.set()
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_loop(), name=f"{self._name}-group-commit")
        # A caller that gives up (cancelled) does not take its events out: they are committed
        # with the batch all the same, and a redelivery is then recognised as a duplicate.
        return await future

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
            flags = await self._commit_fn(merged)
            if len(flags) != len(merged):
                raise RuntimeError(f"{self._name} commit returned {len(flags)} results for {len(merged)} items")
        except Exception as exc:
            # Every caller of the failed transaction fails: its webhook answers 5xx and the
            # channel redelivers, so nothing acknowledged is lost.
            _fail(batch, exc)
            return
        except BaseException:
            # Cancelled mid-commit: the outcome is unknown, so the callers must not answer 200.
            _fail(batch, RuntimeError(f"{self._name} group commit was cancelled while storing"))
            raise
        start = 0
        for events, future in batch:
            if not future.done():
                future.set_result(flags[start : start + len(events)])
            start += len(events)


class GroupCommitInbox(GroupCommit[IOEvent, bool]):
    """Concurrent webhooks' events stored with one ``storage.inbox_add`` (True = new, False = duplicate)."""

    def __init__(self, storage: Storage, window_ms: float = 0.0, max_batch: int = 500) -> None:
        super().__init__(storage.inbox_add, name="inbox", window_ms=window_ms, max_batch=max_batch)


class GroupCommitCompletions(GroupCommit[Completion, list[int]]):
    """Processed events and their replies recorded with one ``storage.inbox_complete``."""

    def __init__(self, storage: Storage, window_ms: float = 0.0, max_batch: int = 500) -> None:
        super().__init__(storage.inbox_complete, name="inbox-complete", window_ms=window_ms, max_batch=max_batch)


class GroupCommitSent(GroupCommit[SentMark, None]):
    """Delivered outgoing events marked sent (and added to history) with one ``storage.outbox_sent_many``."""

    def __init__(self, storage: Storage, window_ms: float = 0.0, max_batch: int = 500) -> None:
        super().__init__(storage.outbox_sent_many, name="outbox-sent", window_ms=window_ms, max_batch=max_batch)
