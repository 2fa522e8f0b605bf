"""The event pipeline: durable inbox and outbox, per-conversation order (docs/architecture.md).

Incoming: a channel's ``bot.receive(events)`` stores them (group commit) and returns; one
worker per conversation then runs the incoming middleware and every module's
``on_incoming`` (processing.py). The replies bot logic sends meanwhile are collected, and the "processed"
mark and those replies are committed in ONE transaction: after a crash an event is either
still pending (and replays from scratch) or done with its replies stored, so completed work
is never redone. Outgoing: one worker per conversation runs the outgoing middleware and
hands each stored event to its channel's ``on_outgoing`` in order, retrying transient
failures with backoff and recording permanent ones (delivery.py). Whatever is stored and not done when
the process dies is replayed at the next start.

Memory stays bounded: events of a bot that is not mounted, and events arriving while
``MAX_QUEUED_INCOMING`` events are already in memory (incoming ones, and replies waiting to be
sent: a slow Graph API must not pile replies up in memory either), are not queued. They stay pending in
the inbox (the bot is *parked*), and a resumer reads them back in arrival order, a batch at a
time, once the bot is mounted and memory has room. A parked bot's new events are parked too,
so a conversation's order never depends on which path an event took. Which bots take events,
and their modules' contexts, come from the bot gate (gate.py), never from the bot registry.

One bad event never hurts another: the shared transactions split themselves to find a guilty
item (storage/group_commit.py), a reply that cannot be stored is refused at ``send()``, and an
event whose processing keeps failing is retried with backoff, then marked failed, and its
conversation moves on (failed_events.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .conversation_queues import ConversationQueues
from .core_metrics import CoreMetrics
from .delivery import OutgoingDelivery
from .event_feed import EventFeed
from .events import IOEvent, Middleware, now_ms, payload_preview, validate_outgoing_payload
from .failed_events import FailedCounts, FailedEvents, RetryPolicy
from .gate import BotGate
from .loader import ModuleLoader
from .log_context import event_scope, stamp_incoming, stamp_outgoing
from .logthrottle import LogThrottle
from .processing import IncomingProcessing, current_replies
from .storage import (
    STORED_AS_FAILED,
    GroupCommitInbox,
    GroupCommitOutcomes,
    OutboxRow,
    PendingEvent,
    Storage,
)
from .storage.base import StorageUnavailable
from .storage.bounded import AckDeadlines, landed_late

if TYPE_CHECKING:
    from .cluster_claims import ClusterClaims

log = logging.getLogger(__name__)

# Events held in memory (incoming ones queued or being processed, and outgoing ones waiting to
# be sent) before new incoming ones stay in storage.
# Each costs a few kB while it waits (bench/: RSS 289 MB with 10,000 at a 10-events-per-POST burst),
# and more of them in memory does not make processing faster, only later ones wait longer.
MAX_QUEUED_INCOMING = 2_000
# A resumer reads this many stored events at a time, and reads more once memory holds fewer
# than RESUME_BELOW (so a backlog of a million events never sits in memory at once).
RESUME_BATCH = 500
RESUME_BELOW = MAX_QUEUED_INCOMING // 2
# How long bot.receive waits for the inbox commit by default (storage.ackTimeout); and how many
# received events may wait for a commit before new ones are refused at once (a stalled storage).
DEFAULT_ACK_TIMEOUT = 5.0
MAX_UNSTORED_INCOMING = 10_000



class EventPipeline(IncomingProcessing, OutgoingDelivery):
    def __init__(self, storage: Storage, gate: BotGate, loader: ModuleLoader, metrics: CoreMetrics,
                 retry: RetryPolicy | None = None) -> None:
        self.storage = storage
        self.gate = gate
        gate.add_listener(self)  # bot_opened: a parked bot's stored events can flow again
        self.loader = loader
        self.metrics = metrics
        self.retry = retry or RetryPolicy()
        self.failed_counts = FailedCounts()
        self.failed = FailedEvents(storage, self, self.failed_counts)
        self.feed = EventFeed()  # the admin page's live view
        metrics.gauge("bp_failed_events", "Failed events stored now (listed by GET /api/v1/admin/events/failed), "
                      "by direction.", self.failed_counts.gauge, ("direction",))
        self.inbox = GroupCommitInbox(storage)
        # Completions (processed mark, history, replies) and sent marks share transactions: whatever of
        # both is ready while a commit runs goes in the next one. No window: a sent mark held back for
        # company would show in the history after the user's next message.
        self.outcomes = GroupCommitOutcomes(storage)
        self.incoming = ConversationQueues("incoming", self._process_incoming)
        self.outgoing = ConversationQueues("outgoing", self._deliver)
        self.middleware_in = self._middleware("incoming")
        self.middleware_out = self._middleware("outgoing")
        self._accepting = True
        self.ack_timeout = DEFAULT_ACK_TIMEOUT  # storage.ackTimeout
        self._unstored = 0  # received events whose inbox commit is not done yet
        self._ack_deadlines = AckDeadlines()  # bounds each webhook's wait for its commit (ack_timeout)
        self._stopping = asyncio.Event()  # set by drain(): retry backoffs end, their items stay stored
        self._remounted: dict[str, asyncio.Event] = {}  # per bot: set when it is mounted (held sends go on)
        # Incoming events in memory (queued or being processed), in all and per bot.
        self._held = 0
        self._held_by_bot: dict[str, int] = {}
        self._sending = 0  # outgoing events in memory (queued, being sent or waiting for a retry)
        self._room = asyncio.Event()  # set whenever memory holds fewer than RESUME_BELOW events
        self._room.set()
        self._bot_drained: dict[str, asyncio.Event] = {}
        # Bots whose new events stay in storage; a resumer per parked bot that can take events.
        self._parked: set[str] = set()
        self._parked_since_read: set[str] = set()  # parked events arrived while a resumer reads
        self._resumers: dict[str, asyncio.Task[None]] = {}
        self._rewind: set[str] = set()  # parked bots whose resumer must read again from the start
        # Failed processing attempts of events read back from storage (only those with some).
        self._attempts: dict[str, int] = {}
        self._log_throttle = LogThrottle(10.0)
        # Cluster mode (docs/cluster.md): events are processed by the owner of their partition, which
        # reads them from storage; this node queues only what ``cluster`` claims.
        self.cluster: ClusterClaims | None = None

    def _middleware(self, direction: str) -> list[tuple[str, Middleware]]:
        found = [(name, mw) for name, module in self.loader.modules.items()
                 for mw in module.middleware if mw.direction == direction]
        return sorted(found, key=lambda pair: pair[1].order)

    # -- entry points ----------------------------------------------------------------------------
    async def receive(self, events: list[IOEvent]) -> list[IOEvent]:
        if not self._accepting:
            raise RuntimeError("the server is shutting down; the channel should answer 503 so it redelivers")
        if not events:
            return []
        if self._unstored >= MAX_UNSTORED_INCOMING:
            # Storage stalled and webhooks keep coming: answer at once instead of piling events up in memory.
            raise StorageUnavailable(f"storage is not keeping up: {self._unstored} received events wait for their "
                                     "commit; answer 503 so the platform redelivers later")
        stamp_incoming(events, now_ms())
        ack: asyncio.Future[list[IOEvent]] = asyncio.get_running_loop().create_future()
        committed = self.inbox.submit(events)
        self._unstored += len(events)
        # What follows the commit runs in its done-callback, not in a task of this caller: if the
        # caller stops waiting (the bound, or a client that went away), events committed later are
        # still processed; and the hot path pays no task per webhook.
        committed.add_done_callback(lambda done: self._stored(events, done, ack))
        self._ack_deadlines.bound(ack, self.ack_timeout)
        return await ack

    def _stored(self, events: list[IOEvent], committed: asyncio.Future[list[bool | str]],
                ack: asyncio.Future[list[IOEvent]]) -> None:
        """The inbox commit of a webhook's events is over: queue what is new, then answer its ``ack``."""
        self._unstored -= len(events)
        try:
            accepted = self._take_stored(events, committed.result())
        except BaseException as exc:  # the commit failed (or was cancelled): the webhook answers 5xx
            if ack.done():
                landed_late(exc)
            elif isinstance(exc, asyncio.CancelledError):
                ack.cancel()
            else:
                ack.set_exception(exc)
        else:
            if ack.done():
                landed_late(None)
            else:
                ack.set_result(accepted)
        self._ack_deadlines.landed()

    def _take_stored(self, events: list[IOEvent], flags: list[bool | str]) -> list[IOEvent]:
        every_one_new = all(new is True for new in flags)  # the usual case: no duplicate, nothing refused
        if every_one_new:
            accepted, failed = events, []
        else:
            accepted = [event for event, new in zip(events, flags, strict=True) if new is True]
            failed = [event for event, new in zip(events, flags, strict=True) if new == STORED_AS_FAILED]
        self.metrics.events_received.inc(len(accepted))
        for event in accepted:
            self.metrics.received(event)
        if not every_one_new:
            self.metrics.events_duplicate.inc(len(events) - len(accepted) - len(failed))
            for event in failed:
                self._count_failed(event.botId, "incoming")
        self.feed.publish_many(accepted, "received")
        if failed:
            self.feed.publish_many(failed, "failed")
        if self.cluster is not None:
            return accepted  # stored: the owner of each event's partition reads it (woken by the insert)
        for event in accepted:
            bot_id = event.botId
            if bot_id in self._parked:
                self._parked_since_read.add(bot_id)
                self._resume(bot_id)  # usually running already; restarts one that failed to read
            elif self._held + self._sending >= MAX_QUEUED_INCOMING or not self._takes_events(bot_id):
                self._park(bot_id)
            else:
                self._queue_incoming(event)
        return accepted

    # -- parking: events that stay in storage until their bot can take them -----------------------
    def _takes_events(self, bot_id: str) -> bool:
        return self.gate.takes_events(bot_id)

    def _queue_incoming(self, event: IOEvent) -> None:
        self._held += 1
        self._held_by_bot[event.botId] = self._held_by_bot.get(event.botId, 0) + 1
        if self._held + self._sending >= RESUME_BELOW:
            self._room.clear()
        self.incoming.put(event.conversation_key, event)

    def _release_incoming(self, bot_id: str) -> None:
        self._held -= 1
        left = self._held_by_bot[bot_id] - 1
        if left:
            self._held_by_bot[bot_id] = left
        else:
            del self._held_by_bot[bot_id]
            drained = self._bot_drained.pop(bot_id, None)
            if drained is not None:
                drained.set()
        self._memory_freed()

    def _memory_freed(self) -> None:
        if self._held + self._sending < RESUME_BELOW and not self._room.is_set():
            self._room.set()
            if self.cluster is not None:
                self.cluster.wake()
            for parked in list(self._parked):
                self._resume(parked)  # parked for want of memory: there is room again

    def _park(self, bot_id: str) -> None:
        self._parked.add(bot_id)
        self._parked_since_read.add(bot_id)
        self._resume(bot_id)

    def parked_bots(self) -> set[str]:
        return set(self._parked)

    def bot_opened(self, bot_id: str) -> None:
        """The gate opened for a bot (it was mounted): its stored events can flow again, its held sends too."""
        self._bot_remounted(bot_id)
        if self.cluster is not None:
            self.cluster.rewind()
        elif bot_id in self._parked:
            self._resume(bot_id)

    def _resume(self, bot_id: str) -> None:
        running = self._resumers.get(bot_id)
        if (running is not None and not running.done()) or not self._accepting or not self._takes_events(bot_id):
            return  # already resuming; or it resumes when mounted
        if self._held + self._sending >= RESUME_BELOW:
            return  # it resumes when memory has room
        task = asyncio.create_task(self._resume_from_storage(bot_id), name=f"incoming-resume:{bot_id}")
        self._resumers[bot_id] = task
        task.add_done_callback(lambda done: self._resumers.pop(bot_id) if self._resumers.get(bot_id) is done
                               else None)

    def requeue_incoming(self, bot_ids: Iterable[str]) -> None:
        """Failed events of these bots were put back to pending: read them back, in arrival order.

        They are older than what the resumer may have read already, so it starts over (once the
        bot's events in memory are done, so that none is queued twice).
        """
        if self.cluster is not None:
            self.cluster.rewind_everywhere()
            return
        for bot_id in bot_ids:
            self._rewind.add(bot_id)
            self._park(bot_id)

    def requeue_outgoing(self, rows: list[OutboxRow]) -> None:
        """Failed outgoing events put back to pending: queue them for delivery now."""
        if self.cluster is not None:
            self.cluster.rewind_everywhere(outgoing=True)
        elif self._accepting:
            for row in rows:
                self._put_outgoing(row)

    async def _resume_from_storage(self, bot_id: str) -> None:
        """Queue a parked bot's stored events in arrival order, then let its new events in directly.

        Events of the bot still in memory (queued before it was parked, perhaps waiting for a
        remount) finish first: everything pending in storage is then parked, so reading from
        the start queues nothing twice, and every parked event is younger than those.
        """
        try:
            after, start_over = 0, True
            while self._takes_events(bot_id):
                if start_over or bot_id in self._rewind:
                    self._rewind.discard(bot_id)
                    if self._held_by_bot.get(bot_id):
                        drained = self._bot_drained.setdefault(bot_id, asyncio.Event())
                        await drained.wait()
                    after, start_over = 0, False
                    continue  # the bot may have been unmounted meanwhile
                self._parked_since_read.discard(bot_id)
                batch = await self.storage.inbox_pending_rows(limit=RESUME_BATCH, after_seq=after, bot_id=bot_id)
                if not self._takes_events(bot_id) or not self._accepting:
                    return  # unmounted meanwhile: the batch stays stored, the next mount resumes
                if bot_id in self._rewind:
                    continue  # read before a retry put older events back: read again from the start
                for row in batch:
                    if row.attempts:
                        self._attempts[row.event.id] = row.attempts
                    self._queue_incoming(row.event)
                    after = row.seq
                if not batch and bot_id not in self._parked_since_read:
                    # Nothing stored is left unqueued, and every later event was committed after
                    # this read: from here on the bot's events are queued as they arrive.
                    self._parked.discard(bot_id)
                    return
                await self._room.wait()
        except Exception:
            # A failed read: the events stay stored; the next mount, or room in memory, tries again.
            log.exception("bot %s: could not read its stored events; they stay pending", bot_id)

    async def send(self, events: list[IOEvent]) -> None:
        if not events:
            return
        for event in events:
            problems = validate_outgoing_payload(event.payload)
            if problems:
                # A bug in bot logic: fail at the call, where its author can see it.
                raise ValueError(f"bot {event.botId}: cannot send {event.payload!r}: {'; '.join(problems)}")
            event.direction = "outgoing"
            stamp_outgoing(event)
            if not event.preview:
                event.preview = payload_preview(event.payload)
        bot = self.gate.current(events[0].botId)
        if bot is not None:
            # Transform before storing: a retry after a restart sends what was transformed.
            events = [e for e in events if await self._transform("transform_output", e, bot)]
            if not events:
                return
        # Encoded here, once: a reply that cannot be stored fails the bot logic that sent it, and
        # never reaches (and fails) a transaction shared with other conversations' events.
        encoded = [self._encode_reply(event, bot) for event in events]
        collector = current_replies.get()
        if collector is not None and collector.open:
            collector.events.extend(events)
            collector.encoded.extend(encoded)
            return
        seqs = await self.storage.outbox_add(events, encoded)
        self._queue_outgoing(events, seqs)

    def _queue_outgoing(self, events: list[IOEvent], seqs: list[int]) -> None:
        if self.cluster is not None:
            self.cluster.route_outgoing(events, seqs)
            return
        for event, seq in zip(events, seqs, strict=True):
            self._put_outgoing(OutboxRow(seq, event, 0, 0, "pending"))

    def _put_outgoing(self, row: OutboxRow) -> None:
        self._sending += 1
        if self._held + self._sending >= RESUME_BELOW:
            self._room.clear()
        self.outgoing.put(row.event.conversation_key, row)

    async def replay(self) -> tuple[int, int]:
        """Take up what was stored and not finished before the last stop.

        Incoming events stay in storage: their bots are parked, and each bot's events are read
        back once it is mounted. Outgoing events are queued now.
        """
        # A poison event must not replay forever: one that has used up its attempts (counted in
        # storage as they failed; maxAttempts may have been lowered since) is failed now.
        exhausted = await self.storage.inbox_fail_exhausted(
            self.retry.max_attempts, f"processing failed {self.retry.max_attempts} times before a restart")
        if exhausted:
            self.metrics.failed("incoming", sum(exhausted.values()))
            log.error("failed %d stored events that used up their %d attempts before the last stop: %s",
                      sum(exhausted.values()), self.retry.max_attempts, exhausted)
        self.failed_counts.replace(await self.storage.failed_counts())
        if self.cluster is not None:
            return 0, 0  # each partition's stored events are read by the node that takes it
        pending = await self.storage.inbox_pending_counts()
        self._parked.update(pending)
        self._parked_since_read.update(pending)
        n_in = sum(pending.values())
        n_out = 0
        after = 0
        while rows := await self.storage.outbox_pending(limit=1000, after_seq=after):
            for row in rows:
                self._put_outgoing(row)
                after = row.seq
            n_out += len(rows)
        if n_in or n_out:
            log.info("replaying %d incoming and %d outgoing events stored before the last stop", n_in, n_out)
        return n_in, n_out

    # -- incoming ----------------------------------------------------------------------------------
    async def _process_incoming(self, event: IOEvent) -> None:
        try:
            if self.cluster is None or self.cluster.holds_incoming(event):
                with event_scope(event):  # every line logged while it is processed names it
                    await self._process_with_retries(event)
        finally:
            if self.cluster is not None:
                self.cluster.finished_incoming(event)
            self._release_incoming(event.botId)

    # -- cluster mode: what the partition reader asks ----------------------------------------------
    def memory_room(self) -> int:
        """How many more events memory takes now."""
        return MAX_QUEUED_INCOMING - self._held - self._sending if self._accepting else 0

    def bots_not_taking_events(self) -> list[str]:
        return self.gate.closed_bots()

    def knows_bot(self, bot_id: str) -> bool:
        return self.gate.knows(bot_id)

    def queue_claimed(self, row: PendingEvent) -> None:
        if row.attempts:
            self._attempts[row.event.id] = row.attempts
        self._queue_incoming(row.event)

    def queue_claimed_outgoing(self, row: OutboxRow) -> None:
        self._put_outgoing(row)

    def _count_failed(self, bot_id: str, direction: str) -> None:
        self.metrics.failed(direction)
        self.failed_counts.add(bot_id, direction)

    # -- shutdown ----------------------------------------------------------------------------------
    async def drain(self, timeout: float) -> bool:
        """Stop accepting, finish queued work up to ``timeout``; the rest is replayed next start."""
        self._accepting = False
        self._stopping.set()  # workers waiting for a backoff give up their item
        self.gate.shut()  # and so do those waiting for a bot to be mounted
        deadline = time.monotonic() + timeout
        for task in list(self._resumers.values()):
            task.cancel()  # what they have not queued yet stays stored
        ok = await self.incoming.wait_idle(timeout)
        ok = await self.outgoing.wait_idle(max(0.0, deadline - time.monotonic())) and ok
        await self.incoming.cancel()
        await self.outgoing.cancel()
        await self.outcomes.close()
        await self.inbox.close()
        self._ack_deadlines.close()
        return ok
