"""The objects a module's hooks receive: one per module per bot, and one per module for the server.

Modules see only these methods (re-exported by ``botpress_py.sdk``); the core objects
behind them stay private, so the core can change without breaking modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .events import IOEvent
from .routing import ModuleRouter
from .secretfiles import load_or_create_secret

if TYPE_CHECKING:
    from aiohttp import web

ModuleState = Literal["on", "off", "error"]
BotState = Literal["mounted", "disabled", "error"]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One config problem: the file, the JSON pointer inside it, what is wrong and how to fix it."""

    file: str
    pointer: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}#{self.pointer}" if self.pointer else self.file
        text = f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class KeyValueStore(Protocol):
    """Durable JSON values namespaced to one module (and one bot for bot contexts)."""

    async def get(self, key: str, default: Any = None) -> Any: ...

    async def set(self, key: str, value: Any) -> None: ...

    async def set_many(self, items: dict[str, Any]) -> None:
        """Set several keys in one transaction: cheaper than one ``set`` each, and all or none."""
        ...

    async def delete(self, key: str) -> None: ...


class UserStore(Protocol):
    """Users of one bot: stored profiles and contacts linking one person's ids across bots."""

    async def get(self, user_id: str, channel: str) -> dict[str, Any] | None:
        """``{"id", "channel", "botId", "profile", "createdOn", "updatedOn", "contactId", "linked"}`` or None."""
        ...

    async def save(self, user_id: str, channel: str, profile: dict[str, Any] | None) -> None:
        """Create the user, or replace its profile (None keeps the stored one)."""
        ...

    async def link(self, user_id: str, channel: str, others: list[tuple[str, str, str]]) -> str:
        """Link this user with (bot id, channel, user id) of other bots as one contact; returns its id."""
        ...

    async def erase(self, user_id: str, channel: str) -> dict[str, int]:
        """Delete everything stored about the user in this bot (profile, history, queues, contact link)."""
        ...

    async def history(self, user_id: str, channel: str, *, thread_id: str | None = None, after: int | None = None,
                      before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The user's message history, oldest first: event dicts plus ``seq`` and ``channelMessageId``.

        ``seq`` only grows: pass the last one seen as ``after`` to catch up, or the first one
        shown as ``before`` to page back. ``limit`` is 1 to 500.
        """
        ...


class MediaStore(Protocol):
    """Files of one bot's users (``bot.media``), kept in the server's storage and served at a stable URL."""

    max_bytes: int  # storage.media.maxBytes: put refuses more

    def new_id(self) -> str:
        """A fresh media id (128 random bits): reserve it before the file is stored, to hand out its URL."""
        ...

    def url(self, media_id: str) -> str:
        """``<external URL>/api/v1/bots/<bot>/media/<id>``: the file's stable URL."""
        ...

    async def put(self, data: bytes, *, content_type: str, user_id: str, channel: str, media_id: str | None = None,
                  filename: str | None = None) -> dict[str, Any]:
        """Store a file; its info: ``id``, ``url``, ``contentType``, ``size``, ``channel``, ``userId``,
        ``filename``, ``createdOn``."""
        ...

    async def info(self, media_id: str) -> dict[str, Any] | None: ...

    async def read(self, media_id: str) -> tuple[dict[str, Any], bytes] | None: ...

    async def delete(self, media_id: str) -> bool: ...


class NoMedia:
    """``bot.media`` where no storage runs (a command outside the server, a hand-made context)."""

    max_bytes = 0

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(16)

    def url(self, media_id: str) -> str:
        raise RuntimeError("no media storage here (a command outside the server)")

    async def put(self, data: bytes, *, content_type: str, user_id: str, channel: str, media_id: str | None = None,
                  filename: str | None = None) -> dict[str, Any]:
        raise RuntimeError("no media storage here (a command outside the server)")

    async def info(self, media_id: str) -> dict[str, Any] | None:
        return None

    async def read(self, media_id: str) -> tuple[dict[str, Any], bytes] | None:
        return None

    async def delete(self, media_id: str) -> bool:
        return False


class EventSink(Protocol):
    """Where a bot's events go: the event pipeline (stores them, then processes or delivers them)."""

    async def receive(self, events: list[IOEvent]) -> list[IOEvent]: ...

    async def send(self, events: list[IOEvent]) -> None: ...


class BotHost(EventSink, Protocol):
    """What the core provides behind a BotContext: the pipeline for events (called directly, no
    hop through the registry), the registry for module statuses, storage for state and users."""

    def set_module_status(self, bot_id: str, module: str, state: ModuleState, reason: str | None) -> None: ...

    def kv(self, namespace: str) -> KeyValueStore: ...

    def users(self, bot_id: str) -> UserStore: ...


class BotContext:
    """A bot as seen by one module: its config for that module, its router, its state.

    Created afresh on every mount (and for each ``on_bot_disabled``), so ``config`` is never stale.
    """

    def __init__(
        self,
        *,
        host: BotHost,
        bot_id: str,
        module: str,
        bot_config: dict[str, Any],
        config: dict[str, Any],
        data_dir: Path,
        external_url: str,
        router: ModuleRouter,
        config_sources: Mapping[str, str] | None = None,
    ) -> None:
        self._host = host
        self.id = bot_id
        self.module = module
        self.bot_config = bot_config
        self.name: str = bot_config.get("name") or bot_id
        self.config = config
        self.data_dir = data_dir
        self.external_url = external_url
        self.router = router
        # Where each top-level key of ``config`` came from: "schema default", a file path, or
        # "env BP_MODULE_…", so a module's status can say which file to edit.
        self.config_sources: Mapping[str, str] = MappingProxyType(dict(config_sources or {}))
        self.logger = logging.getLogger(f"botpress_py.bot.{bot_id}.{module}")
        self.state: KeyValueStore = host.kv(f"{module}:bot:{bot_id}")
        self.users: UserStore = host.users(bot_id)
        # Hosts made by hand (a test's, a command's) may have no media storage: then nothing is kept.
        media = getattr(host, "media", None)
        self.media: MediaStore = media(bot_id) if media is not None else NoMedia()

    def __repr__(self) -> str:
        return f"<BotContext bot={self.id!r} module={self.module!r}>"

    def set_status(self, state: ModuleState, reason: str | None = None) -> None:
        """Show this module's state for the bot in ``GET /status`` (reason: why off/error)."""
        self._host.set_module_status(self.id, self.module, state, reason)

    async def receive(self, events: list[IOEvent]) -> list[IOEvent]:
        """Hand incoming events to the pipeline; returns once they are stored.

        Returns the events that were new: duplicates (same ``dedupeKey`` on the same
        channel and bot) are acknowledged but not processed again.
        """
        for event in events:
            event.botId = self.id
            event.direction = "incoming"
        return await self._host.receive(events)

    async def reply(self, event: IOEvent, payloads: list[dict[str, Any]] | dict[str, Any]) -> None:
        """Answer an incoming event with standard payloads, in order, on its channel; the event is
        then marked handled (``event.handled``), so fallback logic stays quiet."""
        if isinstance(payloads, dict):
            payloads = [payloads]
        await self._host.send([event.reply_event(p) for p in payloads])
        event.mark_handled(self.module)

    async def send(self, events: list[IOEvent]) -> None:
        """Send outgoing events that answer nothing (proactive messages)."""
        for event in events:
            event.botId = self.id
            event.direction = "outgoing"
        await self._host.send(events)


class ServerContext:
    """The server as seen by one module: global router (``/api/v1/bots/___/mod/<module>``), site
    router (paths outside ``/api``), bots."""

    def __init__(
        self,
        *,
        module: str,
        config: dict[str, Any],
        router: ModuleRouter,
        external_url: str,
        data_dir: Path,
        state: KeyValueStore,
        bots: dict[str, BotContext],
        admin_check: Any,
        site_router: ModuleRouter | None = None,
        bot_state: Any = None,
        options: Mapping[str, Any] | None = None,
        request_stop: Callable[[str, int], None] | None = None,
        locks: Callable[[str], AbstractAsyncContextManager[Any]] | None = None,
        clustered: bool = False,
    ) -> None:
        self.clustered = clustered  # one node of a cluster (docs/cluster.md)
        self.module = module
        self._locks = locks
        self._local_locks: dict[str, asyncio.Lock] = {}
        self.config = config
        self.router = router
        # Absolute site paths the module claims (``/s/{botId}``); core paths are refused.
        self.site_router = site_router if site_router is not None else ModuleRouter()
        self._bot_state = bot_state
        # The ``botpress-py start`` options (read-only; empty when the server was not started by the CLI).
        self.options: Mapping[str, Any] = MappingProxyType(dict(options or {}))
        self._request_stop = request_stop
        self.external_url = external_url
        self.data_dir = data_dir
        self.state = state
        self._bots = bots
        self._admin_check = admin_check
        self.logger = logging.getLogger(f"botpress_py.module.{module}")

    def bots(self) -> dict[str, BotContext]:
        """This module's contexts of the bots mounted right now, by bot id (a snapshot copy)."""
        return dict(self._bots)

    def get_bot(self, bot_id: str) -> BotContext | None:
        return self._bots.get(bot_id)

    def bot_state(self, bot_id: str) -> BotState | None:
        """``"mounted"``, ``"disabled"`` or ``"error"`` as ``GET /status`` shows the bot, or None
        when no such bot exists: lets a module tell an unknown bot from one that is off."""
        return self._bot_state(bot_id) if self._bot_state is not None else None

    def secret(self, name: str) -> bytes:
        """A random key of this module's, generated on first use and kept in
        ``data/secrets/<module>.<name>.key`` (permissions 0600), so it survives restarts."""
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"secret name {name!r}: use letters, digits, '-' and '_'")
        return load_or_create_secret(self.data_dir / "secrets" / f"{self.module}.{name}.key")

    def request_stop(self, reason: str, status: int = 0) -> None:
        """Ask the server to stop cleanly (as Ctrl+C would), e.g. when a terminal chat the module runs
        ends; ``reason`` is logged. ``status`` is the exit status of ``botpress-py start`` (0 to 255; not 0
        when the module refuses to go on, so that a script sees the failure). A server not run by the
        CLI only records the request; the first request is the one that counts."""
        if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 255:
            raise ValueError(f"request_stop: status must be an integer from 0 to 255, not {status!r}")
        if self._request_stop is not None:
            self._request_stop(f"module {self.module}: {reason}", status)

    @contextlib.asynccontextmanager
    async def cluster_lock(self, name: str) -> AsyncIterator[None]:
        """Hold a lock named ``name`` (this module's own name space) across every node of a cluster while
        the body runs; on a single server, a lock of this process. For work that must happen once, not once
        per node (a profile push at mount): take the lock, check what storage says was done, do the rest,
        record it, all in the body. It waits while another node holds the lock."""
        if self._locks is None:
            lock = self._local_locks.setdefault(name, asyncio.Lock())
            async with lock:
                yield
            return
        async with self._locks(f"{self.module}:{name}"):
            yield

    def require_admin(self, request: web.Request) -> None:
        """Raise 401/403 unless the request carries the admin bearer token."""
        self._admin_check(request)
