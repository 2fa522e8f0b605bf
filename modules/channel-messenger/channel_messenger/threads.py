"""Who answers a conversation: the bot, or another app after a handover (conversation routing).

Messenger gives each conversation (Page, user) one *thread owner*. While another app owns it
(Meta's Page Inbox, where the Page's people answer, or a human-agent tool), the bot receives
the user's messages as ``standby`` and must stay silent. The channel keeps what it knows in
``bot.state`` (only the threads owned elsewhere) and learns it from:

- its own handover calls (pass / release: owned elsewhere; take: ours again);
- webhook handover events: ``pass_thread_control`` in ``messaging`` means control was passed
  to us, ``take_thread_control`` in ``messaging`` means another app took it from us;
- user events: one arriving as ``standby`` means another app owns the thread, one arriving
  in ``messaging`` (after the handover) means control came back to us;
- a send refused with 2018300 (another app owns the thread).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from botpress_py.sdk import BotContext, IOEvent, now_ms

ANOTHER_APP = "another app"
RELEASED = "released"
USER_EVENT_TYPES = frozenset({"text", "quick_reply", "postback", "image", "audio", "video", "file", "sticker",
                              "fallback", "location", "attachment", "referral"})

Owner = dict[str, Any]  # {"owner": app id | "another app" | "released", "since": ms, "reason": str}


STATE_KEY = "threads"  # bot.state: {"<page>/<psid>": Owner} of the threads owned elsewhere (few)


def _key(page_id: str, psid: str) -> str:
    return f"{page_id}/{psid}"


def describe(owner: Owner) -> str:
    """A sentence for logs and failed-send reasons (no user data)."""
    who = owner.get("owner") or ANOTHER_APP
    if who == RELEASED:
        return "the bot released the conversation (thread control) and has not got it back"
    name = "the Page Inbox" if who == "263902037430900" else who if who == ANOTHER_APP else f"app {who}"
    return f"the conversation is handed over to {name} ({owner.get('reason') or 'handover'})"


class ThreadOwners:
    """Thread ownership per (bot, Page, PSID): one ``bot.state`` value per bot, read once, then in memory.

    Only conversations handed over are kept (a handful), so the webhook path never waits for
    storage to know that the bot owns a conversation.
    """

    def __init__(self) -> None:
        self._bots: dict[str, dict[str, Owner]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def clear(self) -> None:
        self._bots.clear()
        self._locks.clear()

    async def _threads(self, bot: BotContext) -> dict[str, Owner]:
        threads = self._bots.get(bot.id)
        if threads is None:
            async with self._locks.setdefault(bot.id, asyncio.Lock()):
                threads = self._bots.get(bot.id)
                if threads is None:
                    stored = await bot.state.get(STATE_KEY)
                    threads = {k: v for k, v in (stored or {}).items() if isinstance(v, dict) and v.get("owner")} \
                        if isinstance(stored, dict) else {}
                    self._bots[bot.id] = threads
        return threads

    async def get(self, bot: BotContext, page_id: str, psid: str) -> Owner | None:
        """Who owns the thread when it is not the bot; None while the bot answers it."""
        return (await self._threads(bot)).get(_key(page_id, psid))

    async def set_elsewhere(self, bot: BotContext, page_id: str, psid: str, owner: str, reason: str,
                            *, since: int | None = None) -> Owner:
        record: Owner = {"owner": owner or ANOTHER_APP, "since": since or now_ms(), "reason": reason}
        threads = await self._threads(bot)
        threads[_key(page_id, psid)] = record
        await bot.state.set(STATE_KEY, dict(threads))
        return record

    async def set_ours(self, bot: BotContext, page_id: str, psid: str) -> None:
        threads = await self._threads(bot)
        if threads.pop(_key(page_id, psid), None) is not None:
            await bot.state.set(STATE_KEY, dict(threads))

    def unchanged_by(self, bot: BotContext, page_id: str, events: list[IOEvent]) -> bool:
        """True when ``observe`` would change nothing (checked without awaiting: the webhook's hot path).

        That is: the bot's owners are loaded, no event is a handover or arrives as standby, and no
        event's user has a thread owned elsewhere.
        """
        threads = self._bots.get(bot.id)
        if threads is None:
            return False
        for event in events:
            if event.type == "handover" or event.flags.get("standby"):
                return False
            if threads and _key(page_id, event.target) in threads:
                return False
        return True

    async def observe(self, bot: BotContext, page_id: str, events: list[IOEvent], logger: logging.Logger) -> None:
        """Learn ownership changes from a webhook's events, in their order."""
        for event in events:
            psid = event.target
            if not psid or event.flags.get("echo"):
                continue
            standby = bool(event.flags.get("standby"))
            if event.type == "handover":
                await self._handover(bot, page_id, event, standby, logger)
            elif event.type in USER_EVENT_TYPES:
                current = await self.get(bot, page_id, psid)
                if standby and current is None:
                    await self.set_elsewhere(bot, page_id, psid, ANOTHER_APP, "user events arrive as standby",
                                             since=event.createdOn)
                    logger.info("Page %s: another app owns a conversation (standby); the bot stays silent in it",
                                page_id)
                elif not standby and current is not None and event.createdOn > int(current.get("since") or 0):
                    await self.set_ours(bot, page_id, psid)
                    logger.info("Page %s: a conversation is back with the bot (messages arrive again)", page_id)

    async def _handover(self, bot: BotContext, page_id: str, event: IOEvent, standby: bool,
                        logger: logging.Logger) -> None:
        action = event.payload.get("action")
        detail = event.payload.get("detail") if isinstance(event.payload.get("detail"), dict) else {}
        new_owner = str(detail.get("new_owner_app_id") or "")
        psid = event.target
        if action == "pass_thread_control":
            if standby:
                await self.set_elsewhere(bot, page_id, psid, new_owner or ANOTHER_APP,
                                         "control passed to another app", since=event.createdOn)
            else:
                await self.set_ours(bot, page_id, psid)
                logger.info("Page %s: thread control passed to the bot; it answers again", page_id)
        elif action == "take_thread_control" and not standby:
            await self.set_elsewhere(bot, page_id, psid, new_owner or ANOTHER_APP,
                                     "another app took thread control", since=event.createdOn)
            logger.info("Page %s: another app took thread control of a conversation; the bot stays silent",
                        page_id)
        elif action == "request_thread_control":
            logger.info("Page %s: app %s requests thread control of a conversation (pass it with the handover "
                        "API)", page_id, detail.get("requested_owner_app_id") or "?")
