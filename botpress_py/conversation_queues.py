"""One FIFO and one worker task per conversation: what keeps a conversation's events in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("botpress_py.pipeline")

ConvKey = tuple[str, str, str, str]


class ConversationQueues:
    """One FIFO and one worker task per conversation; conversations run concurrently.

    ``handle`` deals with every failure of its item itself (retries, failed state): an
    exception reaching this worker is a bug, logged, and the conversation moves on.
    """

    def __init__(self, name: str, handle: Callable[[Any], Awaitable[None]]) -> None:
        self.name = name
        self._handle = handle
        self._queues: dict[ConvKey, deque[Any]] = {}
        self._workers: dict[ConvKey, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, key: ConvKey, item: Any) -> None:
        self._queues.setdefault(key, deque()).append(item)
        if key not in self._workers:
            self._idle.clear()
            self._workers[key] = asyncio.create_task(self._run(key), name=f"{self.name}:{key}")

    async def _run(self, key: ConvKey) -> None:
        queue = self._queues[key]
        try:
            while queue:
                item = queue[0]
                try:
                    await self._handle(item)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s worker failed on an item (a bug); what is stored of it stays pending and "
                                  "replays at the next start", self.name)
                queue.popleft()
        finally:
            if not queue:
                self._queues.pop(key, None)
            self._workers.pop(key, None)
            if not self._workers:
                self._idle.set()

    def pending(self) -> int:
        return sum(len(q) for q in list(self._queues.values()))  # a copy: /metrics reads it from a thread

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def cancel(self) -> None:
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
