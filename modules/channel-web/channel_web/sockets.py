"""The visitors' WebSockets: who is connected, pushing to them, and catching up after a blip.

Replies reach a visitor two ways, so none is lost to a network blip: pushed on every open
socket of the visitor when ``on_outgoing`` delivers them, and read back from the message
history when a socket (re)connects, from the last message the browser saw. A reply is written
to history a moment after ``on_outgoing`` returns, so a socket connecting in between would
miss it: the hub keeps each visitor's recent deliveries for a short while and adds them to the
catch-up (the browser drops what it already has by id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

VisitorKey = tuple[str, str]  # (bot id, user id)

MAX_SOCKETS_PER_VISITOR = 5  # tabs of one visitor; a sixth replaces the oldest
SEND_TIMEOUT = 5.0  # a socket that cannot take a message this fast is closed (the visitor catches up later)
RECENT_SECONDS = 120.0  # how long a delivery is kept for catch-ups
RECENT_PER_VISITOR = 50
RECENT_VISITORS = 10_000  # visitors with recent deliveries kept at most (least recent dropped)

# Close codes the browser acts on (4000-4999 are the application's own).
CLOSE_GOING_AWAY = 1001  # the server stops
CLOSE_UNAUTHORIZED = 4401  # missing or forged token: get a new identity
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_REPLACED = 4409  # too many sockets of one visitor: the oldest goes
CLOSE_UNAVAILABLE = 4503  # the bot was unmounted (disabled, reloaded, or the channel turned off)


class SocketHub:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sockets: dict[VisitorKey, list[web.WebSocketResponse]] = {}
        self._recent: OrderedDict[VisitorKey, deque[tuple[float, dict[str, Any]]]] = OrderedDict()
        self.closing = False

    # -- connections --------------------------------------------------------------------------
    async def add(self, key: VisitorKey, ws: web.WebSocketResponse) -> None:
        sockets = self._sockets.setdefault(key, [])
        sockets.append(ws)
        while len(sockets) > MAX_SOCKETS_PER_VISITOR:
            oldest = sockets.pop(0)
            await _close(oldest, CLOSE_REPLACED, "too many open chats for this visitor")

    def remove(self, key: VisitorKey, ws: web.WebSocketResponse) -> None:
        sockets = self._sockets.get(key)
        if sockets and ws in sockets:
            sockets.remove(ws)
            if not sockets:
                del self._sockets[key]

    def connected(self, key: VisitorKey) -> bool:
        return bool(self._sockets.get(key))

    def count(self, bot_id: str | None = None) -> int:
        return sum(len(s) for (bot, _), s in self._sockets.items() if bot_id is None or bot == bot_id)

    async def close_bot(self, bot_id: str, code: int, reason: str) -> None:
        """Close every socket of a bot (it is unmounted); the recent deliveries stay for the catch-up."""
        keys = [key for key in self._sockets if key[0] == bot_id]
        await asyncio.gather(*(_close(ws, code, reason) for key in keys for ws in list(self._sockets.get(key, []))))

    async def close_visitor(self, key: VisitorKey, code: int, reason: str) -> None:
        await asyncio.gather(*(_close(ws, code, reason) for ws in list(self._sockets.get(key, []))))
        self._recent.pop(key, None)

    async def close_all(self, code: int, reason: str) -> None:
        self.closing = True
        await asyncio.gather(*(_close(ws, code, reason) for sockets in list(self._sockets.values())
                               for ws in list(sockets)))

    # -- delivery -----------------------------------------------------------------------------
    async def push(self, key: VisitorKey, data: dict[str, Any], *, remember: bool = True) -> int:
        """Send ``data`` to every open socket of the visitor; returns how many took it."""
        if remember:
            self._remember(key, data)
        sent = 0
        for ws in list(self._sockets.get(key, [])):
            try:
                await asyncio.wait_for(ws.send_json(data), SEND_TIMEOUT)
                sent += 1
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                # A dead or stuck socket: drop it; the browser reconnects and catches up from history.
                log.debug("dropping a web chat socket: %s", type(exc).__name__)
                self.remove(key, ws)
                await _close(ws, CLOSE_GOING_AWAY, "send failed")
        return sent

    def _remember(self, key: VisitorKey, data: dict[str, Any]) -> None:
        now = self._clock()
        recent = self._recent.pop(key, None) or deque(maxlen=RECENT_PER_VISITOR)
        recent.append((now, data))
        self._recent[key] = recent
        # Drop visitors whose last delivery is old (the dict is ordered by last delivery), and
        # the least recent ones past the cap.
        while self._recent:
            oldest_key, oldest = next(iter(self._recent.items()))
            if len(self._recent) > RECENT_VISITORS or oldest[-1][0] < now - RECENT_SECONDS:
                del self._recent[oldest_key]
            else:
                break

    def recent(self, key: VisitorKey, conversation: str) -> list[dict[str, Any]]:
        """Messages delivered to the visitor in this conversation lately, oldest first."""
        horizon = self._clock() - RECENT_SECONDS
        return [data["message"] for at, data in self._recent.get(key, ())
                if at >= horizon and data.get("type") == "message"
                and data["message"].get("conversationId") == conversation]

    def forget(self, key: VisitorKey) -> None:
        self._recent.pop(key, None)


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()[:120]), SEND_TIMEOUT)
