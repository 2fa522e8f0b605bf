"""The storage contract, both backends: the event loop stays free, and group commits merge, split and flush."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from botpress_py.storage import (
    STORED_AS_FAILED,
    Completion,
    GroupCommitCompletions,
    GroupCommitInbox,
    PostgresStorage,
    SQLiteStorage,
    Storage,
)

from .backend_kit import InjectedFault, counting, failing_while_broken, incoming, outgoing, pending_ids, refusing_once

if TYPE_CHECKING:
    from conftest import Backend  # the fixture's type; conftest is not importable at run time


# -- the event loop stays free ------------------------------------------------------------------------


async def test_a_slow_query_does_not_block_the_event_loop(backend: Backend, storage: Storage) -> None:
    # Reaches into the backend's own query helper: the point is that *its* path runs off the loop.
    if isinstance(storage, SQLiteStorage):
        slow = storage._fetchall(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) SELECT count(*) FROM c"
        )
    else:
        assert isinstance(storage, PostgresStorage)
        slow = storage._fetch("SELECT pg_sleep(0.3)")
    started = time.monotonic()
    query = asyncio.create_task(slow)
    ticks = 0
    while not query.done():
        ticks += 1
        await asyncio.sleep(0.001)
    await query
    elapsed = time.monotonic() - started
    assert elapsed > 0.05, "the query was too fast to tell anything"
    # A blocked loop would get at most one tick in before the query finished.
    assert ticks >= 10


# -- group commit ---------------------------------------------------------------------------------------


async def test_group_commit_merges_concurrent_adds_into_one_transaction(backend: Backend) -> None:
    storage = await backend.open(counting(backend.storage_class))
    assert await storage.inbox_add([incoming(dedupe="k3")]) == [True]
    storage.add_calls.clear()
    inbox = GroupCommitInbox(storage, window_ms=1.0)

    # Callers 25..49 repeat the keys of callers 0..24; k3 was stored before.
    batches = [[incoming(f"user-{i}", f"k{i % 25}"), incoming(f"user-{i}")] for i in range(50)]
    results = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches)), 10)

    assert storage.add_calls == [100]
    assert results == [[i < 25 and i != 3, True] for i in range(50)]
    assert len(await storage.inbox_pending()) == 1 + 24 + 50
    await inbox.close()


async def test_group_commit_respects_max_batch(backend: Backend) -> None:
    storage = await backend.open(counting(backend.storage_class))
    inbox = GroupCommitInbox(storage, window_ms=1.0, max_batch=10)

    results = await asyncio.wait_for(asyncio.gather(*(inbox.add([incoming(f"u{i}")]) for i in range(50))), 10)
    assert results == [[True]] * 50
    assert storage.add_calls == [10] * 5

    # One caller bigger than max_batch still goes in one piece.
    storage.add_calls.clear()
    assert await inbox.add([incoming(f"v{i}") for i in range(25)]) == [True] * 25
    assert storage.add_calls == [25]
    await inbox.close()
    with pytest.raises(ValueError):
        GroupCommitInbox(storage, max_batch=0)


async def test_group_commit_retries_a_failed_transaction_in_halves(backend: Backend) -> None:
    storage = await backend.open(refusing_once(backend.storage_class))
    inbox = GroupCommitInbox(storage, window_ms=1.0)
    batches = [[incoming(f"user-{i}", f"mid.{i}")] for i in range(20)]

    # The shared transaction fails once, for a reason that might be one of its events: its
    # halves are committed instead, and they go in.
    results = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches)), 10)
    assert results == [[True]] * 20
    assert storage.add_calls == [20, 10, 10]
    assert len(await storage.inbox_pending()) == 20
    await inbox.close()


async def test_group_commit_gives_a_storage_failure_to_every_waiter_at_once(backend: Backend) -> None:
    storage = await backend.open(failing_while_broken(backend.storage_class))
    inbox = GroupCommitInbox(storage, window_ms=1.0)
    batches = [[incoming(f"user-{i}", f"mid.{i}")] for i in range(20)]

    results = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches), return_exceptions=True), 10)
    assert all(isinstance(r, InjectedFault) for r in results), results
    # A broken disk says nothing about the events: not split (that would fail 39 times), not kept.
    assert storage.add_calls == [20]
    assert await storage.inbox_pending() == []
    assert await backend.query("SELECT count(*) FROM inbox") == [(0,)]  # not even as failed events

    # The committer carries on: once the disk is back, the redelivery is stored, and as new events.
    storage.broken = False
    retried = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches)), 10)
    assert retried == [[True]] * 20
    assert len(await storage.inbox_pending()) == 20
    await inbox.close()


async def test_group_commit_fails_only_the_event_the_database_refuses(backend: Backend, storage: Storage) -> None:
    inbox = GroupCommitInbox(storage, window_ms=1.0)
    poison = incoming("bad", "mid.bad")
    poison.target = None  # type: ignore[assignment]  # violates NOT NULL inside the transaction
    batches = [[incoming(f"user-{i}", f"mid.{i}")] for i in range(5)] + [[poison]]

    results = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches), return_exceptions=True), 10)
    # The others are stored; the poison, sanitised, is kept as a failed event for an operator.
    assert results == [[True]] * 5 + [[STORED_AS_FAILED]]
    assert len(await storage.inbox_pending()) == 5
    [failed] = await storage.failed_events("incoming")
    assert failed.event.id == poison.id and failed.event.target == "unknown"
    assert failed.error is not None and failed.error.startswith("could not be stored as received")
    # Its redelivery is recognised (same dedupe key) and not stored twice.
    again = incoming("bad", "mid.bad")
    again.target = None  # type: ignore[assignment]
    assert await inbox.add([again]) == [False]
    assert await backend.query("SELECT count(*) FROM inbox WHERE status = 'failed'") == [(1,)]
    await inbox.close()


async def test_group_commit_close_flushes_waiting_callers(storage: Storage) -> None:
    inbox = GroupCommitInbox(storage, window_ms=60_000)  # only close() can make this commit in time
    adds = [asyncio.create_task(inbox.add([incoming(f"user-{i}")])) for i in range(5)]
    await asyncio.sleep(0)  # let the tasks queue their events
    await asyncio.wait_for(inbox.close(), 5)

    assert [task.result() for task in adds] == [[True]] * 5
    assert len(await storage.inbox_pending()) == 5
    with pytest.raises(RuntimeError, match="closed"):
        await inbox.add([incoming()])


async def test_inbox_complete_marks_and_stores_replies_in_one_transaction(backend: Backend, storage: Storage) -> None:
    events = [incoming(dedupe=f"mid.{i}") for i in range(3)]
    await storage.inbox_add(events)
    replies = [outgoing(text="a"), outgoing(text="b")]
    seqs = await storage.inbox_complete([
        Completion(events[0].id, "done", None, replies),
        Completion(events[1].id, "error", "bot crashed", []),
    ])
    assert [len(s) for s in seqs] == [2, 0] and seqs[0][0] < seqs[0][1]
    assert await pending_ids(storage) == [events[2].id]
    assert [r.event.payload["text"] for r in await storage.outbox_pending()] == ["a", "b"]
    rows = await backend.query("SELECT status, error FROM inbox ORDER BY seq")
    assert [tuple(r) for r in rows] == [("done", None), ("error", "bot crashed"), ("pending", None)]


async def test_inbox_complete_is_all_or_nothing(storage: Storage) -> None:
    event = incoming(dedupe="mid.x")
    await storage.inbox_add([event])
    first = outgoing(text="first")
    await storage.outbox_add([first])
    clash = outgoing(text="same id as an existing outbox row")
    clash.id = first.id  # the unique event_id makes the insert fail inside the transaction
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own integrity error
        await storage.inbox_complete([Completion(event.id, "done", None, [outgoing(text="ok"), clash])])
    assert await pending_ids(storage) == [event.id]  # not marked: it will replay
    assert [r.event.payload["text"] for r in await storage.outbox_pending()] == ["first"]
    with pytest.raises(ValueError, match="status"):
        await storage.inbox_complete([Completion(event.id, "pending")])


async def test_group_commit_completions_merge_concurrent_workers(backend: Backend) -> None:
    storage = await backend.open(counting(backend.storage_class))
    events = [incoming(dedupe=f"mid.{i}") for i in range(30)]
    await storage.inbox_add(events)
    committer = GroupCommitCompletions(storage, window_ms=1.0)
    results = await asyncio.gather(*(
        committer.add([Completion(e.id, "done", None, [outgoing(text=f"r{i}")])]) for i, e in enumerate(events)))
    assert all(len(r) == 1 and len(r[0]) == 1 for r in results)
    assert len(storage.complete_calls) < 10  # 30 workers, a handful of transactions
    assert await pending_ids(storage) == []
    await committer.close()


async def test_error_reasons_quoting_user_text_are_stored(backend: Backend, storage: Storage) -> None:
    received, sent = incoming(), outgoing()
    await storage.inbox_add([received])
    await storage.outbox_add([sent])
    reason = "could not parse 'a\x00b \ud800'"
    await storage.inbox_done([received.id], status="error", error=reason)
    await storage.outbox_update(sent.id, status="failed", attempts=1, error=reason)

    assert await storage.inbox_pending() == []
    (stored_reason,) = await backend.query("SELECT error FROM inbox")
    assert stored_reason[0].startswith("could not parse 'ab ")
    row = await storage.outbox_get(sent.id)
    assert row is not None and row.status == "failed" and row.error == stored_reason[0]


async def test_group_commit_stores_the_events_of_a_caller_that_gave_up(storage: Storage) -> None:
    inbox = GroupCommitInbox(storage, window_ms=60_000)
    adds = [asyncio.create_task(inbox.add([incoming(f"user-{i}", f"mid.{i}")])) for i in range(3)]
    await asyncio.sleep(0)  # let the tasks queue their events
    adds[1].cancel()
    await inbox.close()

    assert adds[0].result() == [True] and adds[2].result() == [True]
    assert adds[1].cancelled()
    # Already stored: the channel's redelivery of the abandoned request is a duplicate.
    assert len(await storage.inbox_pending()) == 3
    assert await storage.inbox_add([incoming("user-1", "mid.1")]) == [False]
