"""Writes of a whole group commit in a few statements: order, merging and repeats, on both backends.

PostgreSQL stores a batch's inbox marks, sent marks, history rows and conversations with one
statement each (arrays); these check that the result is what one statement per row gave.
"""

from __future__ import annotations

import asyncio

import pytest

from botpress_py.events import IOEvent
from botpress_py.storage import Completion, SentMark, Storage
from botpress_py.testing import wait_for

from .conftest import Backend


def event(target: str, text: str, created: int, direction: str = "outgoing") -> IOEvent:
    made = IOEvent(type="text", channel="messenger", direction=direction, botId="bot-a", target=target,
                   threadId="page-1", payload={"type": "text", "text": text}, preview=text)
    made.createdOn = created
    return made


async def test_a_batch_of_sent_marks_keeps_history_order_and_each_conversation_latest(storage: Storage) -> None:
    # Interleaved conversations, and times that do not follow the list (clocks of two senders).
    events = [event(f"user-{i % 2}", f"reply {i}", 5_000 - i * 10 if i % 2 else 1_000 + i) for i in range(8)]
    await storage.outbox_add(events)
    await storage.outbox_sent_many([SentMark(e, 1, f"m.{i}", e) for i, e in enumerate(events)])
    assert await storage.outbox_pending() == []
    for user in ("user-0", "user-1"):
        mine = [e for e in events if e.target == user]
        history = await storage.messages_for("bot-a", "messenger", user)
        assert [m["id"] for m in history] == [e.id for e in mine]  # list order, not time order
        assert await storage.conversation_last_event("bot-a", "messenger", "page-1", user) == max(
            e.createdOn for e in mine)


async def test_a_repeated_mark_in_one_batch_is_applied_in_order(backend: Backend, storage: Storage) -> None:
    first, other = event("user-1", "a", 1_000), event("user-1", "b", 1_001)
    await storage.outbox_add([first, other])
    await storage.outbox_sent_many([SentMark(first, 1, "m.1", first), SentMark(other, 1, None, other),
                                    SentMark(first, 2, None, first)])
    got = await storage.outbox_get(first.id)
    assert got is not None and (got.status, got.attempts) == ("sent", 2)
    # The second mark had no channel id: the first one's is kept, as one statement per mark did.
    assert await backend.query(f"SELECT channel_message_id FROM outbox WHERE event_id = '{first.id}'") == [("m.1",)]
    history = await storage.messages_for("bot-a", "messenger", "user-1")
    assert [(m["id"], m["channelMessageId"]) for m in history] == [(first.id, "m.1"), (other.id, None)]


async def test_completions_of_one_batch_each_get_their_status_error_and_replies(backend: Backend,
                                                                               storage: Storage) -> None:
    incoming = [event(f"user-{i}", f"q{i}", 2_000 + i, "incoming") for i in range(4)]
    await storage.inbox_add(incoming)
    seqs = await storage.inbox_complete([
        Completion(incoming[0].id, "done", None, [event("user-0", "r0", 3_000)], message=incoming[0]),
        Completion(incoming[1].id, "error", "it broke", [], message=incoming[1]),
        Completion(incoming[2].id, "done", None, [event("user-2", "r2a", 3_001), event("user-2", "r2b", 3_002)],
                   message=incoming[2]),
    ])
    assert [len(s) for s in seqs] == [1, 0, 2] and seqs[0][0] < seqs[2][0] < seqs[2][1]
    rows = await backend.query("SELECT event_id, status, error FROM inbox ORDER BY seq")
    assert [tuple(r) for r in rows] == [(incoming[0].id, "done", None), (incoming[1].id, "error", "it broke"),
                                        (incoming[2].id, "done", None), (incoming[3].id, "pending", None)]
    assert [r.event.payload["text"] for r in await storage.outbox_pending()] == ["r0", "r2a", "r2b"]
    assert [m["id"] for m in await storage.messages_for("bot-a", "messenger", "user-1")] == [incoming[1].id]


async def test_a_cluster_insert_draws_its_seqs_only_after_its_partitions_lock_and_notifies(backend: Backend) -> None:
    """The cluster's ordering argument (docs/cluster.md): seqs of a partition become visible in order."""
    if backend.name != "postgres":
        pytest.skip("cluster mode is PostgreSQL's")
    import asyncpg

    from botpress_py.storage import PostgresStorage
    from botpress_py.storage.postgres_cluster import event_partition

    storage = await backend.open()
    assert isinstance(storage, PostgresStorage)
    storage.cluster_inserts = True
    first = event("user-1", "hello", 1_000, "incoming")
    part = event_partition(first)
    location = backend._location
    holder = await asyncpg.connect(location["dsn"], server_settings={"search_path": f'"{location["schema"]}"'})
    listener = await asyncpg.connect(location["dsn"])
    heard: list[str] = []
    await listener.add_listener(storage.cluster_channel, lambda *args: heard.append(args[-1]))
    try:
        holder_tx = holder.transaction()
        await holder_tx.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", storage.cluster_lock_space, part)
        adding = asyncio.ensure_future(storage.inbox_add([first]))
        await asyncio.sleep(0.3)  # let the insert reach the lock (it must wait there, not finish)
        assert not adding.done()
        # A number drawn while the insert waits: the insert's own must come after it.
        drawn = await holder.fetchval("SELECT nextval(pg_get_serial_sequence('inbox', 'seq'))")
        await holder_tx.commit()
        assert await asyncio.wait_for(adding, 10) == [True]
        [(seq,)] = await backend.query(f"SELECT seq FROM inbox WHERE event_id = '{first.id}'")
        assert seq > drawn
        await wait_for(lambda: heard, 5)
        assert heard == [f"inbox:{part}"]
    finally:
        await holder.close()
        await listener.close()
