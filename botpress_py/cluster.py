"""Cluster mode: one node among several sharing a PostgreSQL database (docs/cluster.md).

A node registers in ``cluster_nodes`` and heartbeats; every heartbeat it takes free partitions
(no owner, or an owner whose heartbeat is older than ``cluster.nodeTimeout``) up to its fair
share and gives back those above it once their work in memory is done (cluster_claims.py reads
and claims the events of the partitions it holds). It LISTENs to the cluster's channel: inserts
wake the owners of their partitions, and enable / disable / reload of a bot made through the
admin API of any node is applied by every node. Only PostgreSQL: LISTEN/NOTIFY, advisory locks
and row locks are all this needs (docs/cluster.md says why there is no Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from .bots import BotRegistry
from .cluster_claims import ClusterClaims
from .config.server_config import parse_duration
from .context import ConfigProblem
from .gate import BotGate
from .pipeline import EventPipeline
from .storage import PostgresStorage, Storage
from .storage.postgres_cluster import ClusterListener, fair_share

log = logging.getLogger("botpress_py.cluster")

# Nodes whose heartbeat is older than this are no longer listed (a restarted node has a new id).
FORGET_GONE_AFTER_MS = 24 * 3600 * 1000
STATUS_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    enabled: bool
    heartbeat: float  # seconds
    node_timeout: float  # seconds

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> ClusterSettings:
        cluster = data.get("cluster", {}) or {}
        return cls(bool(cluster.get("enabled", False)), parse_duration(cluster.get("heartbeatInterval", "1s")),
                   parse_duration(cluster.get("nodeTimeout", "5s")))


def cluster_refusal(settings: ClusterSettings, env: Mapping[str, str], config_file: str) -> ConfigProblem | None:
    """Why this server cannot start in cluster mode (None when it can, or cluster mode is off)."""
    if not settings.enabled:
        return None
    url = env.get("DATABASE_URL", "").strip()
    where = "env CLUSTER_ENABLED" if env.get("CLUSTER_ENABLED", "").strip() else f"{config_file} cluster.enabled"
    if not url:
        return ConfigProblem(where, "", "cluster mode needs PostgreSQL shared by every node, but DATABASE_URL is "
                             "not set (SQLite is one process's file)",
                             "set DATABASE_URL=postgresql://user:password@host:5432/database (and "
                             "BP_DATABASE_SCHEMA to use a schema of its own), or turn cluster mode off")
    if settings.heartbeat >= settings.node_timeout:
        return ConfigProblem(where, "", "cluster.heartbeatInterval must be shorter than cluster.nodeTimeout, or "
                             "live nodes would be taken for gone", "e.g. heartbeatInterval 1s, nodeTimeout 5s")
    return None


class ClusterNode:
    """This server as a node of the cluster: registration, heartbeats, leases, broadcast, status."""

    def __init__(self, storage: Storage, pipeline: EventPipeline, gate: BotGate, registry: BotRegistry,
                 settings: ClusterSettings, port: int | None) -> None:
        if not isinstance(storage, PostgresStorage):
            raise TypeError("cluster mode needs PostgreSQL storage")
        self.storage: PostgresStorage = storage
        self.registry = registry
        self.settings = settings
        self.port = port
        self.host = socket.gethostname()
        self.node_id = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.claims = ClusterClaims(storage, pipeline, gate)
        self.claims.on_idle = self._wake_heartbeat
        pipeline.cluster = self.claims
        self.share = 0
        self._beat = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: ClusterListener | None = None
        self._last_ok = time.monotonic()
        self._bots_sent: dict[str, str] | None = None
        self._applying: set[asyncio.Task[Any]] = set()
        self._stopping = False  # draining: heartbeat on (the partitions stay ours), take nothing new

    async def start(self) -> None:
        """Register and take a first share of partitions (before serving: events are read at once)."""
        storage = self.storage
        storage.cluster_fence = self.claims.fence
        storage.cluster_inserts = True
        await storage.cluster_register(self.node_id, self.host, os.getpid(), self.port)
        with contextlib.suppress(Exception):
            await storage.cluster_forget_nodes(FORGET_GONE_AFTER_MS)
        self._listener = await storage.cluster_listen(self._on_notify)
        await self._balance()
        self.claims.start()
        self._task = asyncio.create_task(self._heartbeats(), name="cluster-heartbeat")
        log.info("cluster node %s started, holding %d of the partitions", self.node_id, len(self.claims.leases))

    async def stop(self) -> None:
        """Stop claiming; the pipeline then drains what it holds, still heartbeating (so that its partitions
        are not taken meanwhile), and ``leave`` gives every partition back."""
        self._stopping = True
        await self.claims.stop()
        for pending in list(self._applying):
            pending.cancel()

    async def leave(self) -> None:
        """After the pipeline drained: the others take this node's partitions at their next heartbeat."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        try:
            await self.storage.cluster_leave(self.node_id)
        except Exception as exc:
            log.warning("cluster: could not give the partitions back (%s); others take them after nodeTimeout", exc)

    # -- heartbeats and leases -------------------------------------------------------------------
    def _wake_heartbeat(self) -> None:
        self._beat.set()

    async def _heartbeats(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat.wait(), self.settings.heartbeat)
            self._beat.clear()
            try:
                bots = self._bot_states()
                try:
                    await self.storage.cluster_heartbeat(self.node_id, bots if bots != self._bots_sent else None)
                except LookupError:
                    await self.storage.cluster_register(self.node_id, self.host, os.getpid(), self.port)
                    bots = None
                self._bots_sent = bots if bots is not None else self._bots_sent
                if self._stopping:
                    continue
                await self._balance()
                self._last_ok = time.monotonic()
                await self._keep_listening()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster: heartbeat failed: %s", exc)
                if self.claims.leases and time.monotonic() - self._last_ok > self.settings.node_timeout * 0.8:
                    # Others may think this node is gone and take its partitions: stop working on them
                    # before they do (the fence refuses their completions anyway).
                    log.error("cluster: no heartbeat stored for %.1f s: letting go of every partition",
                              time.monotonic() - self._last_ok)
                    self.claims.lose_all()

    async def _keep_listening(self) -> None:
        """A LISTEN connection that dropped (PostgreSQL restarted) is opened again; meanwhile the claims poll."""
        if self._listener is not None and self._listener.is_closed():
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = await self.storage.cluster_listen(self._on_notify)
            self.claims.rewind(outgoing=True)  # notifications may have been missed
            log.info("cluster: listening again for notifications")

    async def _balance(self) -> None:
        timeout_ms = int(self.settings.node_timeout * 1000)
        held, self.share = await self.storage.cluster_balance(self.node_id, timeout_ms)
        self.claims.set_leases(held)
        # Above the fair share (a node joined): give back the highest partitions, each once idle.
        extra = set(sorted(held)[self.share:]) if len(held) > self.share else set()
        for part in self.claims.draining - extra:
            self.claims.resume(part)  # the share grew again (a node left) before it was given back
        self.claims.draining = extra
        idle = [p for p in sorted(self.claims.draining) if self.claims.idle(p)]
        if idle:
            await self.storage.cluster_release(self.node_id, idle)
            for part in idle:
                self.claims.forget(part)

    def _bot_states(self) -> dict[str, str]:
        return {bot_id: status["state"] for bot_id, status in self.registry.status().items()}

    # -- broadcast ---------------------------------------------------------------------------------
    def _on_notify(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind in ("inbox", "outbox"):
            with contextlib.suppress(ValueError):
                self.claims.notified(kind, int(rest))
        elif kind == "rewind":
            self.claims.rewind(outgoing=rest == "out")
        elif kind == "bot":
            try:
                message = json.loads(rest)
            except ValueError:
                return
            if message.get("from") != self.node_id:
                task = asyncio.create_task(self._apply(message.get("bot"), message.get("action")),
                                           name="cluster-bot-action")
                self._applying.add(task)
                task.add_done_callback(self._applying.discard)

    async def _apply(self, bot_id: Any, action: Any) -> None:
        if not isinstance(bot_id, str) or action not in ("enable", "disable", "reload"):
            return
        if not self.registry.bot_file(bot_id).exists():
            log.warning("cluster: bot %s was %sd on another node but has no folder here", bot_id, action)
            return
        try:
            if action == "reload":
                await self.registry.reload(bot_id)
            else:
                await self.registry.set_disabled(bot_id, action == "disable")
            log.info("cluster: bot %s %sd (by another node)", bot_id, action)
        except Exception:
            log.exception("cluster: could not %s bot %s as another node asked", action, bot_id)

    async def broadcast_bot_action(self, bot_id: str, action: str) -> None:
        """Tell every other node to apply an enable / disable / reload done here."""
        try:
            await self.storage.cluster_notify("bot:" + json.dumps({"bot": bot_id, "action": action,
                                                                   "from": self.node_id}))
        except Exception as exc:
            log.error("cluster: bot %s %sd here, but the other nodes could not be told (%s); they follow a "
                      "shared data folder's edit, otherwise repeat it", bot_id, action, exc)

    # -- /status -----------------------------------------------------------------------------------
    async def status_fields(self) -> dict[str, Any]:
        """What /status adds in cluster mode: ``nodes`` (each with its bots' states) and ``cluster``."""
        try:
            # Bounded: /status must answer (saying what is wrong) while the database does not.
            cluster = await asyncio.wait_for(self.status(), STATUS_TIMEOUT)
        except Exception as exc:
            return {"cluster": {"node": self.node_id,
                                "error": f"cluster state unreadable: {type(exc).__name__}: {exc}"}}
        return {"nodes": cluster.pop("nodes"), "cluster": cluster}

    async def status(self) -> dict[str, Any]:
        now, nodes = await self.storage.cluster_nodes()
        timeout_ms = int(self.settings.node_timeout * 1000)
        live = [n.node_id for n in nodes if n.state == "live" and now - n.heartbeat_at <= timeout_ms]
        out = []
        for node in nodes:
            if node.heartbeat_at < now - FORGET_GONE_AFTER_MS:
                continue
            alive = node.node_id in live
            entry: dict[str, Any] = {
                "id": node.node_id, "host": node.host, "pid": node.pid, "port": node.port,
                "startedAt": node.started_at, "lastHeartbeat": node.heartbeat_at,
                "state": "live" if alive else "gone", "self": node.node_id == self.node_id,
                "bots": self._bot_states() if node.node_id == self.node_id else node.bots,
            }
            if node.node_id == self.node_id:
                entry.update(self.claims.status())
            out.append(entry)
        return {"node": self.node_id, "liveNodes": len(live), "fairShare": fair_share(live, self.node_id),
                "nodes": out}


class ClusterHooks:
    """What the server hands out before it knows whether it runs as a node: cluster-wide locks and the
    broadcast of bot actions in cluster mode, in-process locks and nothing to tell on a single node."""

    def __init__(self) -> None:
        self.node: ClusterNode | None = None
        self.enabled = False  # cluster mode is on (set before the node starts)
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, name: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """``server.cluster_lock(name)`` of the SDK."""
        if self.node is not None:
            return self.node.storage.cluster_lock(name)
        return local_lock(self._locks, name)

    def purge_lock(self) -> contextlib.AbstractAsyncContextManager[bool]:
        if self.node is not None:
            return self.node.storage.cluster_lock("@core:purge", wait=False)
        return local_lock(self._locks, "@core:purge")

    async def bot_action_done(self, bot_id: str, action: str) -> None:
        if self.node is not None:
            await self.node.broadcast_bot_action(bot_id, action)


@contextlib.asynccontextmanager
async def local_lock(locks: dict[str, asyncio.Lock], name: str) -> AsyncIterator[bool]:
    """A one-process stand-in for the cluster lock (a single node has nobody else to exclude)."""
    lock = locks.setdefault(name, asyncio.Lock())
    async with lock:
        yield True
