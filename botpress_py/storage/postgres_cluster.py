"""Cluster mode's SQL (docs/cluster.md): nodes, partition leases, claims by partition, fencing, broadcast.

A mixin of PostgresStorage. Conversations are hashed into ``CLUSTER_PARTITIONS`` partitions (the
``part`` column of inbox and outbox, computed by the database with the same md5 as ``partition_of``);
each partition is leased to one live node. Every time comes from the database's clock, so that
nodes whose clocks disagree still agree on who is alive.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from ..events import IOEvent
from .base import OutboxRow, PendingEvent
from .common import readable_rows
from .migrations import CLUSTER_PARTITIONS
from .postgres_statements import OUTBOX_COLUMNS, outbox_row

_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"
# Lease rows are always locked in partition order (completions lock theirs FOR SHARE the same way): a
# takeover and a completion wait for each other, never deadlock.
_LOCK_IN_ORDER = "SELECT part FROM cluster_partitions WHERE {where} ORDER BY part FOR UPDATE"


def partition_of(bot_id: str, channel: str, thread_id: str | None, user_id: str) -> int:
    """The partition of a conversation: what the ``part`` column of inbox and outbox holds."""
    key = "\x1f".join((bot_id, channel, thread_id or "", user_id))
    return hashlib.md5(key.encode(), usedforsecurity=False).digest()[0] % CLUSTER_PARTITIONS


def event_partition(event: IOEvent) -> int:
    return partition_of(event.botId, event.channel, event.threadId, event.target)


class LeaseLost(Exception):
    """A completion of an event whose partition this node no longer holds (at the epoch it was claimed):
    another node took it over and processes the event; this node drops its own work on it."""


@dataclass(slots=True)
class NodeRow:
    node_id: str
    host: str
    pid: int
    port: int | None
    started_at: int
    heartbeat_at: int
    state: str
    bots: dict[str, str]


@dataclass(slots=True)
class ClaimedEvent:
    part: int
    row: PendingEvent


# The fence of a completion batch: event id -> (partition, epoch) it was claimed at; None for an
# event not claimed through a partition (nothing to check).
Fence = Callable[[list[str]], dict[str, tuple[int, int]]]


class PostgresCluster:
    if TYPE_CHECKING:
        schema: str | None
        _dsn: str
        query_timeout: float

        def _connection(self) -> Any: ...

        def _transaction(self) -> Any: ...

        async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]: ...

        async def _fail_unreadable(self, table: str, unreadable: list[tuple[str, str]]) -> None: ...

        @property
        def cipher(self) -> Any: ...

    # Set by the cluster node (cluster mode only): inserts lock their partitions and notify their owners;
    # completions check their partitions' leases.
    cluster_inserts: bool = False
    cluster_fence: Fence | None = None

    @property
    def cluster_lock_space(self) -> int:
        """The first key of this schema's advisory locks (schemas of one database never share locks)."""
        return zlib.crc32((self.schema or "public").encode()) & 0x7FFFFFFF

    @property
    def cluster_channel(self) -> str:
        """The LISTEN/NOTIFY channel of this schema's cluster."""
        return f"bp_cluster_{self.cluster_lock_space:08x}"

    # -- on the path of events (called from postgres.py inside its transactions) -------------------
    # The inbox insert's partition locks and notifications are part of its one statement
    # (postgres.py, _INSERT_INBOX_LOCKED_SQL).
    async def cluster_check_fence(self, conn: asyncpg.Connection, event_ids: list[str]) -> None:
        """Refuse (LeaseLost) a completion batch holding an event claimed under a lease this node lost.

        The lease rows are locked FOR SHARE until commit: a takeover (an UPDATE of the row) waits
        for this commit, and reads the partition's pending events only after it.
        """
        if self.cluster_fence is None:
            return
        claims = self.cluster_fence(event_ids)
        if not claims:
            return
        parts = sorted({part for part, _ in claims.values()})
        rows = await conn.fetch("SELECT part, epoch FROM cluster_partitions WHERE part = ANY($1::smallint[])"
                                " ORDER BY part FOR SHARE", parts)
        epochs = {int(r["part"]): int(r["epoch"]) for r in rows}
        lost = [event_id for event_id, (part, epoch) in claims.items() if epochs.get(part) != epoch]
        if lost:
            raise LeaseLost(f"{len(lost)} event(s) belong to partitions another node took over: {lost[:3]}")

    # -- nodes -------------------------------------------------------------------------------------
    async def cluster_register(self, node_id: str, host: str, pid: int, port: int | None) -> int:
        """Add this node (live); returns the database's time (ms)."""
        async with self._connection() as conn:
            return int(await conn.fetchval(
                f"INSERT INTO cluster_nodes (node_id, host, pid, port, started_at, heartbeat_at, state)"
                f" VALUES ($1, $2, $3, $4, {_NOW_MS}, {_NOW_MS}, 'live') ON CONFLICT (node_id) DO UPDATE SET"
                f" heartbeat_at = excluded.heartbeat_at, state = 'live' RETURNING heartbeat_at",
                node_id, host, pid, port))

    async def cluster_heartbeat(self, node_id: str, bots: dict[str, str] | None) -> int:
        """This node is alive (and its bots' states, when they changed); returns the database's time (ms)."""
        async with self._connection() as conn:
            if bots is None:
                now = await conn.fetchval(f"UPDATE cluster_nodes SET heartbeat_at = {_NOW_MS}, state = 'live'"
                                          " WHERE node_id = $1 RETURNING heartbeat_at", node_id)
            else:
                now = await conn.fetchval(f"UPDATE cluster_nodes SET heartbeat_at = {_NOW_MS}, state = 'live',"
                                          " bots = $2 WHERE node_id = $1 RETURNING heartbeat_at",
                                          node_id, json.dumps(bots))
        if now is None:  # removed by hand (or a purge of gone nodes): register again
            raise LookupError(node_id)
        return int(now)

    async def cluster_nodes(self) -> tuple[int, list[NodeRow]]:
        """(the database's time, every node known), oldest first."""
        async with self._connection() as conn:
            now = int(await conn.fetchval(f"SELECT {_NOW_MS}"))
            rows = await conn.fetch("SELECT * FROM cluster_nodes ORDER BY started_at, node_id")
        return now, [NodeRow(r["node_id"], r["host"], int(r["pid"]), r["port"], int(r["started_at"]),
                             int(r["heartbeat_at"]), r["state"], json.loads(r["bots"] or "{}")) for r in rows]

    async def cluster_leave(self, node_id: str) -> None:
        """A node that stops: its partitions are free at once (after its work drained) and it shows as gone."""
        async with self._transaction() as conn:
            await conn.execute(
                f"WITH locked AS ({_LOCK_IN_ORDER.format(where='owner = $1')})"
                f" UPDATE cluster_partitions c SET owner = NULL, epoch = c.epoch + 1, since = {_NOW_MS}"
                " FROM locked WHERE c.part = locked.part", node_id)
            await conn.execute("UPDATE cluster_nodes SET state = 'stopped' WHERE node_id = $1", node_id)

    async def cluster_forget_nodes(self, older_than_ms: int) -> None:
        """Drop nodes gone for long (a restarted node registers under a new id)."""
        await self._fetch(f"DELETE FROM cluster_nodes WHERE heartbeat_at < {_NOW_MS} - $1::bigint", older_than_ms)

    # -- leases ------------------------------------------------------------------------------------
    async def cluster_balance(self, node_id: str, timeout_ms: int) -> tuple[dict[int, int], int]:
        """Take free partitions (no owner, or an owner whose heartbeat is older than ``timeout_ms``) up to
        this node's fair share. Returns (the partitions this node holds -> epoch, its fair share).

        Serialised across nodes by an advisory lock, so two nodes never take the same partition in
        one round; the epoch grows at every change of owner.
        """
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1::int, -1)", self.cluster_lock_space)
            now = int(await conn.fetchval(f"SELECT {_NOW_MS}"))
            live = [r["node_id"] for r in await conn.fetch(
                "SELECT node_id FROM cluster_nodes WHERE state = 'live' AND heartbeat_at >= $1"
                " ORDER BY started_at, node_id", now - timeout_ms)]
            if node_id not in live:
                live.append(node_id)
            rows = await conn.fetch("SELECT part, owner, epoch FROM cluster_partitions ORDER BY part")
            share = fair_share(live, node_id)
            mine = {int(r["part"]): int(r["epoch"]) for r in rows if r["owner"] == node_id}
            free = [int(r["part"]) for r in rows if r["owner"] not in live]
            take = free[:max(0, share - len(mine))]
            if take:
                taken = await conn.fetch(
                    f"WITH locked AS ({_LOCK_IN_ORDER.format(where='part = ANY($3::smallint[])')})"
                    " UPDATE cluster_partitions c SET owner = $1, epoch = c.epoch + 1, since = $2"
                    " FROM locked WHERE c.part = locked.part RETURNING c.part, c.epoch", node_id, now, take)
                mine.update({int(r["part"]): int(r["epoch"]) for r in taken})
        return mine, share

    async def cluster_release(self, node_id: str, parts: list[int]) -> None:
        """Give partitions back (this node holds more than its share, and their work in memory is done)."""
        if parts:
            await self._fetch(
                f"WITH locked AS ({_LOCK_IN_ORDER.format(where='owner = $1 AND part = ANY($2::smallint[])')})"
                f" UPDATE cluster_partitions c SET owner = NULL, epoch = c.epoch + 1, since = {_NOW_MS}"
                " FROM locked WHERE c.part = locked.part", node_id, parts)

    # -- claims ------------------------------------------------------------------------------------
    async def cluster_inbox_pending(self, cursors: dict[int, int], closed_bots: list[str],
                                    limit: int) -> list[ClaimedEvent]:
        """Pending incoming events of these partitions past each one's cursor (seq), but those of the bots
        that take no events now (their backlog stays in storage until they do), ascending seq."""
        if not cursors:
            return []
        parts = list(cursors)
        rows = await self._fetch(
            "SELECT i.event_id, i.event, i.seq, i.attempts, i.part FROM inbox i"
            " JOIN unnest($1::int[], $2::bigint[]) AS c(p, s) ON i.part = c.p AND i.seq > c.s"
            " WHERE i.status = 'pending' AND NOT (i.bot_id = ANY($3::text[])) ORDER BY i.seq LIMIT $4",
            parts, [cursors[p] for p in parts], closed_bots, limit)
        events, unreadable = readable_rows([(r["event_id"], r["event"], (r["seq"], r["attempts"], r["part"]))
                                            for r in rows], self.cipher)
        await self._fail_unreadable("inbox", unreadable)
        return [ClaimedEvent(int(part), PendingEvent(int(seq), event, int(attempts)))
                for event, (seq, attempts, part) in events]

    async def cluster_outbox_pending(self, parts: list[int], after_seq: int, limit: int) -> list[OutboxRow]:
        """Pending outgoing events of these partitions with seq > after_seq, ascending seq."""
        if not parts:
            return []
        rows = await self._fetch(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND part = ANY($1::smallint[])"
            " AND seq > $2 ORDER BY seq LIMIT $3", parts, after_seq, limit)
        good, unreadable = readable_rows([(r["event_id"], r["event"], r) for r in rows], self.cipher)
        await self._fail_unreadable("outbox", unreadable)
        return [outbox_row(event, row, self.cipher) for event, row in good]

    # -- broadcast and cluster-wide locks ---------------------------------------------------------
    async def cluster_notify(self, payload: str) -> None:
        await self._fetch("SELECT pg_notify($1, $2)", self.cluster_channel, payload)

    async def cluster_listen(self, callback: Callable[[str], None]) -> ClusterListener:
        """A connection of its own that LISTENs to the cluster's channel."""
        conn = await asyncpg.connect(self._dsn, timeout=self.query_timeout)

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        try:
            await conn.add_listener(self.cluster_channel, on_notify)
        except BaseException:
            await conn.close()
            raise
        return ClusterListener(conn)

    @asynccontextmanager
    async def cluster_lock(self, name: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """Hold a cluster-wide lock (a session advisory lock on one pooled connection) while the body runs.

        Yields True once held; with ``wait=False`` yields False at once when another holds it.
        """
        key = zlib.crc32(name.encode()) & 0x7FFFFFFF
        async with self._connection() as conn:
            # Session state on a pooled connection: the pool's reset does not clear it (postgres.py,
            # _reset_connection), so whatever could not be undone ends the connection instead.
            held = False
            lifted = True
            try:
                # Waiting for the holder is not bounded by queryTimeout: once-only work may take long.
                await conn.execute("SET statement_timeout = 0; SET lock_timeout = 0")
                if wait:
                    held = True  # before asking: a cancelled wait may still have been granted
                    await conn.execute("SELECT pg_advisory_lock($1::int, $2::int)", self.cluster_lock_space, key)
                else:
                    held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)",
                                                    self.cluster_lock_space, key))
                yield held
            finally:
                try:
                    if held:
                        await conn.execute("SELECT pg_advisory_unlock($1::int, $2::int)", self.cluster_lock_space,
                                           key)
                        held = False
                    await conn.execute("RESET statement_timeout; RESET lock_timeout")
                    lifted = False
                finally:
                    if held or lifted:
                        conn.terminate()


class ClusterListener:
    """The LISTEN connection of a node."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    def is_closed(self) -> bool:
        return self._conn.is_closed()

    async def close(self) -> None:
        if not self._conn.is_closed():
            await self._conn.close(timeout=5)


def fair_share(live: list[str], node_id: str) -> int:
    """How many partitions ``node_id`` should hold among ``live`` nodes (oldest first get the remainder)."""
    count = max(1, len(live))
    base, extra = divmod(CLUSTER_PARTITIONS, count)
    index = live.index(node_id) if node_id in live else count - 1
    return base + (1 if index < extra else 0) if extra else base

