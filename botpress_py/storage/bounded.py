"""A bounded wait for a commit: how a webhook's acknowledgement stays bounded when storage stalls."""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

from .base import StorageUnavailable

log = logging.getLogger("botpress_py.storage")

T = TypeVar("T")


async def await_commit(commit: asyncio.Future[T], timeout: float) -> T:
    """``commit``'s result, waited for at most ``timeout`` seconds; past that, StorageUnavailable.

    The commit is never cancelled: it runs on (a transaction cannot be taken back halfway), and
    what it was for still happens if it lands later. A caller that goes away meanwhile leaves it
    running the same way. Its outcome is then only logged: its caller has already answered.
    """
    try:
        done, _ = await asyncio.wait((commit,), timeout=timeout)
    except asyncio.CancelledError:
        commit.add_done_callback(_landed_late)
        raise
    if not done:
        commit.add_done_callback(_landed_late)
        raise StorageUnavailable(
            f"the events could not be stored within {timeout:g}s (storage.ackTimeout): storage is stalled or "
            "overloaded; answer 503 so the platform redelivers (a redelivery of events stored meanwhile is "
            "recognised as a duplicate)")
    return commit.result()


def _landed_late(commit: asyncio.Future[T]) -> None:
    if commit.cancelled():
        return
    exc = commit.exception()  # retrieved, so asyncio does not report it as lost
    if exc is None:
        log.info("a commit finished after its webhook stopped waiting: its events are processed, and a "
                 "redelivery is recognised as a duplicate")
    else:
        log.debug("a commit its webhook stopped waiting for failed too (the platform redelivers): %s", exc)
