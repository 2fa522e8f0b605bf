"""A live feed of the events the pipeline handles, for the admin page's live view.

The pipeline publishes each event as it happens (``received``: an incoming event is stored;
``sent``: an outgoing one is delivered; ``failed``: either one is given up on). Publishing
costs one check when nobody listens. A listener gets its own bounded queue: when it falls
behind (a slow browser), new items are dropped for it and counted, and it is told how many
it missed; the pipeline never waits for a listener.

What a listener sees is a summary, never the payload: ids, channel, type and a short preview
of the text. A masked event (data protection: ``flags["mask"]``) shows ``"***"`` in place of
its text, whatever the event holds in memory at that moment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

from .events import MASK, IOEvent

QUEUE_SIZE = 1000  # items a listener may be behind before new ones are dropped for it
MAX_LISTENERS = 20  # live views open at once, so that publishing stays cheap
PREVIEW_CHARS = 200


def summary(event: IOEvent, stage: str) -> dict[str, Any]:
    masked = bool(event.flags.get("mask"))
    preview = (MASK if event.preview else "") if masked else event.preview[:PREVIEW_CHARS]
    return {"stage": stage, "id": event.id, "botId": event.botId, "channel": event.channel,
            "direction": event.direction, "type": event.type, "userId": event.target, "threadId": event.threadId,
            "preview": preview, "masked": masked, "createdOn": event.createdOn}


class FeedListener:
    """One subscriber: a bot filter (None: every bot), its queue and the items it missed."""

    def __init__(self, bot_id: str | None) -> None:
        self.bot_id = bot_id
        self.queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0

    def offer(self, item: str) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped


class TooManyListeners(Exception):
    pass


class EventFeed:
    def __init__(self, max_listeners: int = MAX_LISTENERS) -> None:
        self._listeners: set[FeedListener] = set()
        self.max_listeners = max_listeners

    def __len__(self) -> int:
        return len(self._listeners)

    def publish(self, event: IOEvent, stage: str) -> None:
        if not self._listeners:
            return
        item: str | None = None
        for listener in self._listeners:
            if listener.bot_id is None or listener.bot_id == event.botId:
                if item is None:  # encoded once, for every listener that wants it
                    item = json.dumps({"type": "event", "event": summary(event, stage)})
                listener.offer(item)

    def publish_many(self, events: list[IOEvent], stage: str) -> None:
        if self._listeners:
            for event in events:
                self.publish(event, stage)

    def subscribe(self, bot_id: str | None) -> FeedListener:
        if len(self._listeners) >= self.max_listeners:
            raise TooManyListeners(f"{self.max_listeners} live views are open already")
        listener = FeedListener(bot_id)
        self._listeners.add(listener)
        return listener

    def unsubscribe(self, listener: FeedListener) -> None:
        self._listeners.discard(listener)

    def __iter__(self) -> Iterator[FeedListener]:
        return iter(set(self._listeners))
