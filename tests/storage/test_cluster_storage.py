"""Cluster mode's storage (PostgreSQL only): the partition column agrees with Python's, leases are balanced
and taken over from gone nodes with a new epoch, and a completion fenced by an old epoch is refused."""

from __future__ import annotations

import random
import string

import pytest

from botpress_py.events import IOEvent
from botpress_py.storage import Completion, PostgresStorage
from botpress_py.storage.migrations import CLUSTER_PARTITIONS
from botpress_py.storage.postgres_cluster import LeaseLost, event_partition

from .conftest import Backend


@pytest.fixture
async def pg(backend: Backend) -> Backend:
    if backend.name != "postgres":
        pytest.skip("cluster mode is PostgreSQL only")
    return backend


def event(user: str, bot: str = "b", thread: str | None = None) -> IOEvent:
    return IOEvent(type="text", channel="messenger", direction="incoming", botId=bot, target=user,
                   threadId=thread, payload={"type": "text", "text": "hi"})


async def test_the_partition_column_is_the_partition_python_computes(pg: Backend) -> None:
    storage = await pg.open()
    rng = random.Random(7)
    events = [event("".join(rng.choices(string.printable, k=rng.randint(1, 20))), bot=f"bot-{i % 5}",
                    thread=rng.choice([None, "", "page-1", "ünïcode"])) for i in range(300)]
    await storage.inbox_add(events)
    stored = dict(await pg.query("SELECT event_id, part FROM inbox"))
    assert {e.id: event_partition(e) for e in events} == stored
    assert len(set(stored.values())) > CLUSTER_PARTITIONS // 2  # spread over the partitions


async def test_leases_are_shared_fairly_and_a_gone_node_is_taken_over_with_a_new_epoch(pg: Backend) -> None:
    a = await pg.open()
    b = await pg.open()
    assert isinstance(a, PostgresStorage) and isinstance(b, PostgresStorage)
    await a.cluster_register("node-a", "h", 1, 3001)
    held_a, share_a = await a.cluster_balance("node-a", 5000)
    assert len(held_a) == CLUSTER_PARTITIONS and share_a == CLUSTER_PARTITIONS  # alone: everything
    await b.cluster_register("node-b", "h", 2, 3002)
    held_b, share_b = await b.cluster_balance("node-b", 5000)
    assert (held_b, share_b) == ({}, CLUSTER_PARTITIONS // 2)  # all taken: b waits for a to give some back
    await a.cluster_release("node-a", sorted(held_a)[CLUSTER_PARTITIONS // 2:])
    held_b, _ = await b.cluster_balance("node-b", 5000)
    assert len(held_b) == CLUSTER_PARTITIONS // 2
    # a stops heartbeating: b takes its partitions, each with a new epoch
    await pg.query("UPDATE cluster_nodes SET heartbeat_at = heartbeat_at - 3600000 WHERE node_id = 'node-a'"
                   " RETURNING node_id")
    held_b, share_b = await b.cluster_balance("node-b", 5000)
    assert share_b == CLUSTER_PARTITIONS and len(held_b) == CLUSTER_PARTITIONS
    assert all(held_b[p] == epoch + 1 for p, epoch in held_a.items() if p not in sorted(held_a)[32:])
    _, nodes = await b.cluster_nodes()
    assert [n.node_id for n in nodes] == ["node-a", "node-b"]


async def test_a_completion_under_a_lost_lease_is_refused_and_the_new_owner_completes(pg: Backend) -> None:
    a = await pg.open()
    b = await pg.open()
    assert isinstance(a, PostgresStorage) and isinstance(b, PostgresStorage)
    await a.cluster_register("node-a", "h", 1, None)
    held_a, _ = await a.cluster_balance("node-a", 5000)
    e = event("u1")
    part = event_partition(e)
    a.cluster_inserts = True
    assert await a.inbox_add([e]) == [True]
    a.cluster_fence = lambda ids: {i: (part, held_a[part]) for i in ids}
    await pg.query("UPDATE cluster_nodes SET heartbeat_at = 0 WHERE node_id = 'node-a' RETURNING node_id")
    await b.cluster_register("node-b", "h", 2, None)
    held_b, _ = await b.cluster_balance("node-b", 5000)
    assert held_b[part] == held_a[part] + 1
    with pytest.raises(LeaseLost):
        await a.inbox_complete([Completion(e.id, outgoing=[e.reply_event({"type": "text", "text": "a"})])])
    assert await pg.query("SELECT status FROM inbox") == [("pending",)]
    assert await pg.query("SELECT count(*) FROM outbox") == [(0,)]
    b.cluster_fence = lambda ids: {i: (part, held_b[part]) for i in ids}
    await b.inbox_complete([Completion(e.id, outgoing=[e.reply_event({"type": "text", "text": "b"})])])
    assert await pg.query("SELECT status FROM inbox") == [("done",)]
    assert [row.event.payload["text"] for row in await b.cluster_outbox_pending([part], 0, 10)] == ["b"]
