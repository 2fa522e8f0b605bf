"""Meta's messaging window: when each user last wrote to the Page.

A Page may message a user freely (``messaging_type`` RESPONSE or UPDATE) for 24 hours after
the user's last message; later only with a message tag (``MESSAGE_TAG``), and the
``HUMAN_AGENT`` tag only within 7 days. The time of each user's last message is kept in
``bot.state`` (``lastIncoming/<page>/<psid>``): in memory at once, written to storage in the
background at most once a minute per user, so the webhook's answer never waits for it. The
writes are batched: one flusher task writes what changed in the last second, 50 users per
transaction, instead of a task, a read and a transaction per new user (which cost a busy Page
more than storing the events themselves). A lost write only makes the window look
shorter (the safe side).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from botpress_py.sdk import BotContext, IOEvent, now_ms

from .incoming import USER_EVENT_TYPES

STANDARD_WINDOW_MS = 24 * 3600 * 1000
HUMAN_AGENT_WINDOW_MS = 7 * 24 * 3600 * 1000
WRITE_EVERY_MS = 60_000
_MEMORY_LIMIT = 10_000

log = logging.getLogger("botpress_py.module.channel-messenger.window")

# Message tags a notify may use outside the 24 h window (Meta's current list).
MESSAGE_TAGS = ("HUMAN_AGENT", "ACCOUNT_UPDATE", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE")


def _key(page_id: str, psid: str) -> str:
    return f"lastIncoming/{page_id}/{psid}"


FLUSH_EVERY_SECONDS = 1.0
FLUSH_CHUNK = 50


class MessagingWindow:
    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], int] = {}  # newest user event time known
        self._written: dict[tuple[str, str, str], int] = {}  # what storage holds (as far as we know)
        # Waiting for the flusher: per bot, its context and {state key: time}.
        self._dirty: dict[str, tuple[BotContext, dict[str, int]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()  # an erase waits for a write in flight, then deletes

    async def close(self) -> None:
        """Write what is still waiting (the server stops after the module unmounts)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await self.flush()

    def note(self, bot: BotContext, page_id: str, events: list[IOEvent]) -> None:
        """Remember the user events of a webhook (standby included: the user wrote to the Page)."""
        for event in events:
            if event.type not in USER_EVENT_TYPES or event.flags.get("echo") or not event.target:
                continue
            key = (bot.id, page_id, event.target)
            at = min(int(event.createdOn), now_ms())  # a clock ahead of ours must not stretch the window
            if at <= self._seen.get(key, 0):
                continue
            if key not in self._seen and len(self._seen) >= _MEMORY_LIMIT:
                self._seen.clear()
                self._written.clear()
            self._seen[key] = at
            if at - self._written.get(key, 0) >= WRITE_EVERY_MS:
                self._written[key] = at
                self._dirty.setdefault(bot.id, (bot, {}))[1][_key(page_id, event.target)] = at
                if self._flusher is None or self._flusher.done():
                    self._flusher = asyncio.create_task(self._flush_soon(), name="messenger-window-flush")

    async def _flush_soon(self) -> None:
        # Gather a second's worth of users, then write them in a few transactions.
        await asyncio.sleep(FLUSH_EVERY_SECONDS)
        await self.flush()

    async def flush(self) -> None:
        """Write every waiting time now (one ``set_many`` per bot); failures only shorten the window."""
        async with self._flushing:
            dirty, self._dirty = self._dirty, {}
            for bot, items in dirty.values():
                keys = list(items)
                # Small transactions, with a turn of the event loop between them: a busy Page's
                # thousand new users must not hold the storage (and every webhook) for long.
                for start in range(0, len(keys), FLUSH_CHUNK):
                    chunk = {key: items[key] for key in keys[start:start + FLUSH_CHUNK]}
                    try:
                        await bot.state.set_many(chunk)
                    except Exception:
                        log.debug("last message times of %d user(s) of bot %s not stored", len(chunk), bot.id,
                                  exc_info=True)
                    await asyncio.sleep(0)

    async def forget(self, bot: BotContext, page_id: str, psid: str) -> None:
        """Drop what is known of the user (data erase)."""
        self._seen.pop((bot.id, page_id, psid), None)
        self._written.pop((bot.id, page_id, psid), None)
        self._dirty.get(bot.id, (bot, {}))[1].pop(_key(page_id, psid), None)
        async with self._flushing:  # a write of this user already under way must not outlive the erase
            await bot.state.delete(_key(page_id, psid))

    def seen(self, bot_id: str, page_id: str, psid: str) -> int | None:
        """When the user last wrote, as far as this process saw (ms; no storage read: for every send)."""
        return self._seen.get((bot_id, page_id, psid))

    async def last_incoming(self, bot: BotContext, page_id: str, psid: str) -> int | None:
        """When the user last wrote to the Page (ms), or None when never seen."""
        stored: Any = None
        with contextlib.suppress(Exception):
            stored = await bot.state.get(_key(page_id, psid))
        known = [v for v in (self._seen.get((bot.id, page_id, psid)), stored) if isinstance(v, int)]
        return max(known) if known else None


def messaging_type_for(last_incoming: int | None, tag: str | None, now: int | None = None) -> tuple[str, str | None]:
    """("UPDATE" | "MESSAGE_TAG", None) for a proactive message, or ("", why it cannot be sent)."""
    now = now if now is not None else now_ms()
    age = None if last_incoming is None else now - last_incoming
    if age is not None and age <= STANDARD_WINDOW_MS:
        return "UPDATE", None
    since = "the user never wrote to the Page" if age is None else \
        f"the user's last message is {age // 3_600_000} h old"
    if not tag:
        return "", (f"outside Meta's 24-hour messaging window ({since}): give a \"tag\" "
                    f"(one of {', '.join(MESSAGE_TAGS)}) that fits the message")
    if tag == "HUMAN_AGENT" and (age is None or age > HUMAN_AGENT_WINDOW_MS):
        return "", f"the HUMAN_AGENT tag is allowed only within 7 days of the user's last message ({since})"
    return "MESSAGE_TAG", None
