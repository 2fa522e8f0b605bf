"""The threads that drive the SQLite file, so that the event loop's thread never touches it.

A disk that stalls (fsfreeze, a dying device, a full volume being resized) blocks whichever
thread is inside a read, a write or an fsync. None of these is the event loop's: the writer
connection lives on the writer thread, the reader connection on the reader thread, and WAL
checkpoints on their own thread and connection. The loop only hands work over and awaits it,
so `/status`, `/metrics` and every request that does not need storage keep being answered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401  (why: below the imports)
import heapq
import itertools
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from typing import Any, TypeVar

# concurrent.futures.thread is imported at start, not lazily by the loop's first default-executor
# call (closing storage, the file watcher's scans): a lazy import opens a file, and fails while the
# process is out of file descriptors (tests/test_fd_limits.py).
T = TypeVar("T")
Db = sqlite3.Connection

# Writer priorities: an inbox commit gates webhook acknowledgements, so it goes before the
# processing writes queued behind it (those only delay replies, which are async anyway).
URGENT, NORMAL = 0, 1


class DatabaseThread:
    """One thread running submitted functions, most urgent first, then in submission order.

    The SQLite writer and reader each have one. ``call`` is the hot path (every transaction and
    every read): the loop's future is settled straight from the thread with
    ``call_soon_threadsafe``, without a ``concurrent.futures.Future`` in between, whose lock,
    condition and ``wrap_future`` chaining cost a third of each hand-off's CPU (measured on one
    core: 40 against 26 us per hand-off, the thread's side included). Jobs come in through a
    ``SimpleQueue`` (a C lock, no Python condition); the thread moves whatever has arrived into
    its own heap and runs the most urgent first.
    """

    def __init__(self, name: str) -> None:
        self._inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[[], T]) -> Future[T]:
        """``fn`` on the thread; a ``concurrent.futures.Future`` any thread may wait on (not the hot path)."""
        future: Future[T] = Future()
        self._inbox.put((priority, next(self._order), fn, future))
        return future

    def call(self, priority: int, fn: Callable[[], T]) -> asyncio.Future[T]:
        """``fn`` on the thread; the running loop's future of its result. Cancelling the future before
        the thread starts ``fn`` means it never runs (nothing was written)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._inbox.put((priority, next(self._order), fn, (loop, future)))
        return future

    def _run(self) -> None:
        waiting: list[_Job] = []
        while True:
            if not waiting:
                waiting.append(self._inbox.get())
            with suppress(queue.Empty):
                while True:  # everything queued meanwhile: the most urgent of it goes first
                    heapq.heappush(waiting, self._inbox.get_nowait())
            _, _, fn, target = heapq.heappop(waiting)
            if fn is None or target is None:
                return
            if isinstance(target, Future):
                if not target.set_running_or_notify_cancel():
                    continue  # the caller gave up before it started: nothing was written
                try:
                    target.set_result(fn())
                except BaseException as exc:
                    target.set_exception(exc)
                continue
            loop, future = target
            if future.cancelled():
                continue  # the caller gave up before it started: nothing was written
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:
                error = exc
            with suppress(RuntimeError):  # the loop is closed: nobody waits for this any more
                loop.call_soon_threadsafe(_settle, future, result, error)

    def shutdown(self) -> None:
        """Finish what was submitted, then stop."""
        self._inbox.put((2**31, next(self._order), None, None))
        self._thread.join()


