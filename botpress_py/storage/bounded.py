"""A bounded wait for a commit: how a webhook's acknowledgement stays bounded when storage stalls."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from .base import StorageUnavailable

log = logging.getLogger("botpress_py.storage")


def stalled(timeout: float) -> StorageUnavailable:
    return StorageUnavailable(
        f"the events could not be stored within {timeout:g}s (storage.ackTimeout): storage is stalled or "
        "overloaded; answer 503 so the platform redelivers (a redelivery of events stored meanwhile is "
        "recognised as a duplicate)")


class AckDeadlines:
    """Bounds the wait for many commits with one timer: the webhook hot path's ``asyncio.wait(timeout=)``.

    ``bound(ack, timeout)``: if ``ack`` is not done ``timeout`` seconds from now, it fails with
    StorageUnavailable, and whoever awaits it answers 503. ``ack`` must be its caller's own future
    (failing it tells nobody else), resolved by the commit's done-callback; the commit itself is
    never cancelled: it runs on (a transaction cannot be taken back halfway), and what it was for
    still happens if it lands later.

    ``asyncio.wait`` with a timeout costs a timer, a waiter future and two callbacks per call (a
    tenth of the ingest path's CPU, bench/). Here, waits all share one timeout, so they expire in
    the order they began: a queue, one timer armed for the oldest, and the done ones at the front
    dropped as the commits land (in order too, one batch after the other), so the queue holds only
    the waits still in flight. (A timeout changed while waits are queued delays the new, shorter
    ones by at most the difference: ``storage.ackTimeout`` is set before the server serves.)
    """

    def __init__(self) -> None:
        self._waits: deque[tuple[float, float, asyncio.Future[Any]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waits)

    def bound(self, ack: asyncio.Future[Any], timeout: float) -> None:
        if ack.done():
            return
        loop = ack.get_loop()
        deadline = loop.time() + timeout
        self._waits.append((deadline, timeout, ack))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def landed(self) -> None:
        """A commit landed: forget the waits at the front that are over."""
        waits = self._waits
        while waits and waits[0][2].done():
            waits.popleft()

    def _expire(self) -> None:
        self._timer = None
        waits = self._waits
        if not waits:
            return
        loop = waits[0][2].get_loop()
        now = loop.time()
        while waits and (waits[0][0] <= now or waits[0][2].done()):
            _, timeout, ack = waits.popleft()
            if not ack.done():
                ack.set_exception(stalled(timeout))
        if waits:
            self._timer = loop.call_at(waits[0][0], self._expire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def landed_late(error: BaseException | None) -> None:
    """A commit whose webhook stopped waiting (its ack failed or was cancelled) finished: only logged."""
    if error is None:
        log.info("a commit finished after its webhook stopped waiting: its events are processed, and a "
                 "redelivery is recognised as a duplicate")
    else:
        log.debug("a commit its webhook stopped waiting for failed too (the platform redelivers): %s", error)
