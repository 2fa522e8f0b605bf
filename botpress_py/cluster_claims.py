"""Cluster mode: which stored events this node processes and sends, read from its partitions (docs/cluster.md).

Every node stores the events of the webhooks it receives; none queues them directly. The owner
of an event's partition (its lease holder) reads its partitions' pending events in seq order
past a cursor per partition and hands them to the pipeline's conversation queues. Inserts into a
partition are serialised (storage/postgres_cluster.py), so a later seq never becomes visible
before an earlier one and a cursor never skips an event. Each claimed event remembers the lease
epoch it was read under: its completion is fenced by that epoch, and a node that lost the
partition drops its work instead of completing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from .events import IOEvent
from .gate import BotGate
from .storage import OutboxRow
from .storage.postgres_cluster import event_partition

if TYPE_CHECKING:
    from .pipeline import EventPipeline
    from .storage import PostgresStorage

log = logging.getLogger("botpress_py.cluster")

# Events read at a time (and at most this many more than memory has room for).
CLAIM_BATCH = 500
# How long a finished event's id is remembered: a read that started before its completion
# committed may still return it as pending, and must not queue it again.
FINISHED_MEMORY_SECONDS = 120.0
# A partition is read again this often even without a notification (one lost with a dropped
# LISTEN connection, say).
POLL_SECONDS = 2.0


class ClusterClaims:
    """The partitions this node holds, what it has claimed from them, and the reader that claims."""

    def __init__(self, storage: PostgresStorage, pipeline: EventPipeline, gate: BotGate) -> None:
        self.storage = storage
        self.pipeline = pipeline
        self.gate = gate
        self.leases: dict[int, int] = {}  # partition -> epoch held
        self.draining: set[int] = set()  # held, but being given back: read no more from them
        self._cursor: dict[int, int] = {}
        self._dirty: set[int] = set()  # partitions with incoming events to read
        self._outbox_dirty: set[int] = set()  # partitions with outgoing events to read
        self._incoming: dict[str, tuple[int, int]] = {}  # event id -> (partition, epoch), in memory
        self._outgoing: dict[str, tuple[int, int]] = {}
        self._finished: OrderedDict[str, tuple[int, float]] = OrderedDict()  # event id -> (partition, when)
        self._generation = 0  # grows at every rewind or change of lease: a read begun before is read again
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_idle: Callable[[], None] | None = None  # a draining partition may be given back

    # -- leases ------------------------------------------------------------------------------------
    def set_leases(self, held: dict[int, int]) -> None:
        """The partitions (and epochs) storage says this node holds now."""
        for part, epoch in held.items():
            if self.leases.get(part) != epoch:
                self.leases[part] = epoch
                self.draining.discard(part)
                self._cursor[part] = 0
                self._dirty.add(part)
                self._outbox_dirty.add(part)
                self._forget_finished(part)
        for part in [p for p in self.leases if p not in held]:
            self._lose(part)
        self._generation += 1
        self._wake.set()

    def lose_all(self) -> None:
        """This node cannot tell whether it still holds anything (storage unreachable past nodeTimeout)."""
        for part in list(self.leases):
            self._lose(part)

    def _lose(self, part: int) -> None:
        del self.leases[part]
        self.draining.discard(part)
        self._cursor.pop(part, None)
        self._dirty.discard(part)
        self._outbox_dirty.discard(part)

    def idle(self, part: int) -> bool:
        """Nothing of the partition is in memory (it can be given back without double work)."""
        return all(p != part for p, _ in self._incoming.values()) and all(p != part for p, _ in
                                                                           self._outgoing.values())

    def resume(self, part: int) -> None:
        """A draining partition is kept after all: read it again from its start."""
        if part in self.leases:
            self._cursor[part] = 0
            self._dirty.add(part)
            self._outbox_dirty.add(part)
            self._generation += 1
            self._wake.set()

    def forget(self, part: int) -> None:
        """The partition was given back."""
        if part in self.leases:
            self._lose(part)

    # -- what the pipeline asks ---------------------------------------------------------------------
    def holds_incoming(self, event: IOEvent) -> bool:
        claim = self._incoming.get(event.id)
        return claim is not None and self.leases.get(claim[0]) == claim[1]

    def holds_outgoing(self, row: OutboxRow) -> bool:
        claim = self._outgoing.get(row.event.id)
        return claim is not None and self.leases.get(claim[0]) == claim[1]

    def fence(self, event_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(partition, epoch) each event was claimed under: what its completion is checked against."""
        return {event_id: self._incoming[event_id] for event_id in event_ids if event_id in self._incoming}

    def finished_incoming(self, event: IOEvent) -> None:
        claim = self._incoming.pop(event.id, None)
        if claim is not None:
            self._remember_finished(event.id, claim[0])
            if claim[0] in self.draining and self.on_idle is not None:
                self.on_idle()

    def finished_outgoing(self, row: OutboxRow) -> None:
        claim = self._outgoing.pop(row.event.id, None)
        if claim is not None:
            self._remember_finished(row.event.id, claim[0])
            if claim[0] in self.draining and self.on_idle is not None:
                self.on_idle()

    def route_outgoing(self, events: list[IOEvent], seqs: list[int]) -> None:
        """Stored outgoing events: queue those of partitions held here, tell the owners of the others."""
        foreign: set[int] = set()
        for event, seq in zip(events, seqs, strict=True):
            part = event_partition(event)
            epoch = self.leases.get(part)
            if epoch is None:
                foreign.add(part)
                continue
            self._outgoing[event.id] = (part, epoch)
            self.pipeline.queue_claimed_outgoing(OutboxRow(seq, event, 0, 0, "pending"))
        for part in foreign:
            task = asyncio.create_task(self._notify(f"outbox:{part}"), name="cluster-notify")
            task.add_done_callback(lambda done: None if done.cancelled() else done.exception())

    async def _notify(self, payload: str) -> None:
        try:
            await self.storage.cluster_notify(payload)
        except Exception as exc:  # the owner polls anyway
            log.warning("cluster: could not notify %s: %s", payload, exc)

    # -- notifications -----------------------------------------------------------------------------
    def notified(self, kind: str, part: int) -> None:
        if part not in self.leases or part in self.draining:
            return
        (self._dirty if kind == "inbox" else self._outbox_dirty).add(part)
        self._wake.set()

    def rewind(self, *, outgoing: bool = False) -> None:
        """Read every held partition again from its start (a bot opened; failed events were put back)."""
        for part in self.leases:
            if part in self.draining:
                continue
            self._cursor[part] = 0
            self._dirty.add(part)
            if outgoing:
                self._outbox_dirty.add(part)
        self._generation += 1
        self._wake.set()

    def rewind_everywhere(self, *, outgoing: bool = False) -> None:
        """Failed events were put back to pending here: their partitions' owners (any node) read again."""
        self.rewind(outgoing=outgoing)
        task = asyncio.create_task(self._notify("rewind:out" if outgoing else "rewind:in"), name="cluster-notify")
        task.add_done_callback(lambda done: None if done.cancelled() else done.exception())

    # -- the reader --------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-claims")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            except TimeoutError:
                self._dirty.update(p for p in self.leases if p not in self.draining)
            self._wake.clear()
            try:
                await self._read_outbox()
                await self._read_inbox()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Storage unavailable: what was not read stays stored; the next wake or poll tries again.
                log.warning("cluster: could not read pending events of held partitions: %s", exc)
                self._dirty.update(p for p in self.leases if p not in self.draining)
                await asyncio.sleep(0.5)

    async def _read_outbox(self) -> None:
        parts = sorted(p for p in self._outbox_dirty if p in self.leases and p not in self.draining)
        self._outbox_dirty.clear()
        after = 0
        while parts:
            rows = await self.storage.cluster_outbox_pending(parts, after, CLAIM_BATCH)
            for row in rows:
                after = row.seq
                part = event_partition(row.event)
                epoch = self.leases.get(part)
                if epoch is None or part in self.draining or row.event.id in self._outgoing \
                        or row.event.id in self._finished:
                    continue
                self._outgoing[row.event.id] = (part, epoch)
                self.pipeline.queue_claimed_outgoing(row)
            if len(rows) < CLAIM_BATCH:
                return

    async def _read_inbox(self) -> None:
        pipeline = self.pipeline
        while True:
            parts = [p for p in self._dirty if p in self.leases and p not in self.draining]
            self._dirty.clear()
            if not parts:
                return
            room = pipeline.memory_room()
            if room <= 0:
                self._dirty.update(parts)  # read once memory has room (the pipeline wakes us)
                return
            closed = pipeline.bots_not_taking_events()
            cursors = {p: self._cursor.get(p, 0) for p in parts}
            limit = min(CLAIM_BATCH, room)
            generation = self._generation
            claimed = await self.storage.cluster_inbox_pending(cursors, closed, limit)
            if generation != self._generation:
                self._dirty.update(parts)
                continue  # rewound, or leases changed, meanwhile: the partitions concerned are dirty again
            for item in claimed:
                part, row = item.part, item.row
                epoch = self.leases.get(part)
                if epoch is None or part in self.draining:
                    continue
                self._cursor[part] = row.seq
                if not pipeline.knows_bot(row.event.botId):
                    continue  # no such bot here (its folder is gone): the event stays stored
                event_id = row.event.id
                if event_id in self._incoming or event_id in self._finished:
                    continue
                self._incoming[event_id] = (part, epoch)
                pipeline.queue_claimed(row)
            if len(claimed) >= limit:
                # More may wait: the partitions that gave a full batch are read again.
                self._dirty.update(parts)

    def wake(self) -> None:
        self._wake.set()

    def _remember_finished(self, event_id: str, part: int) -> None:
        now = time.monotonic()
        self._finished[event_id] = (part, now)
        while self._finished:
            oldest, (_, at) = next(iter(self._finished.items()))
            if now - at < FINISHED_MEMORY_SECONDS and len(self._finished) < 100_000:
                break
            self._finished.pop(oldest)

    def _forget_finished(self, part: int) -> None:
        # A partition taken (again): what was left unfinished here may be pending again, and is read.
        for event_id in [e for e, (p, _) in self._finished.items() if p == part]:
            del self._finished[event_id]

    def status(self) -> dict[str, int]:
        return {"partitions": len(self.leases), "incoming": len(self._incoming), "outgoing": len(self._outgoing)}
