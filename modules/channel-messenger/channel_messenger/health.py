"""The channel's health as operators see it: each bot's status (token, Graph API version, mount notes), the
daily version check, and the channel's metrics (Graph calls, retries, token and version health, queues).

A bot's status is recomputed from its parts whenever one changes, so a token refused then replaced, or
a version that expires overnight, shows without a remount:

1. a refused access token is an error (token_health.py);
2. an expired ``graphApiVersion`` is an error; one expiring within 90 days is a note of an "on" status;
3. otherwise what the mount said (profile not pushed, the Instagram account; instagram.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from botpress_py.sdk import ServerContext

from .pacing import SendPacer
from .pages import PageBinding, PageRegistry
from .token_health import TokenHealth
from .version_health import HEALTH_VALUES, version_health

VERSION_CHECK_SECONDS = 86_400.0  # the version check runs at every mount and then daily


class ChannelHealth:
    def __init__(self, registry: PageRegistry, pacer: SendPacer,
                 mount_status: Callable[[str | None, Any], tuple[str, str | None]]) -> None:
        self.registry = registry
        self.pacer = pacer
        self._mount_status = mount_status  # (profile note, Instagram connection) -> (state, reason)
        self.tokens = TokenHealth(self.refresh, self._count_refusal)
        self._notes: dict[str, tuple[str | None, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._counters: dict[str, Any] = {}
        self._children: dict[tuple[str, str, str], Any] = {}  # bounded: bots x endpoint kinds x known codes

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, server: ServerContext) -> None:
        self._register_metrics(server)
        self._task = asyncio.create_task(self._daily(), name="messenger-version-check")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def mounted(self, binding: PageBinding, note: str | None, instagram: Any) -> None:
        """The bot is connected: log its version's health (the mount is the "at start" check), show its status."""
        self._notes[binding.bot_id] = (note, instagram)
        self._log_version(binding)
        self.refresh(binding)

    def forget(self, bot_id: str) -> None:
        self._notes.pop(bot_id, None)

    # -- status -------------------------------------------------------------------------------------
    def refresh(self, binding: PageBinding) -> None:
        bot = binding.bot
        token = self.tokens.status_reason(binding)
        if token is not None:
            bot.set_status("error", token)
            return
        version = version_health(binding.settings.graph_api_version)
        if version.state == "expired":
            bot.set_status("error", version.message)
            return
        note, instagram = self._notes.get(bot.id, (None, None))
        state, reason = self._mount_status(note, instagram) if instagram is not None else ("on", note)
        if version.state == "expiring":
            reason = "; ".join(r for r in (reason, version.message) if r)
        bot.set_status(state, reason)  # type: ignore[arg-type]

    def _log_version(self, binding: PageBinding) -> None:
        version = version_health(binding.settings.graph_api_version)
        if version.state == "expired":
            binding.bot.logger.error("channel-messenger: %s", version.message)
        elif version.state in ("expiring", "unknown"):
            binding.bot.logger.warning("channel-messenger: %s", version.message)

    async def _daily(self) -> None:
        while True:
            await asyncio.sleep(VERSION_CHECK_SECONDS)
            for binding in self.registry.bindings():
                self._log_version(binding)
                self.refresh(binding)

    # -- metrics ------------------------------------------------------------------------------------
    def _register_metrics(self, server: ServerContext) -> None:
        metrics = server.metrics
        self._counters = {
            "calls": metrics.counter("bp_messenger_graph_calls_total", "Graph API calls (each attempt) by bot, "
                                     "endpoint kind and outcome: ok, Meta's error code, network, http_5xx",
                                     ("bot", "kind", "code")),
            "retries": metrics.counter("bp_messenger_graph_retries_total", "Graph API attempts that repeated a "
                                       "failed call", ("bot", "kind")),
            "refused": metrics.counter("bp_messenger_token_refused_total", "Times Meta refused a bot's access "
                                       "token (190), once per token", ("bot",)),
            "batches": metrics.counter("bp_messenger_graph_batches_total", "Graph API batch requests, each with "
                                       "several Send API calls of a busy Page (graphBatching)", ("bot",)),
            "batched": metrics.counter("bp_messenger_graph_batched_calls_total", "Send API calls that went in "
                                       "batch requests", ("bot",)),
            "pauses": metrics.counter("bp_messenger_send_paused_total", "Pauses of a Page's sends after Meta's "
                                      "rate-limit errors", ("bot",)),
        }
        metrics.gauge_callback("bp_messenger_token_valid", "1 while Meta accepts the bot's access token, 0 once "
                               "it refused it", self._token_values, ("bot",))
        metrics.gauge_callback("bp_messenger_graph_version_health", "The graphApiVersion of the bot: 0 supported, "
                               "1 expiring within 90 days, 2 expired", self._version_values, ("bot",))
        metrics.gauge_callback("bp_messenger_send_queue", "Send API calls waiting for their Page's turn, per "
                               "priority (reply, notify, bulk)", self._queue_values, ("bot", "priority"))

    def observe_graph(self, bot: str, kind: str, outcome: str, retried: bool) -> None:
        """Every Graph attempt (graph_client.py): the labelled child is cached, ``labels()`` costs a lock and a key."""
        if not self._counters or not bot:
            return
        key = (bot, kind, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._counters["calls"].labels(bot, kind, outcome)
        child.inc()
        if retried:
            self._counters["retries"].labels(bot, kind).inc()

    def observe_batch(self, bot: str, calls: int) -> None:
        """A batch request of ``calls`` Send API calls (graph_batch.py); each call is also observed on its own."""
        if self._counters and bot:
            self._counters["batches"].labels(bot).inc()
            self._counters["batched"].labels(bot).inc(calls)

    def paused(self, bot: str) -> None:
        if self._counters:
            self._counters["pauses"].labels(bot).inc()

    def _count_refusal(self, bot: str) -> None:
        if self._counters:
            self._counters["refused"].labels(bot).inc()

    def _token_values(self) -> dict[str, float]:
        return {b.bot_id: 1.0 if self.tokens.valid(b.bot_id) else 0.0 for b in self.registry.bindings()}

    def _version_values(self) -> dict[str, float]:
        return {b.bot_id: float(HEALTH_VALUES[version_health(b.settings.graph_api_version).state])
                for b in self.registry.bindings()}

    def _queue_values(self) -> dict[tuple[str, str], float]:
        values: dict[tuple[str, str], float] = {}
        for (page_id, priority), count in self.pacer.depth().items():
            binding = self.registry.by_page(page_id)
            if binding is not None:
                key = (binding.bot_id, priority)
                values[key] = values.get(key, 0.0) + count
        return values