# (priority, submission order, function, where its outcome goes); the order is unique, so the heap
# never compares functions. A None function is the stop mark.
_Outcome = Future[Any] | tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Job = tuple[int, int, Callable[[], Any] | None, _Outcome | None]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: the outcome of a ``DatabaseThread.call`` (unless its caller gave up meanwhile)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def run_transaction(db: Db, body: Callable[[Db], T]) -> T:
    """``body(db)`` in one transaction: BEGIN IMMEDIATE, then COMMIT (or ROLLBACK and raise).

    IMMEDIATE takes the write lock up front, so another process holding the file makes us wait
    (the connection's busy_timeout) here instead of failing halfway through a transaction. It
    always ends in COMMIT or ROLLBACK, so a caller that gave up never leaves a transaction open.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        result = body(db)
        if isinstance(result, sqlite3.Cursor):
            # A cursor must not leave its thread: dropped on another one, it resets its (cached,
            # shared) statement while this connection may be running it ("bad parameter or other
            # API misuse").
            result.close()
            result = None  # type: ignore[assignment]
        db.execute("COMMIT")
        return result
    except BaseException:
        # Fails harmlessly when SQLite already rolled back by itself (disk full).
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


class Checkpointer:
    """Copies the WAL into the database file from its own thread and connection.

    Automatic checkpoints would run inside a commit, and a checkpoint fsyncs: milliseconds, or
    much longer on a stalled disk. Here they run at most every ``interval`` seconds once
    something was committed, as PASSIVE checkpoints, which never block writers or readers.

    ``truncate()`` asks for a TRUNCATE checkpoint (after a user erase): every frame copied into
    the database file, then the WAL cut to zero bytes, so the old page images it still holds
    (the erased rows as they were) are gone from the files. A reader in the middle of a long
    read blocks it, and while one waits it holds off writers; so the connection waits only a
    few milliseconds (its busy_timeout), and an attempt that could not finish is retried after
    a pause that grows to ``max_retry_pause``, until it succeeds.
    """

    def __init__(self, connect: Callable[[], Db], interval: float = 1.0, first_retry_pause: float = 0.05,
                 max_retry_pause: float = 1.0) -> None:
        self._connect = connect
        self._interval = interval
        self._first_retry_pause = first_retry_pause
        self._max_retry_pause = max_retry_pause
        self._cond = threading.Condition()
        self._dirty = False
        self._stopping = False
        self._truncate_waiters: list[Future[None]] = []
        self.truncate_attempts = 0  # TRUNCATE checkpoints tried, and done (for tests and diagnostics)
        self.truncations = 0
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A transaction committed: there is WAL to copy (called on the writer thread)."""
        if not self._dirty:
            with self._cond:
                self._dirty = True
                self._cond.notify()

    def truncate(self) -> Future[None]:
        """A future done once a TRUNCATE checkpoint that started after this call has succeeded."""
        future: Future[None] = Future()
        with self._cond:
            if self._stopping:
                future.set_exception(RuntimeError("the checkpoint thread is stopped"))
                return future
            self._truncate_waiters.append(future)
            self._cond.notify()
        return future

    def _next_job(self) -> list[Future[None]] | None:
        """Waiters of a TRUNCATE to run now, [] for a PASSIVE checkpoint, None to stop."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._dirty or self._truncate_waiters)
            if not self._truncate_waiters and not self._stopping:
                # Let commits gather for a while: one checkpoint (and fsync) per interval at most.
                self._cond.wait_for(lambda: self._stopping or self._truncate_waiters, self._interval)
            if self._stopping:
                return None
            self._dirty = False
            waiters, self._truncate_waiters = self._truncate_waiters, []
            return waiters

    def _run(self) -> None:
        db = self._connect()
        try:
            while (waiters := self._next_job()) is not None:
                if waiters:
                    self._truncate_until_done(db, waiters)
                else:
                    with suppress(sqlite3.Error):  # a busy file: the next round tries again
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
        finally:
            db.close()
            with self._cond:
                left, self._truncate_waiters = self._truncate_waiters, []
            for future in left:
                future.set_exception(RuntimeError("the checkpoint thread stopped before the WAL was truncated"))

    def _truncate_until_done(self, db: Db, waiters: list[Future[None]]) -> None:
        pause = self._first_retry_pause
        while True:
            self.truncate_attempts += 1
            with suppress(sqlite3.Error):  # busy or locked: retried below
                busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    self.truncations += 1
                    for future in waiters:
                        future.set_result(None)
                    return
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, pause):
                    for future in waiters:
                        future.set_exception(RuntimeError("the checkpoint thread stopped before the WAL was "
                                                          "truncated"))
                    return
            pause = min(pause * 2, self._max_retry_pause)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
