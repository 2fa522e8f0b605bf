"""Delivering one outgoing event: middleware, the channel's ``on_outgoing``, retries, the outcome stored.

Part of ``EventPipeline`` (a mixin, apart so that each file keeps to one concern, like
processing.py for incoming events): what a conversation's outgoing worker does with each stored
reply, in order. A transient failure (a ``DeliveryError`` that is not permanent, or a channel
that raised) is retried with exponential backoff, the conversation waiting, up to
``RETRY_MAX_ATTEMPTS``; a permanent one is recorded as failed and the conversation moves on. A
stopping server never waits for a backoff: the event stays pending and is sent after the next
start. Whatever happens, the outcome (sent, dropped, failed, or the retry schedule) is stored,
and an event flagged ``mask`` keeps only its masked form once it is finished.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .core_metrics import CoreMetrics
from .event_feed import EventFeed
from .events import DeliveryError, IOEvent, Middleware, masked_copy
from .gate import BotGate, MountedBot, ShuttingDown
from .loader import ModuleLoader
from .log_context import event_scope
from .processing import maybe_await
from .storage import GroupCommitOutcomes, OutboxRow, SentMark, Storage
from .storage.common import describe_error

if TYPE_CHECKING:
    from .cluster_claims import ClusterClaims

log = logging.getLogger("botpress_py.pipeline")

# The backoff of a failed send: RETRY_BASE_SECONDS, doubled for each attempt, at most
# RETRY_MAX_SECONDS (tests shorten it with botpress_py.testing.send_retry_backoff).
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
# 20 attempts: 1+2+...+256 s, then 300 s each, about an hour of trying; past that the
# failure is recorded instead of retried forever.
RETRY_MAX_ATTEMPTS = 20
# A held send (``DeliveryError(hold=True)``: the channel waits for its operator) is tried again when its
# bot is mounted anew, else after this long: cheap, since the channel answers it without a network call.
HOLD_RETRY_SECONDS = 60.0


class OutgoingDelivery:
    if TYPE_CHECKING:
        storage: Storage
        gate: BotGate
        loader: ModuleLoader
        metrics: CoreMetrics
        feed: EventFeed
        outcomes: GroupCommitOutcomes
        middleware_out: list[tuple[str, Middleware]]
        _stopping: asyncio.Event
        _sending: int
        _remounted: dict[str, asyncio.Event]
        cluster: ClusterClaims | None

        def _memory_freed(self) -> None: ...

        def _count_failed(self, bot_id: str, direction: str) -> None: ...

    async def _deliver(self, row: OutboxRow) -> None:
        try:
            # Cluster mode: a node that lost the event's partition leaves it to the new owner.
            if self.cluster is None or self.cluster.holds_outgoing(row):
                with event_scope(row.event):  # the Send API's log lines name the event and its request
                    await self._deliver_held(row)
        finally:
            if self.cluster is not None:
                self.cluster.finished_outgoing(row)
            self._sending -= 1
            self._memory_freed()

    async def _deliver_held(self, row: OutboxRow) -> None:
        event = row.event
        held = False
        while True:
            wait = row.next_attempt_at / 1000 - time.time()
            if wait > 0:
                # A retry backoff; a stopping server does not wait for it: the row stays pending. A held
                # send also ends its wait when the bot is mounted anew (its config was fixed).
                await self._backoff(event.botId, wait, held)
                if self._stopping.is_set():
                    return
            try:
                async with self.gate.using(event.botId) as bot:
                    message_id = await self._run_outgoing(event, bot)
            except KeyError:
                log.warning("outgoing event %s for unknown bot %s left in the outbox", event.id, event.botId)
                return
            except ShuttingDown:
                return  # stays pending in the outbox; sent after the next start
            except DeliveryError as exc:
                held = exc.hold
                if held:
                    await self._hold(row, str(exc), exc.retry_after)
                    continue
                if exc.permanent or row.attempts + 1 >= RETRY_MAX_ATTEMPTS:
                    await self._fail(row, str(exc))
                    return
                await self._schedule_retry(row, str(exc), exc.retry_after)
                continue
            except _Dropped as dropped:
                await self._record_outgoing(event, "its drop", self.storage.outbox_update(
                    event.id, status="dropped", attempts=row.attempts, error=str(dropped)))
                await self._record_outgoing(event, "its masked form", self._redact_if_masked(event))
                return
            except Exception as exc:
                # A bug in a channel is retried like a transient failure, within the cap.
                log.exception("bot %s: delivery of %s raised", event.botId, event.id)
                if row.attempts + 1 >= RETRY_MAX_ATTEMPTS:
                    await self._fail(row, f"{type(exc).__name__}: {exc}")
                    return
                await self._schedule_retry(row, f"{type(exc).__name__}: {exc}", None)
                continue
            self.metrics.delivered(event)
            log.debug("bot %s: outgoing event %s delivered on %s", event.botId, event.id, event.channel)
            self.feed.publish(event, "sent")
            await self._mark_sent(row, message_id)
            return

    async def _mark_sent(self, row: OutboxRow, message_id: str | None) -> None:
        event = row.event
        try:
            stored = masked_copy(event) if event.flags.get("mask") else event
            await self.outcomes.add([SentMark(event, row.attempts + 1, message_id, stored)])
            return
        except Exception as exc:
            # Failed by itself (the group commit splits a failed batch): the others are recorded.
            self.metrics.events_sent_mark_failed.inc()
            log.error("bot %s: event %s was delivered but could not be recorded as sent (%s); recording its "
                      "status without history", event.botId, event.id,
                      describe_error(exc, masked=bool(event.flags.get("mask"))))
        # Without this the event stays pending, and the next start would send it again.
        await self._record_outgoing(event, "its sent status", self.storage.outbox_update(
            event.id, status="sent", attempts=row.attempts + 1, channel_message_id=message_id))
        await self._record_outgoing(event, "its masked form", self._redact_if_masked(event))

    async def _record_outgoing(self, event: IOEvent, what: str, write: Awaitable[Any]) -> bool:
        """Await a storage write about an outgoing event; a failure is logged, not raised (the
        event then stays as last stored: a pending one is sent after the next start)."""
        try:
            await write
            return True
        except Exception as exc:
            log.error("bot %s: could not store %s for outgoing event %s: %s", event.botId, what, event.id,
                      describe_error(exc, masked=bool(event.flags.get("mask"))))
            return False

    async def _run_outgoing(self, event: IOEvent, bot: MountedBot) -> str | None:
        """Outgoing middleware, then the ``on_outgoing`` of the module that sends the event's channel."""
        contexts = bot.contexts
        for module, mw in self.middleware_out:
            ctx = contexts.get(module)
            if ctx is not None and await maybe_await(mw.handler(event, ctx)) is False:
                raise _Dropped(f"dropped by middleware {mw.name}")
        senders = self.loader.senders_of(event.channel)
        for name in senders:
            ctx = contexts.get(name)
            if ctx is None:
                continue
            for result in await self.loader.call(name, "on_outgoing", event=event, bot=ctx):
                if result:
                    return event.flags.get("channelMessageId")
            if name == self.loader.channel_senders.get(event.channel):
                raise DeliveryError(f"module {name} sends channel {event.channel!r} but did not send this event "
                                    "(its on_outgoing returned no true value)", permanent=True)
        # Permanent: retrying for an hour would hold every later reply of the conversation.
        raise DeliveryError(f"no mounted module sends on channel {event.channel!r} for bot {event.botId} "
                            "(is the channel module on for this bot? see GET /status)", permanent=True)

    async def _backoff(self, bot_id: str, seconds: float, held: bool) -> None:
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if held:
            waits.append(asyncio.ensure_future(self._remounted.setdefault(bot_id, asyncio.Event()).wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def _bot_remounted(self, bot_id: str) -> None:
        """Held sends of the bot are tried again now (its config may have been fixed)."""
        remounted = self._remounted.pop(bot_id, None)
        if remounted is not None:
            remounted.set()

    async def _hold(self, row: OutboxRow, error: str, retry_after: float | None) -> None:
        """Keep the event pending, its attempts untouched, until the bot is mounted anew (or a while passed)."""
        delay = retry_after if retry_after is not None else HOLD_RETRY_SECONDS
        row.next_attempt_at = int((time.time() + delay) * 1000)
        log.debug("bot %s: send of %s held until the bot is mounted anew or %.0f s passed: %s",
                  row.event.botId, row.event.id, delay, error)
        await self._record_outgoing(row.event, "its held state", self.storage.outbox_update(
            row.event.id, status="pending", attempts=row.attempts, next_attempt_at=row.next_attempt_at, error=error))

    async def _schedule_retry(self, row: OutboxRow, error: str, retry_after: float | None) -> None:
        row.attempts += 1
        delay = retry_after if retry_after is not None else min(
            RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (row.attempts - 1))
        delay *= random.uniform(0.8, 1.2)  # jitter: conversations that failed together retry apart
        row.next_attempt_at = int((time.time() + delay) * 1000)
        self.metrics.events_send_retried.inc()
        log.warning("bot %s: send of %s failed (attempt %d), retrying in %.1fs: %s",
                    row.event.botId, row.event.id, row.attempts, delay, error)
        # Not stored: the retry happens all the same, only a restart would not know its schedule.
        await self._record_outgoing(row.event, "its retry schedule", self.storage.outbox_update(
            row.event.id, status="pending", attempts=row.attempts, next_attempt_at=row.next_attempt_at, error=error))

    async def _fail(self, row: OutboxRow, error: str) -> None:
        self.metrics.events_send_failed.inc()
        log.error("bot %s: send of %s failed permanently: %s", row.event.botId, row.event.id, error)
        self.feed.publish(row.event, "failed")
        if await self._record_outgoing(row.event, "its failure", self.storage.outbox_update(
                row.event.id, status="failed", attempts=row.attempts + 1, error=error)):
            self._count_failed(row.event.botId, "outgoing")
        await self._record_outgoing(row.event, "its masked form", self._redact_if_masked(row.event))

    async def _redact_if_masked(self, event: IOEvent) -> IOEvent:
        """Once an outgoing event is finished (sent or failed), keep only its masked form if asked to."""
        if not event.flags.get("mask"):
            return event
        masked = masked_copy(event)
        await self.storage.outbox_redact(masked)
        return masked


class _Dropped(Exception):
    """An outgoing middleware returned False: the event is stored as dropped, never sent."""
