"""The bot gate: which bots take events now, and what of a mounted bot an event in hand borrows.

One owner for "may this bot's events run?": the bot registry opens a bot's gate once the bot is
mounted and closes it before unmounting it (waiting, up to a deadline, for the events in hand to
finish, so a module never loses its state under a running handler). The event pipeline reads
it: whether a bot takes events, and, for one event at a time, the bot's mounted parts (its
module contexts, config and transformers). Registry and pipeline never see each other; the
pipeline learns that a bot opened through ``GateListener`` (its parked events can flow again).
See docs/architecture.md, "Parts".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .context import BotContext
    from .transformers import BotTransformers


class ShuttingDown(Exception):
    """The server is stopping; the event in hand stays stored and replays at the next start."""


@dataclass(frozen=True, slots=True)
class MountedBot:
    """What handling an event needs of a mounted bot; a new one is made at every mount."""

    id: str
    config: Mapping[str, Any]
    # module name -> this module's context of the bot, for every module on for the bot
    contexts: Mapping[str, BotContext]
    transformers: BotTransformers | None = None


class GateListener(Protocol):
    """Told when a bot's gate opens (the bot was mounted)."""

    def bot_opened(self, bot_id: str) -> None: ...


@dataclass(slots=True)
class _Entry:
    mounted: MountedBot | None = None  # set from open() until release(), after the modules unmounted
    taking: asyncio.Event = field(default_factory=asyncio.Event)  # set while new events may start
    in_flight: int = 0
    # Made by close() only when it has events in flight to wait for: one Event (and its deque) less
    # per known bot, 10,000 bots: 7 MB.
    idle: asyncio.Event | None = None


class BotGate:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._listeners: list[GateListener] = []
        self._shut = asyncio.Event()

    def add_listener(self, listener: GateListener) -> None:
        self._listeners.append(listener)

    # -- driven by the registry ----------------------------------------------------------------
    def know(self, bot_id: str) -> None:
        """The bot exists: its events wait for it to be mounted instead of failing."""
        self._entries.setdefault(bot_id, _Entry())

    def forget(self, bot_id: str) -> None:
        """The bot's folder is gone (after ``close``): events waiting for it give up."""
        entry = self._entries.pop(bot_id, None)
        if entry is not None:
            entry.taking.set()  # wakes the waiters, who then find no bot

    def open(self, bot: MountedBot) -> None:
        entry = self._entries.setdefault(bot.id, _Entry())
        entry.mounted = bot
        entry.taking.set()
        for listener in self._listeners:
            listener.bot_opened(bot.id)

    async def close(self, bot_id: str, drain_timeout: float) -> None:
        """Start no new event of the bot, then let those in hand finish (up to ``drain_timeout``)."""
        entry = self._entries.get(bot_id)
        if entry is None or entry.mounted is None:
            return
        entry.taking.clear()
        if entry.in_flight:
            if entry.idle is None or entry.idle.is_set():
                entry.idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.idle.wait(), drain_timeout)

    def release(self, bot_id: str) -> None:
        """The bot's modules have unmounted (after ``close``): its parts are gone."""
        entry = self._entries.get(bot_id)
        if entry is not None and not entry.taking.is_set():
            entry.mounted = None

    # -- read by the pipeline --------------------------------------------------------------------
    def knows(self, bot_id: str) -> bool:
        return bot_id in self._entries

    def takes_events(self, bot_id: str) -> bool:
        entry = self._entries.get(bot_id)
        return entry is not None and entry.mounted is not None and entry.taking.is_set()

    def closed_bots(self) -> list[str]:
        """The bots known here that do not take events now (disabled, in error, being remounted)."""
        return [bot_id for bot_id in self._entries if not self.takes_events(bot_id)]

    def current(self, bot_id: str) -> MountedBot | None:
        """The bot as mounted, also while it is being unmounted (its handlers and unmount hooks may
        still send): until ``release``."""
        entry = self._entries.get(bot_id)
        return entry.mounted if entry is not None else None

    @property
    def shut_down(self) -> bool:
        return self._shut.is_set()

    def shut(self) -> None:
        """The server stops: nobody waits for a bot any more (their events stay stored)."""
        self._shut.set()

    @contextlib.asynccontextmanager
    async def using(self, bot_id: str) -> AsyncIterator[MountedBot]:
        """Borrow a mounted bot while handling one event; waits while it is not mounted.

        Raises KeyError for a bot nobody knows, and ShuttingDown instead of waiting once the
        server stops: the event then stays stored.
        """
        while True:
            if self._shut.is_set():
                raise ShuttingDown(bot_id)
            entry = self._entries.get(bot_id)
            if entry is None:
                raise KeyError(bot_id)
            if entry.mounted is not None and entry.taking.is_set():
                break
            opened = asyncio.ensure_future(entry.taking.wait())
            shut = asyncio.ensure_future(self._shut.wait())
            try:
                await asyncio.wait([opened, shut], return_when=asyncio.FIRST_COMPLETED)
            finally:
                opened.cancel()
                shut.cancel()
        bot = entry.mounted
        entry.in_flight += 1
        try:
            yield bot
        finally:
            entry.in_flight -= 1
            if entry.in_flight == 0 and entry.idle is not None:
                entry.idle.set()
