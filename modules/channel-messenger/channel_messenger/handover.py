"""Thread control under conversation routing: who answers a conversation, the bot or another app, and
handing it over (docs/channels/messenger.md, "Handing a conversation to a person").

Meta replaced the Handover Protocol with conversation routing, which keeps its calls and events:
``pass`` and ``release`` work everywhere, ``take`` and ``request`` may be refused on a Page with a
default app, and handover events name the new owner (``new_owner_app_id``), which is believed once
the bot's own app id is known (takeover.py). A person answering from Meta's inbox pauses the bot for
the user: a thread owner with an end time (``until``), which ``get`` forgets once it has passed.

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

The map is kept in ``SHARDS`` values of ``bot.state`` (``threads/00`` … ``threads/3f``, by a
hash of the conversation), read once per bot, then held in memory. A change costs a dict update
in the webhook (no storage wait, whatever the size of the map); a flusher writes the shards that
changed, once a second, a few per transaction, off the request path. Explicit changes (a
handover through the API, a send refused with 2018300, an erase) are written at once. A crash
loses at most the last second of what was learnt from webhooks; Meta then refuses a send with
2018300, or sends standby again, and the channel learns it anew.

In cluster mode (``shared_lock`` set: other nodes change the same map) the flusher merges this node's
changes, key by key, into the stored shard under a cluster lock, so no node overwrites another's
change, then tells the other nodes (``publish``), which read that shard again before its next use
(``changed_elsewhere``); the webhook waits on storage only for a shard another node changed.

``Handover`` changes the owner through the Graph API: a ``handover`` payload from bot logic,
or ``POST .../handover`` of the admin API (pass, take, request or release thread control).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from botpress_py.sdk import BotContext, DeliveryError, IOEvent, LogThrottle, now_ms

from .graph_client import GraphApiError
from .incoming import CHANNEL, USER_EVENT_TYPES
from .owner_text import ANOTHER_APP, RELEASED, Owner, metadata_text
from .pages import PageBinding
from .validation import optional_id

HANDOVER_ACTIONS = ("pass", "take", "request", "release")
THREAD_CONTROL_TIMEOUT = 10.0


LEGACY_KEY = "threads"  # before the shards: one value with the whole map (moved to the shards when read)
SHARDS = 64
FLUSH_EVERY_SECONDS = 1.0
FLUSH_CHUNK = 16  # shards per transaction
# Cluster mode: a node that wrote a shard tells the others, which read it again before its next use; a
# shard nobody said changed is still read again once this old (a notification lost in a reconnect).
REFRESH_SECONDS = 30.0

log = logging.getLogger("botpress_py.module.channel-messenger.threads")


def _key(page_id: str, psid: str) -> str:
    return f"{page_id}/{psid}"


def _shard(key: str) -> int:
    return zlib.crc32(key.encode()) % SHARDS


def _apply(shard: dict[str, Owner], changes: dict[str, Owner | None]) -> None:
    """Apply a node's changes to a shard, key by key (None: the bot owns the thread again)."""
    for key, owner in changes.items():
        if owner is None:
            shard.pop(key, None)
        else:
            shard[key] = owner


def shard_key(number: int) -> str:
    return f"threads/{number:02x}"


def _valid(stored: Any) -> dict[str, Owner]:
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, dict) and v.get("owner")}


