"""Bot registry: discover, mount, unmount, enable, disable and reload bots at runtime.

``bot.config.json`` is the one source of truth for ``disabled``; the admin API and the CLI
write it, and the file watcher reacts to edits. A reload first checks every file of the bot;
if any is broken, the bot keeps running on its last good state and the problem is reported.
The registry opens a bot's gate (gate.py) once it is mounted and closes it before unmounting;
it never talks to the event pipeline (docs/architecture.md, "Parts").
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .config.module_config import ModuleConfigResolver
from .context import BotContext, ConfigProblem, EventSink, KeyValueStore, MediaStore, ModuleState, UserStore
from .events import IOEvent
from .gate import BotGate, MountedBot
from .jsonfiles import ConfigFileError, load_json_file, validate_instance, write_json_atomic
from .loader import ModuleLoader
from .metrics import ModuleMetrics
from .routing import ModuleRouter
from .transformers import TRANSFORMERS_FILE, BotTransformers, load_bot_transformers

log = logging.getLogger(__name__)

BOT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
ANY_BOT = "___"
MOUNT_TIMEOUT = 30.0
DRAIN_TIMEOUT = 10.0
# Bots (re)mounted at once by mount_all and reload_many. Bounded so that 10,000 bots do not all start
# at once: each mount's MOUNT_TIMEOUT then counts its own work and at most ~0.5 s of CPU queued ahead of
# it (500 mounts of about 1 ms), not the whole start (before: 204 of 10,000 bots timed out). Large, so
# that slow Graph calls at mount (an outage: each waits up to its timeout) hold 500 bots at a time,
# not a few: 10,000 bots whose GET /me times out after 10 s still start in about 200 s.
MOUNT_CONCURRENCY = 500

BOT_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "id": {"type": "string", "pattern": BOT_ID_PATTERN.pattern,
               "description": "Must equal the folder name when given."},
        "name": {"type": "string", "description": "Display name."},
        "description": {"type": "string"},
        "disabled": {"type": "boolean", "default": False, "description": "A disabled bot is not mounted."},
        "defaultLanguage": {"type": "string", "default": "en"},
        "languages": {"type": "array", "items": {"type": "string"}},
        "sessionTimeout": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h|d)$", "default": "30m",
                           "description": "Inactivity after which a conversation's session expires; bot logic "
                                          "sees event.flags['session']['expired'] (a channel may override it)."},
        "details": {
            "type": "object", "default": {}, "additionalProperties": False,
            "description": "How the bot presents itself to people (a web chat's header and info page), as in "
                           "Botpress v12.",
            "properties": {
                key: {"type": "string", "maxLength": 2000, "description": text} for key, text in (
                    ("avatarUrl", "Picture of the bot (an http(s) URL or a path on this server)."),
                    ("coverPictureUrl", "Wide picture at the top of the bot's info page."),
                    ("website", "The bot owner's website."),
                    ("phoneNumber", "A phone number people can call."),
                    ("emailAddress", "An email address people can write to."),
                    ("termsConditions", "URL of the terms and conditions."),
                    ("privacyPolicy", "URL of the privacy policy."),
                )
            },
        },
    },
}

BotState = Literal["mounted", "disabled", "error", "unmounted"]


def valid_bot_id(bot_id: str) -> bool:
    return bool(BOT_ID_PATTERN.match(bot_id)) and bot_id != ANY_BOT


@dataclass
class BotRecord:
    id: str
    folder: Path
    state: BotState = "unmounted"
    error: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    contexts: dict[str, BotContext] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    transformers: BotTransformers | None = None
    # What /status shows while a remount is under way: the state before it, not a
    # passing "disabled" that a client polling at that instant would misread.
    shown_during_remount: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        if self.shown_during_remount is not None:
            return self.shown_during_remount
        out: dict[str, Any] = {"state": self.state if self.state != "unmounted" else "disabled"}
        if self.error:
            out["error"] = self.error
        out["modules"] = {name: dict(s) for name, s in self.modules.items()}
        if self.transformers is not None:
            out["transformers"] = self.transformers.status()
        return out


class NoEvents:
    """The event sink of a registry without a pipeline (``botpress-py check``, an offline erase)."""

    async def receive(self, events: list[IOEvent]) -> list[IOEvent]:
        raise RuntimeError("no event pipeline runs here (a command outside the server): events cannot be received")

    async def send(self, events: list[IOEvent]) -> None:
        raise RuntimeError("no event pipeline runs here (a command outside the server): events cannot be sent")


class _ContextHost:
    """What every BotContext of a registry calls (the BotHost protocol): events go straight to the
    pipeline (one call, no hop through the registry), statuses to the registry, state to storage."""

    def __init__(self, events: EventSink, registry: BotRegistry) -> None:
        self.receive = events.receive
        self.send = events.send
        self.set_module_status = registry.set_module_status
        self.kv = registry.kv
        self.users = registry.users
        if registry.media_store is not None:
            self.media = registry.media_store
        self.metrics = registry.metrics


class BotRegistry:
    def __init__(
        self,
        *,
        data_dir: Path,
        loader: ModuleLoader,
        resolver: ModuleConfigResolver,
        external_url: Callable[[], str],
        kv: Callable[[str], KeyValueStore],
        users: Callable[[str], UserStore],
        gate: BotGate | None = None,
        events: EventSink | None = None,
        media: Callable[[str], MediaStore] | None = None,
        metrics: ModuleMetrics | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.bots_dir = data_dir / "bots"
        self.loader = loader
        self.resolver = resolver
        self._external_url = external_url
        self._kv = kv
        self._users = users
        self.media_store = media  # bot id -> its bot.media (None: a command without storage)
        # The server's metrics; a command outside the server gets a registry nobody reads.
        self.metrics = metrics if metrics is not None else ModuleMetrics()
        # Which bots take events: opened here once a bot is mounted, read by the pipeline.
        self.gate = gate if gate is not None else BotGate()
        self._host = _ContextHost(events if events is not None else NoEvents(), self)
        self.records: dict[str, BotRecord] = {}
        # module -> {bot_id: context}: a live view handed to each module's ServerContext
        self.module_views: dict[str, dict[str, BotContext]] = {m: {} for m in loader.modules}
        self.on_change: Callable[[str], None] | None = None

    # -- behind every BotContext (with the pipeline: see _ContextHost) ---------------------------
    def set_module_status(self, bot_id: str, module: str, state: ModuleState, reason: str | None) -> None:
        record = self.records.get(bot_id)
        if record is None:
            return
        entry: dict[str, Any] = {"state": state}
        if reason:
            entry["reason"] = reason
        record.modules[module] = entry
        if state == "error":
            log.error("bot %s: module %s: %s", bot_id, module, reason)

    def kv(self, namespace: str) -> KeyValueStore:
        return self._kv(namespace)

    def users(self, bot_id: str) -> UserStore:
        return self._users(bot_id)

    # -- discovery -------------------------------------------------------------------------------
    def discover(self) -> list[str]:
        """Folder names under data/bots that hold a bot.config.json, sorted."""
        if not self.bots_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.bots_dir.glob("*/bot.config.json"))

    def bot_file(self, bot_id: str) -> Path:
        return self.bots_dir / bot_id / "bot.config.json"

    def read_bot_config(self, bot_id: str) -> tuple[dict[str, Any], list[ConfigProblem]]:
        path = self.bot_file(bot_id)
        if not valid_bot_id(bot_id):
            return {}, [ConfigProblem(str(path.parent), "", f"invalid bot id {bot_id!r}",
                                      f"rename the folder to match {BOT_ID_PATTERN.pattern}")]
        try:
            data = load_json_file(path)
        except ConfigFileError as exc:
            return {}, exc.problems
        if not isinstance(data, dict):
            return {}, [ConfigProblem(str(path), "/", "must be a JSON object")]
        problems = validate_instance(data, BOT_CONFIG_SCHEMA, str(path))
        if "id" in data and data["id"] != bot_id:
            problems.append(ConfigProblem(str(path), "/id", f"id {data['id']!r} differs from the folder "
                                          f"name {bot_id!r}", "make them equal or remove 'id'"))
        data = {k: v for k, v in data.items() if k != "$schema"}
        data.setdefault("id", bot_id)
        data.setdefault("disabled", False)
        data.setdefault("defaultLanguage", "en")
        return data, problems

    def _context(self, bot_id: str, module: str, bot_config: dict[str, Any], config: dict[str, Any],
                 sources: dict[str, str] | None = None) -> BotContext:
        return BotContext(host=self._host, bot_id=bot_id, module=module, bot_config=bot_config, config=config,
                          data_dir=self.bots_dir / bot_id, external_url=self._external_url(),
                          router=ModuleRouter(), config_sources=sources)

    async def check_bot(self, bot_id: str) -> list[ConfigProblem]:
        """Every problem in a bot's files, without touching the running bot."""
        bot_problems, by_module = await self._check_parts(bot_id)
        return bot_problems + [p for problems in by_module.values() for p in problems]

    async def _check_parts(self, bot_id: str) -> tuple[list[ConfigProblem], dict[str, list[ConfigProblem]]]:
        """Problems of bot.config.json, and per module those of its config and own files."""
        bot_config, problems = self.read_bot_config(bot_id)
        by_module: dict[str, list[ConfigProblem]] = {}
        if problems:
            return problems, by_module
        for name in self.loader.call_order("check_bot"):
            resolved = self.resolver.resolve(self.loader.modules[name], bot_id)
            if not resolved.ok:
                by_module[name] = resolved.problems
                continue
            ctx = self._context(bot_id, name, bot_config, resolved.config, resolved.sources)
            try:
                found = [p for result in await self.loader.call(name, "check_bot", bot=ctx) for p in result or []]
            except Exception as exc:
                found = [ConfigProblem(str(self.bots_dir / bot_id), "",
                                       f"module {name} check_bot failed: {type(exc).__name__}: {exc}")]
            if found:
                by_module[name] = found
        return [], by_module

    # -- lifecycle -----------------------------------------------------------------------------
    def register_all(self) -> None:
        """Know every bot folder before mounting, so replayed events find their bot and wait."""
        for bot_id in self.discover():
            self.records.setdefault(bot_id, BotRecord(bot_id, self.bots_dir / bot_id))
            self.gate.know(bot_id)

    async def mount_all(self) -> None:
        self.register_all()
        await self.reload_many(list(self.records), force=True)

    async def reload_many(self, bot_ids: list[str], *, force: bool = False) -> None:
        """Reload these bots, ``MOUNT_CONCURRENCY`` at a time: concurrently, so one slow mount (a Graph
        call) does not delay the others, but bounded (see MOUNT_CONCURRENCY). reload contains a bot's
        failures in its status; an unexpected error (a file that cannot be read) is raised at once, as
        before, while the other workers go on with the remaining bots."""
        pending = iter(bot_ids)

        async def worker() -> None:
            for bot_id in pending:  # shared iterator: each worker takes the next bot not yet taken
                await self.reload(bot_id, force=force)

        await asyncio.gather(*(worker() for _ in range(min(MOUNT_CONCURRENCY, len(bot_ids)))))

    async def reload(self, bot_id: str, *, force: bool = False) -> BotRecord:
        """(Re)mount a bot from its files; a disabled bot ends unmounted (and modules get ``on_bot_disabled``).

        Without ``force`` a bot that is mounted keeps its last good state when its files
        have problems: the reload is refused and the problem is reported in ``error``.
        """
        record = self.records.get(bot_id)
        if record is None:
            record = self.records[bot_id] = BotRecord(bot_id, self.bots_dir / bot_id)
            self.gate.know(bot_id)
        async with record.lock:
            if not self.bot_file(bot_id).exists():
                await self._unmount_locked(record)
                del self.records[bot_id]
                self.gate.forget(bot_id)
                log.info("bot %s removed", bot_id)
                return record
            bot_config, problems = self.read_bot_config(bot_id)
            if problems:
                return await self._refuse_or_fail(record, problems, force)
            if bot_config.get("disabled"):
                await self._unmount_locked(record)
                record.config, record.state, record.error = bot_config, "disabled", None
                record.modules = {}
                log.info("bot %s disabled", bot_id)
                await self._tell_disabled(record, bot_config)
                return record
            if record.state == "mounted" and not force:
                # Refuse only what would break a module that works now: a module already in
                # error has no good state to keep, and its problem must not block a fix elsewhere.
                _, by_module = await self._check_parts(bot_id)
                breaking = [p for name, found in by_module.items() if self._module_working(record, name)
                            for p in found]
                if breaking:
                    return await self._refuse_or_fail(record, breaking, force)
            record.shown_during_remount = record.status() if record.state == "mounted" else None
            try:
                await self._unmount_locked(record)
                await self._mount_locked(record, bot_config)
            finally:
                record.shown_during_remount = None
            return record

    @staticmethod
    def _module_working(record: BotRecord, module: str) -> bool:
        return module in record.contexts and record.modules.get(module, {}).get("state") != "error"

    async def _refuse_or_fail(self, record: BotRecord, problems: list[ConfigProblem], force: bool) -> BotRecord:
        text = "; ".join(str(p) for p in problems)
        if record.state == "mounted" and not force:
            record.error = f"reload refused, still running the last good config: {text}"
            log.error("bot %s: %s", record.id, record.error)
            return record
        await self._unmount_locked(record)
        record.state, record.error = "error", text
        log.error("bot %s not mounted: %s", record.id, text)
        return record

    async def _mount_locked(self, record: BotRecord, bot_config: dict[str, Any]) -> None:
        record.config, record.error, record.modules = bot_config, None, {}
        for name in self.loader.call_order("on_bot_mount"):
            module = self.loader.modules[name]
            resolved = self.resolver.resolve(module, record.id)
            if not resolved.ok:
                record.modules[name] = {"state": "error",
                                        "reason": "; ".join(str(p) for p in resolved.problems)}
                log.error("bot %s: module %s off: %s", record.id, name, record.modules[name]["reason"])
                continue
            ctx = self._context(record.id, name, bot_config, resolved.config, resolved.sources)
            record.modules[name] = {"state": "on"}
            try:
                await asyncio.wait_for(self.loader.call(name, "on_bot_mount", bot=ctx), MOUNT_TIMEOUT)
            except Exception as exc:
                reason = f"on_bot_mount failed: {type(exc).__name__}: {exc}" if str(exc) else \
                    f"on_bot_mount failed: {type(exc).__name__}"
                record.modules[name] = {"state": "error", "reason": reason}
                log.exception("bot %s: module %s", record.id, name)
                continue
            record.contexts[name] = ctx
            self.module_views.setdefault(name, {})[record.id] = ctx
        record.transformers = load_bot_transformers(
            record.folder / TRANSFORMERS_FILE, self._context(record.id, "transformers", bot_config, {}))
        record.state = "mounted"
        self.gate.open(MountedBot(record.id, MappingProxyType(bot_config), MappingProxyType(dict(record.contexts)),
                                  record.transformers))
        log.info("bot %s mounted (%s)", record.id,
                 ", ".join(f"{m}={s['state']}" for m, s in record.modules.items()) or "no modules")

    async def _tell_disabled(self, record: BotRecord, bot_config: dict[str, Any]) -> None:
        """``on_bot_disabled`` for each module whose config for the bot resolves: a channel keeps
        accepting the bot's deliveries (stored until it is enabled) instead of refusing them."""
        for name in self.loader.call_order("on_bot_disabled"):
            module = self.loader.modules[name]
            if not self.loader.implements(name, "on_bot_disabled"):
                continue
            resolved = self.resolver.resolve(module, record.id)
            if not resolved.ok:
                log.info("bot %s: module %s not told the bot is disabled: %s", record.id, name,
                         "; ".join(str(p) for p in resolved.problems))
                continue
            ctx = self._context(record.id, name, bot_config, resolved.config, resolved.sources)
            try:
                await asyncio.wait_for(self.loader.call(name, "on_bot_disabled", bot=ctx), MOUNT_TIMEOUT)
            except Exception:
                log.exception("bot %s: module %s on_bot_disabled failed", record.id, name)

    async def _unmount_locked(self, record: BotRecord) -> None:
        if record.state != "mounted":
            return
        # Close the gate first so workers stop starting new events, then let the ones
        # in flight finish: a module must not lose its state under a running handler.
        await self.gate.close(record.id, DRAIN_TIMEOUT)
        for name in self.loader.call_order("on_bot_unmount", record.contexts, teardown=True):
            ctx = record.contexts[name]
            self.module_views.get(name, {}).pop(record.id, None)
            try:
                await asyncio.wait_for(self.loader.call(name, "on_bot_unmount", bot=ctx), MOUNT_TIMEOUT)
            except Exception:
                log.exception("bot %s: module %s on_bot_unmount failed", record.id, name)
        record.contexts = {}
        record.transformers = None
        record.state = "unmounted"
        self.gate.release(record.id)
        log.info("bot %s unmounted", record.id)

    async def unmount_all(self) -> None:
        await asyncio.gather(*(self._unmount_guarded(r) for r in list(self.records.values())))

    async def _unmount_guarded(self, record: BotRecord) -> None:
        async with record.lock:
            await self._unmount_locked(record)

    async def set_disabled(self, bot_id: str, disabled: bool) -> BotRecord:
        """Write ``disabled`` into bot.config.json (keeping every other key), then remount."""
        path = self.bot_file(bot_id)
        if not path.exists():
            raise KeyError(bot_id)
        try:
            data = load_json_file(path)
        except ConfigFileError:
            data = None
        if not isinstance(data, dict):
            raise ConfigFileError([ConfigProblem(str(path), "", "cannot update a broken bot.config.json",
                                                 "fix the file first (see botpress-py check)")])
        data["disabled"] = disabled
        write_json_atomic(path, data)
        if self.on_change:
            self.on_change(bot_id)
        return await self.reload(bot_id, force=True)

    async def erase_user(self, bot_id: str, channel: str, user_id: str) -> dict[str, int]:
        """Erase a user's stored data, then let every module drop what it keeps about them."""
        counts = await self._users(bot_id).erase(user_id, channel)
        bot_config, problems = self.read_bot_config(bot_id)
        record = self.records.get(bot_id)
        for name in self.loader.call_order("on_user_erase"):
            module = self.loader.modules[name]
            # The mounted context when there is one: the module's in-memory state is keyed by it.
            ctx = record.contexts.get(name) if record is not None else None
            if ctx is None:
                resolved = self.resolver.resolve(module, bot_id)
                if problems or not resolved.ok:
                    continue
                ctx = self._context(bot_id, name, bot_config, resolved.config, resolved.sources)
            try:
                await self.loader.call(name, "on_user_erase", bot=ctx, user_id=user_id, channel=channel)
            except Exception:
                log.exception("bot %s: module %s on_user_erase failed", bot_id, name)
                counts[f"{name} (failed)"] = 1
        return counts

    def status(self) -> dict[str, Any]:
        return {bot_id: record.status() for bot_id, record in sorted(self.records.items())}
