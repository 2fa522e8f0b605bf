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
from collections.abc import Iterable

from ..events import IOEvent
from .base import Storage
from .common import INBOX_DONE_STATUSES, require_status

log = logging.getLogger("botpress_py.storage")

# One add() call: its events and the future its caller awaits.
_Caller = tuple[list[IOEvent], asyncio.Future[list[bool]]]


def _fail(callers: Iterable[_Caller], exc: Exception) -> None:
    for _, future in callers:
        if not future.done():  # a cancelled caller has nobody to tell
            future.set_exception(exc)


class GroupCommitInbox:
    """Merges concurrent ``add()`` calls into one ``storage.inbox_add`` call.

    One commit runs at a time. The first caller after a quiet spell waits ``window_ms`` for
    company; callers that arrive while a commit runs form the next batch, which goes as soon
    as that commit is done, so batches grow by themselves when the database is slow. A batch
    holds whole callers and at most ``max_batch`` events (a bigger single caller goes alone).
    """

    def __init__(self, storage: Storage, window_ms: float = 1.0, max_batch: int = 500) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._storage = storage
        self._window = max(window_ms, 0.0) / 1000
        self._max_batch = max_batch
        self._waiting: deque[_Caller] = deque()
        self._waiting_events = 0
        self._full = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    async def add(self, events: list[IOEvent]) -> list[bool]:
        """Store ``events`` durably; per event True if new, False if a duplicate.

        Returns only after the transaction holding them has committed, and raises the
        storage's exception if it failed (nothing of that batch is stored then).
        """
        if self._closed:
            raise RuntimeError("GroupCommitInbox is closed")
        if not events:
            return []
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((list(events), future))
        self._waiting_events += len(events)
        if self._waiting_events >= self._max_batch:
            self._full.set()
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_loop(), name="inbox-group-commit")
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
            if not self._full.is_set():
                try:
                    async with asyncio.timeout(self._window):
                        await self._full.wait()
                except TimeoutError:
                    pass
            while self._waiting:
                await self._commit(self._take_batch())
        except BaseException:
            # Cancelled (loop shutting down): nobody may be left waiting forever.
            _fail(self._waiting, RuntimeError("inbox group commit was cancelled before storing these events"))
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
            flags = await self._storage.inbox_add(merged)
            if len(flags) != len(merged):
                raise RuntimeError(f"inbox_add returned {len(flags)} flags for {len(merged)} events")
        except Exception as exc:
            # Every caller of the failed transaction fails: its webhook answers 5xx and the
            # channel redelivers, so nothing acknowledged is lost.
            _fail(batch, exc)
            return
        except BaseException:
            # Cancelled mid-commit: the outcome is unknown, so the callers must not answer 200.
            _fail(batch, RuntimeError("inbox group commit was cancelled while storing these events"))
            raise
        start = 0
        for events, future in batch:
            if not future.done():
                future.set_result(flags[start : start + len(events)])
            start += len(events)


class GroupCommitDone:
    """Batches "processed" marks into few ``storage.inbox_done`` calls, off the hot path.

    ``mark()`` returns at once; the marks are written ``window_ms`` later, one call per
    (status, error) pair. A failed write keeps its marks for the next attempt (the next mark,
    ``flush()`` or ``close()``); until written, a crash replays those events, which is the
    at-least-once edge DESIGN.md allows, never a loss.
    """

    def __init__(self, storage: Storage, window_ms: float = 1.0) -> None:
        self._storage = storage
        self._window = max(window_ms, 0.0) / 1000
        self._marks: dict[tuple[str, str | None], list[str]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def mark(self, event_id: str, status: str = "done", error: str | None = None) -> None:
        # Checked here, not at write time: a bad status must fail its caller, not sit in the
        # queue failing every later write.
        require_status(status, INBOX_DONE_STATUSES, "inbox")
        self._marks.setdefault((status, error), []).append(event_id)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_soon(), name="inbox-done-marks")

    @property
    def queued(self) -> int:
        """Marks not yet written."""
        return sum(len(ids) for ids in self._marks.values())

    async def flush(self) -> None:
        """Write every mark made so far; raises (and keeps the marks) if the storage fails."""
        async with self._lock:
            batch, self._marks = self._marks, {}
            failure: Exception | None = None
            try:
                for (status, error), event_ids in list(batch.items()):
                    try:
                        await self._storage.inbox_done(event_ids, status, error)
                    except Exception as exc:
                        # Keep going: one group the database refuses must not hold back the others.
                        failure = failure or exc
                    else:
                        del batch[(status, error)]
            finally:
                # What failed, or was never tried because we were cancelled, waits for the next attempt.
                for key, event_ids in batch.items():
                    self._marks.setdefault(key, []).extend(event_ids)
            if failure is not None:
                raise failure

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        await self.flush()

    async def _write_soon(self) -> None:
        await asyncio.sleep(self._window)
        try:
            while self._marks:
                await self.flush()
        except Exception:
            log.exception("could not record %d processed inbox events; retrying with the next mark", self.queued)