class ThreadOwners:
    """Thread ownership per (bot, Page, PSID), for the conversations handed over only (never every user)."""

    def __init__(self) -> None:
        self._bots: dict[str, list[dict[str, Owner]]] = {}  # bot id -> its shards
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: dict[str, tuple[BotContext, set[int]]] = {}  # bot id -> (context, shards to write)
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self._throttle = LogThrottle(60.0)
        self.clock = now_ms  # when human-takeover pauses end (takeover.py); a test may move it
        # Cluster mode: server.cluster_lock; shards' read times and this node's unwritten changes, key by key.
        self.shared_lock: Callable[[str], AbstractAsyncContextManager[Any]] | None = None
        self._read_at: dict[tuple[str, int], float] = {}
        # Cluster mode: tells the other nodes which shards of a bot this node wrote (after the write).
        self.publish: Callable[[str, list[int]], None] = lambda bot_id, numbers: None
        self._changes: dict[tuple[str, int], dict[str, Owner | None]] = {}

    async def close(self) -> None:
        """Write what is still waiting (the server stops after the module unmounts)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await self.flush()

    async def _threads(self, bot: BotContext) -> list[dict[str, Owner]]:
        shards = self._bots.get(bot.id)
        if shards is None:
            async with self._locks.setdefault(bot.id, asyncio.Lock()):
                shards = self._bots.get(bot.id)
                if shards is None:
                    shards = await self._load(bot)
                    self._bots[bot.id] = shards
                    now = time.monotonic()
                    self._read_at.update({(bot.id, n): now for n in range(SHARDS)})
        return shards

    def changed_elsewhere(self, bot_id: str, numbers: list[int]) -> None:
        """Another node wrote these shards: read them again before their next use."""
        for number in numbers:
            self._read_at.pop((bot_id, number), None)

    def _stale(self, bot_id: str, number: int) -> bool:
        return self.shared_lock is not None and \
            time.monotonic() - self._read_at.get((bot_id, number), 0.0) > REFRESH_SECONDS

    async def _fresh(self, bot: BotContext, key: str) -> list[dict[str, Owner]]:
        """The bot's shards, the one of ``key`` read again first when another node may have changed it."""
        shards = await self._threads(bot)
        number = _shard(key)
        if self._stale(bot.id, number):
            stored = _valid(await bot.state.get(shard_key(number)))
            _apply(stored, self._changes.get((bot.id, number), {}))  # not written yet: ours win
            shards[number] = stored
            self._read_at[(bot.id, number)] = time.monotonic()
        return shards

    async def _load(self, bot: BotContext) -> list[dict[str, Owner]]:
        shards = [_valid(await bot.state.get(shard_key(n))) for n in range(SHARDS)]
        legacy = _valid(await bot.state.get(LEGACY_KEY))
        if legacy:
            moved: set[int] = set()
            for key, owner in legacy.items():
                number = _shard(key)
                shards[number].setdefault(key, owner)
                moved.add(number)
            await bot.state.set_many({shard_key(n): dict(shards[n]) for n in sorted(moved)})
            await bot.state.delete(LEGACY_KEY)
        return shards

    async def get(self, bot: BotContext, page_id: str, psid: str) -> Owner | None:
        """Who owns the thread when it is not the bot; None while the bot answers it (a human-takeover pause
        that has ended is forgotten here)."""
        key = _key(page_id, psid)
        shards = await self._fresh(bot, key)
        owner = shards[_shard(key)].get(key)
        if owner is not None and self.ended(owner):
            self._put(bot, shards, key, None)
            self._flush_later()
            return None
        return owner

    def ended(self, owner: Owner) -> bool:
        """A human-takeover pause whose time is over (other owners never end by themselves)."""
        until = owner.get("until")
        return isinstance(until, int) and until <= self.clock()

    def known(self, bot: BotContext, page_id: str, psid: str) -> bool | None:
        """Whether a thread has an owner record (None: the bot's owners are not loaded yet); no storage wait."""
        shards = self._bots.get(bot.id)
        key = _key(page_id, psid)
        if shards is None or self._stale(bot.id, _shard(key)):
            return None
        return key in shards[_shard(key)]

    async def pause(self, bot: BotContext, page_id: str, psid: str, app_id: str, until: int, reason: str) -> bool:
        """A person answers the user: the bot is silent until ``until`` (ms), unless another app owns the thread
        outright (then that handover decides). Learnt from the webhook: written within a second. True when set."""
        key = _key(page_id, psid)
        shards = await self._fresh(bot, key)
        current = shards[_shard(key)].get(key)
        if current is not None and not current.get("until") and not self.ended(current):
            return False
        self._put(bot, shards, key, {"owner": app_id, "since": self.clock(), "until": until, "reason": reason})
        self._flush_later()
        return True

    def _put(self, bot: BotContext, shards: list[dict[str, Owner]], key: str, owner: Owner | None) -> bool:
        """Change one thread in memory and note its shard for the flusher; True when something changed."""
        number = _shard(key)
        if owner is None:
            if shards[number].pop(key, None) is None:
                return False
        else:
            shards[number][key] = owner
        self._dirty.setdefault(bot.id, (bot, set()))[1].add(number)
        if self.shared_lock is not None:
            self._changes.setdefault((bot.id, number), {})[key] = owner
        return True

    def _flush_later(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon(), name="messenger-threads-flush")

    async def _flush_soon(self) -> None:
        # Gather a second's worth of changes, then write each changed shard once.
        await asyncio.sleep(FLUSH_EVERY_SECONDS)
        await self.flush()

    async def flush(self) -> None:
        """Write every changed shard now (a few per transaction); a failed write is tried again later."""
        async with self._flushing:
            dirty, self._dirty = self._dirty, {}
            for bot_id, (bot, numbers) in dirty.items():
                shards = self._bots.get(bot_id)
                if shards is None:
                    continue
                if self.shared_lock is not None:
                    await self._merge(bot, shards, sorted(numbers))
                    continue
                ordered = sorted(numbers)
                for start in range(0, len(ordered), FLUSH_CHUNK):
                    chunk = ordered[start:start + FLUSH_CHUNK]
                    try:
                        # Copies: the storage may encode them on its own thread while the webhook changes the map.
                        await bot.state.set_many({shard_key(n): dict(shards[n]) for n in chunk})
                    except Exception as exc:
                        self._dirty.setdefault(bot_id, (bot, set()))[1].update(chunk)
                        self._throttle.log(log, logging.WARNING, ("flush", bot_id),
                                           "Thread owners of bot %s not stored yet (%s: %s); retried with the next "
                                           "change", bot_id, type(exc).__name__, exc)
                    await asyncio.sleep(0)

    async def _merge(self, bot: BotContext, shards: list[dict[str, Owner]], numbers: list[int]) -> None:
        """Cluster mode: apply this node's changes to each stored shard under a cluster lock (read, change the
        keys this node changed, write), so that changes other nodes made to the same shard are kept; then
        tell the other nodes which shards changed."""
        written: list[int] = []
        try:
            await self._merge_each(bot, shards, numbers, written)
        finally:
            if written:
                self.publish(bot.id, written)

    async def _merge_each(self, bot: BotContext, shards: list[dict[str, Owner]], numbers: list[int],
                          written: list[int]) -> None:
        assert self.shared_lock is not None
        for number in numbers:
            changes = self._changes.pop((bot.id, number), {})
            if not changes:
                continue
            try:
                async with self.shared_lock(f"threads/{bot.id}/{number:02x}"):
                    stored = _valid(await bot.state.get(shard_key(number)))
                    _apply(stored, changes)
                    await bot.state.set(shard_key(number), stored)
            except Exception as exc:
                pending = self._changes.setdefault((bot.id, number), {})
                self._changes[(bot.id, number)] = {**changes, **pending}
                self._dirty.setdefault(bot.id, (bot, set()))[1].add(number)
                self._throttle.log(log, logging.WARNING, ("flush", bot.id),
                                   "Thread owners of bot %s not stored yet (%s: %s); retried with the next change",
                                   bot.id, type(exc).__name__, exc)
                continue
            _apply(stored, self._changes.get((bot.id, number), {}))  # changed while writing
            shards[number] = stored
            self._read_at[(bot.id, number)] = time.monotonic()
            written.append(number)

    async def set_elsewhere(self, bot: BotContext, page_id: str, psid: str, owner: str, reason: str,
                            *, since: int | None = None) -> Owner:
        """Another app owns the thread (an explicit change: written at once)."""
        record: Owner = {"owner": owner or ANOTHER_APP, "since": since or now_ms(), "reason": reason}
        self._put(bot, await self._threads(bot), _key(page_id, psid), record)
        await self.flush()
        return record

    async def set_ours(self, bot: BotContext, page_id: str, psid: str) -> None:
        """The bot owns the thread again (an explicit change, or an erase: written at once)."""
        if self._put(bot, await self._threads(bot), _key(page_id, psid), None):
            await self.flush()

    def unchanged_by(self, bot: BotContext, page_id: str, events: list[IOEvent]) -> bool:
        """True when ``observe`` would change nothing (checked without awaiting: the webhook's hot path).

        That is: the bot's owners are loaded, no event is a handover or arrives as standby, and no
        event's user has a thread owned elsewhere.
        """
        shards = self._bots.get(bot.id)
        if shards is None:
            return False
        for event in events:
            if event.type == "handover" or event.flags.get("standby"):
                return False
            key = _key(page_id, event.target)
            if key in shards[_shard(key)] or self._stale(bot.id, _shard(key)):
                return False
        return True

    async def observe(self, bot: BotContext, page_id: str, events: list[IOEvent], logger: logging.Logger,
                      our_app: str = "") -> None:
        """Learn ownership changes from a webhook's events, in their order: O(1) each, written later.

        ``our_app``: the bot's own app id when known (conversation routing names the new owner of a thread
        in its handover events; without it, where the event arrives says it: ``messaging`` or ``standby``)."""
        shards = await self._threads(bot)  # awaits storage only the first time for a bot (on one node)
        changed = False
        for event in events:
            psid = event.target
            if not psid or event.flags.get("echo"):
                continue
            if self._stale(bot.id, _shard(_key(page_id, psid))):
                shards = await self._fresh(bot, _key(page_id, psid))
            standby = bool(event.flags.get("standby"))
            key = _key(page_id, psid)
            current = shards[_shard(key)].get(key)
            if event.type == "handover":
                changed |= self._handover(bot, shards, page_id, event, standby, logger, our_app)
            elif current is not None and current.get("until") and not standby:
                if self.ended(current):  # the human-takeover pause is over: the bot answers this user again
                    changed |= self._put(bot, shards, key, None)
            elif event.type in USER_EVENT_TYPES:
                if standby and (current is None or current.get("until")):  # (a pause gives way to the owner)
                    changed |= self._put(bot, shards, key, {"owner": ANOTHER_APP, "since": event.createdOn,
                                                            "reason": "user events arrive as standby"})
                    self._tell(logger, page_id, "standby", "Page %s: another app owns a conversation (standby); "
                               "the bot stays silent in it")
                elif not standby and current is not None and event.createdOn > int(current.get("since") or 0):
                    changed |= self._put(bot, shards, key, None)
                    self._tell(logger, page_id, "back", "Page %s: a conversation is back with the bot (messages "
                               "arrive again)")
        if changed:
            self._flush_later()

    def _tell(self, logger: logging.Logger, page_id: str, what: str, message: str) -> None:
        # Once a minute per Page and kind: a batch of standby events from new users is one line, not thousands.
        self._throttle.log(logger, logging.INFO, (page_id, what), message, page_id)

    def _handover(self, bot: BotContext, shards: list[dict[str, Owner]], page_id: str, event: IOEvent,
                  standby: bool, logger: logging.Logger, our_app: str = "") -> bool:
        action = event.payload.get("action")
        detail = event.payload.get("detail") if isinstance(event.payload.get("detail"), dict) else {}
        new_owner = optional_id(detail.get("new_owner_app_id")) or ANOTHER_APP
        key = _key(page_id, event.target)
        if our_app and new_owner != ANOTHER_APP and action in ("pass_thread_control", "take_thread_control"):
            # Conversation routing names the new owner: believe it over where the event arrived.
            standby = new_owner != our_app
            if action == "take_thread_control" and not standby:
                self._tell(logger, page_id, "passed", "Page %s: thread control is back with the bot; it answers again")
                return self._put(bot, shards, key, None)
        if action == "pass_thread_control":
            if standby:
                return self._put(bot, shards, key, {"owner": new_owner, "since": event.createdOn,
                                                    "reason": "control passed to another app"})
            self._tell(logger, page_id, "passed", "Page %s: thread control passed to the bot; it answers again")
            return self._put(bot, shards, key, None)
        if action == "take_thread_control" and not standby:
            self._tell(logger, page_id, "taken", "Page %s: another app took thread control of a conversation; the "
                       "bot stays silent")
            return self._put(bot, shards, key, {"owner": new_owner, "since": event.createdOn,
                                                "reason": "another app took thread control"})
        if action == "request_thread_control":
            requester = optional_id(detail.get("requested_owner_app_id")) or "?"
            self._throttle.log(logger, logging.INFO, (page_id, "request", requester),
                               "Page %s: app %s requests thread control of a conversation (pass it with the "
                               "handover API)", page_id, requester)
        return False


class Handover:
    """Thread control through the Graph API, and what the channel knows of each conversation's owner."""

    def __init__(self) -> None:
        self.owners = ThreadOwners()

    async def close(self) -> None:
        await self.owners.close()

    async def payload(self, bot: BotContext, binding: PageBinding, event: IOEvent) -> None:
        """A ``handover`` payload from bot logic: pass thread control (to the Page Inbox by default)."""
        target = event.payload.get("target")
        if target is not None and not (str(target) == "inbox" or str(target).isdigit()):
            raise DeliveryError(f"handover target {target!r} is neither \"inbox\" nor an app id", permanent=True)
        try:
            metadata = metadata_text(event.payload.get("metadata"))
        except ValueError as exc:
            raise DeliveryError(f"handover metadata: {exc}", permanent=True) from None
        try:
            await self.thread_control(bot, binding, event.target, "pass", target=target, metadata=metadata,
                                      reason="handover payload", record=False)
        except TimeoutError:
            raise DeliveryError("pass_thread_control: the Graph API did not answer in time") from None

    async def thread_control(self, bot: BotContext, binding: PageBinding, psid: str, action: str, *,
                             target: Any = None, metadata: str | None = None, reason: str,
                             record: bool = True) -> Owner | None:
        """Pass, take, request or release thread control; returns the owner as the channel now knows it.

        Raises GraphApiError (after marking the thread when Meta says another app owns it) or TimeoutError.
        """
        owners = self.owners
        app_id = binding.settings.handover_app_id(target) if action == "pass" else None
        try:
            await asyncio.wait_for(binding.graph.thread_control(action, psid, target_app_id=app_id,
                                                                metadata=metadata), THREAD_CONTROL_TIMEOUT)
        except GraphApiError as exc:
            if exc.thread_owned_elsewhere and action in ("pass", "release") \
                    and await owners.get(bot, binding.page_id, psid) is None:
                await owners.set_elsewhere(bot, binding.page_id, psid, ANOTHER_APP,
                                           f"{action} thread control refused: another app owns the thread")
            raise
        owner: Owner | None
        if action == "pass":
            owner = await owners.set_elsewhere(bot, binding.page_id, psid, str(app_id), f"passed by the bot ({reason})")
        elif action == "release":
            owner = await owners.set_elsewhere(bot, binding.page_id, psid, RELEASED, f"released by the bot ({reason})")
        elif action == "take":
            await owners.set_ours(bot, binding.page_id, psid)
            owner = None
        else:  # request: the owner decides, and passes control back with a webhook event
            owner = await owners.get(bot, binding.page_id, psid)
        bot.logger.info("Page %s: %s thread control of a conversation (%s)", binding.page_id, action, reason)
        if record:
            await self._record(bot, binding, psid, action, app_id, metadata, reason)
        return owner

    @staticmethod
    async def _record(bot: BotContext, binding: PageBinding, psid: str, action: str, app_id: str | None,
                      metadata: str | None, reason: str) -> None:
        """The change in the conversation's history, as a silent incoming event (bot logic never sees it)."""
        detail: dict[str, Any] = {"by": reason}
        if app_id:
            detail["new_owner_app_id"] = app_id
        if metadata is not None:
            detail["metadata"] = metadata
        note = IOEvent(type="handover", channel=CHANNEL, direction="incoming", botId=bot.id, target=psid,
                       threadId=binding.page_id, payload={"type": "handover", "action": f"{action}_thread_control",
                                                          "detail": detail},
                       preview=f"[{action}_thread_control]", flags={"silent": True, "handoverApi": True})
        note.dedupeKey = f"handover:{note.id}"
        await bot.receive([note])

    async def send_refused(self, binding: PageBinding, psid: str) -> None:
        """Meta refused a send with 2018300: another app owns the conversation; the bot stays silent in it."""
        await self.owners.set_elsewhere(binding.bot, binding.page_id, psid, ANOTHER_APP,
                                        "Messenger refused a send: another app owns the thread")
        binding.bot.logger.info("Page %s: another app owns a conversation (send refused with 2018300); the bot "
                                "stays silent in it until control comes back", binding.page_id)
