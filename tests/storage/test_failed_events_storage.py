"""Failed events in storage, and group commits that never share a failure: both backends."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import pytest

from botpress_py.events import IOEvent
from botpress_py.storage import Completion, GroupCommit, GroupCommitCompletions, GroupCommitSent, SentMark, Storage
from botpress_py.storage.common import describe_error, sanitised_event, unserialisable_path
from botpress_py.storage.migrations import LATEST_VERSION

from .backend_kit import Clock, incoming, outgoing, pending_ids

if TYPE_CHECKING:
    from conftest import Backend


# -- group commit: split a failed transaction until only the guilty items fail ------------------------


class Poison(Exception):
    pass


async def test_group_commit_splits_a_failed_batch_so_each_caller_gets_its_own_result() -> None:
    """Many concurrent callers, two poison items: each caller gets its results or its own error."""
    calls: list[int] = []

    async def commit(items: list[int]) -> list[int]:
        calls.append(len(items))
        await asyncio.sleep(0)  # a real commit yields; callers pile up meanwhile
        if any(item < 0 for item in items):
            raise Poison(f"refused {min(items)}")
        return [item * 10 for item in items]

    group: GroupCommit[int, int] = GroupCommit(commit, name="test", max_batch=500)
    callers = [[i, i + 1000] if i % 3 else [i] for i in range(200)]
    callers[57] = [57, -1]  # the poison shares a caller with a good item
    callers[150] = [-2]
    results = await asyncio.gather(*(group.add(items) for items in callers), return_exceptions=True)

    for index, (items, result) in enumerate(zip(callers, results, strict=True)):
        if index in (57, 150):
            assert isinstance(result, Poison) and str(result) == f"refused {min(items)}", (index, result)
        else:
            assert result == [item * 10 for item in items], (index, result)
    # Bisecting costs about two transactions per halving per poison, not one per item.
    assert len(calls) < 2 * 2 * math.ceil(math.log2(sum(map(len, callers)))) + 10, calls
    await group.close()


async def test_group_commit_gives_every_caller_the_error_when_a_commit_returns_the_wrong_count() -> None:
    async def broken(items: list[int]) -> list[int]:
        return items[:-1]  # a bug in the commit function, not a bad item: never split

    group: GroupCommit[int, int] = GroupCommit(broken, name="test")
    results = await asyncio.gather(*(group.add([i]) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "results for" in str(r) for r in results)
    await group.close()


async def test_a_completion_that_fails_alone_fails_only_its_caller(storage: Storage) -> None:
    events = [incoming(f"user-{i}", f"mid.{i}") for i in range(30)]
    await storage.inbox_add(events)
    poison_history = incoming("user-13", created=10**30)  # too big for a 64-bit column
    committer = GroupCommitCompletions(storage)
    completions = [Completion(e.id, "done", None, [outgoing(f"user-{i}", f"r{i}")],
                              message=poison_history if i == 13 else e) for i, e in enumerate(events)]
    results = await asyncio.gather(*(committer.add([c]) for c in completions), return_exceptions=True)

    assert isinstance(results[13], Exception)
    assert all(isinstance(r, list) and len(r[0]) == 1 for i, r in enumerate(results) if i != 13)
    assert await pending_ids(storage) == [events[13].id]  # still pending: the pipeline retries it
    assert sorted(r.event.payload["text"] for r in await storage.outbox_pending()) == sorted(
        f"r{i}" for i in range(30) if i != 13)
    await committer.close()


async def test_a_sent_mark_that_fails_alone_fails_only_its_caller(storage: Storage) -> None:
    events = [outgoing(f"user-{i}", f"r{i}") for i in range(10)]
    await storage.outbox_add(events)
    odd = events[4].copy()
    odd.flags["receipt"] = {1, 2}  # not JSON: its history entry cannot be written
    marks = [SentMark(e, 1, f"m{i}", odd if i == 4 else e) for i, e in enumerate(events)]
    sent = GroupCommitSent(storage)
    results = await asyncio.gather(*(sent.add([m]) for m in marks), return_exceptions=True)
    assert isinstance(results[4], TypeError)
    assert all(r == [None] for i, r in enumerate(results) if i != 4)
    assert [r.event.id for r in await storage.outbox_pending()] == [events[4].id]
    await sent.close()


async def test_only_failures_that_say_nothing_about_the_items_are_transient(backend: Backend,
                                                                            storage: Storage) -> None:
    import sqlite3

    import asyncpg

    assert storage.is_transient_failure(OSError("disk I/O error"))
    assert not storage.is_transient_failure(OverflowError("Python int too large to convert to SQLite INTEGER"))
    assert not storage.is_transient_failure(TypeError("Object of type set is not JSON serializable"))
    if backend.name == "sqlite":
        assert storage.is_transient_failure(sqlite3.OperationalError("database or disk is full"))
        assert not storage.is_transient_failure(sqlite3.IntegrityError("NOT NULL constraint failed"))
        assert not storage.is_transient_failure(sqlite3.ProgrammingError("Error binding parameter 6"))
    else:
        assert storage.is_transient_failure(asyncpg.ConnectionDoesNotExistError("connection was closed"))
        assert storage.is_transient_failure(asyncpg.DiskFullError("could not extend file"))
        assert storage.is_transient_failure(asyncpg.InterfaceError("pool is closing"))
        assert not storage.is_transient_failure(asyncpg.DataError("invalid input for query argument $7"))
        assert not storage.is_transient_failure(asyncpg.exceptions._base.DataError("expected str, got list"))
        assert not storage.is_transient_failure(asyncpg.NotNullViolationError("null value in column"))


# -- the failed state in storage ----------------------------------------------------------------------


async def test_processing_attempts_failing_exhausting_and_listing(backend: Backend) -> None:
    clock = Clock(1_000)
    storage = await backend.open(clock=clock)
    events = [incoming(f"user-{i}", f"mid.{i}", bot="bot-a" if i < 4 else "bot-b") for i in range(6)]
    await storage.inbox_add(events)

    await storage.inbox_attempt_failed(events[0].id, 1, "disk full")
    [first, *_] = await storage.inbox_pending_rows()
    assert (first.event.id, first.attempts) == (events[0].id, 1)
    assert await storage.inbox_fail(events[1].id, 3, "gave up")
    assert not await storage.inbox_fail(events[1].id, 3, "again")  # only a pending event can fail
    await storage.inbox_attempt_failed(events[4].id, 5, "poison")
    await storage.inbox_attempt_failed(events[5].id, 4, "almost")
    assert await storage.inbox_fail_exhausted(5, "attempts used up") == {"bot-b": 1}
    assert await storage.failed_counts() == {"bot-a": {"incoming": 1, "outgoing": 0},
                                             "bot-b": {"incoming": 1, "outgoing": 0}}

    failed = await storage.failed_events("incoming")
    assert [(f.event.id, f.attempts, f.error, f.updated_at) for f in failed] == [
        (events[1].id, 3, "gave up", 1_000), (events[4].id, 5, "poison", 1_000)]  # its last error kept
    assert [f.event.id for f in await storage.failed_events("incoming", bot_id="bot-b")] == [events[4].id]
    assert [f.event.id for f in await storage.failed_events("incoming", after_seq=failed[0].seq)] == [events[4].id]
    assert await storage.event_status(events[1].id) == ("incoming", "failed", "bot-a")
    assert await storage.event_status(events[0].id) == ("incoming", "pending", "bot-a")
    assert await storage.event_status("nope") is None


async def test_retry_and_discard_change_only_failed_events(backend: Backend) -> None:
    clock = Clock(1_000)
    storage = await backend.open(clock=clock)
    received = [incoming(f"user-{i}", f"mid.{i}") for i in range(3)]
    await storage.inbox_add(received)
    sent = [outgoing(f"user-{i}", f"r{i}") for i in range(2)]
    await storage.outbox_add(sent)
    for event in received[:2]:
        await storage.inbox_fail(event.id, 2, "refused")
    await storage.outbox_update(sent[0].id, status="failed", attempts=20, error="user unavailable")

    clock.now = 2_000
    [back] = await storage.events_retry("incoming", [received[0].id, received[2].id])  # [2] is pending
    assert (back.event.id, back.status, back.attempts, back.error) == (received[0].id, "pending", 0, None)
    assert (await storage.inbox_pending_rows())[0].attempts == 0
    [out] = await storage.events_retry("outgoing", [sent[0].id, sent[1].id])
    assert (out.event.id, out.attempts) == (sent[0].id, 0)
    row = await storage.outbox_get(sent[0].id)
    assert row is not None and (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, 0)

    assert await storage.events_discard("incoming", [received[1].id, received[0].id]) == [received[1].id]
    assert await storage.event_status(received[1].id) == ("incoming", "discarded", "bot-a")
    assert await storage.events_retry("incoming", [received[1].id]) == []  # discarded is not failed
    assert await storage.failed_counts() == {}


async def test_purge_keeps_failed_events_for_their_own_retention(backend: Backend) -> None:
    clock = Clock(1_000)
    storage = await backend.open(clock=clock)
    done, failed, discarded = (incoming(f"user-{i}", f"mid.{i}") for i in range(3))
    await storage.inbox_add([done, failed, discarded])
    sent, undeliverable = outgoing(text="a"), outgoing(text="b")
    await storage.outbox_add([sent, undeliverable])
    await storage.inbox_done([done.id])
    await storage.inbox_fail(failed.id, 1, "x")
    await storage.inbox_fail(discarded.id, 1, "x")
    await storage.events_discard("incoming", [discarded.id])
    await storage.outbox_update(sent.id, status="sent", attempts=1)
    await storage.outbox_update(undeliverable.id, status="failed", attempts=1, error="x")

    counts = await storage.purge(processed_before=5_000, messages_before=0, failed_before=500)
    assert counts == {"inbox": 1, "outbox": 1, "messages": 0}  # done and sent only
    assert await storage.purge(processed_before=5_000, messages_before=0, failed_before=5_000) == {
        "inbox": 2, "outbox": 1, "messages": 0}
    assert await backend.query("SELECT count(*) FROM inbox") == [(0,)]


async def test_the_failed_events_migration_keeps_every_row_status_and_seq(backend: Backend) -> None:
    base = backend.storage_class
    Version4 = type("Version4", (base,), {"migrations": base.migrations[:4]})
    clock = Clock(1_000)
    old = await backend.open(Version4, clock=clock)
    received = [incoming(f"user-{i}", f"mid.{i}") for i in range(4)]
    await old.inbox_add(received)
    await old.inbox_done([received[3].id])
    clock.now = 9_000
    await old.inbox_done([received[0].id], status="error", error="bot crashed")
    sent = [outgoing(text=f"r{i}") for i in range(3)]
    await old.outbox_add(sent)
    await old.outbox_update(sent[0].id, status="failed", attempts=20, error="gave up")
    assert (await old.purge(processed_before=5_000, messages_before=0))["inbox"] == 1  # the newest row
    await old.close()

    storage = await backend.open()
    assert await storage.schema_version() == LATEST_VERSION
    rows = await backend.query("SELECT event_id, status, error, attempts FROM inbox ORDER BY seq")
    assert rows == [(received[0].id, "error", "bot crashed", 0), (received[1].id, "pending", None, 0),
                    (received[2].id, "pending", None, 0)]
    assert [f.event.id for f in await storage.failed_events("outgoing")] == [sent[0].id]
    assert len(await storage.outbox_pending()) == 2
    newest = incoming("user-9", "mid.9")
    await storage.inbox_add([newest])
    [(seq,)] = await backend.query(f"SELECT seq FROM inbox WHERE event_id = '{newest.id}'")
    assert seq == 5  # 4 was handed out before the migration: never again
    assert await storage.inbox_add([incoming("user-1", "mid.1")]) == [False]  # dedupe index kept
    await storage.inbox_fail(received[1].id, 1, "new states are allowed")


# -- events storage refused: sanitised copies -----------------------------------------------------------


def odd_event(**changes: Any) -> IOEvent:
    event = incoming("user-odd", "mid.odd")
    for name, value in changes.items():
        setattr(event, name, value)
    return event


@pytest.mark.parametrize("changes", [
    {"dedupeKey": [1, {"a": 2}]},
    {"dedupeKey": 10**30},
    {"target": None},
    {"target": "x\x00y\ud800" * 1000},
    {"createdOn": 10**30},
    {"createdOn": "yesterday"},
    {"payload": {"nested": {"set": {1, 2}}, "nan": float("nan"), "big": 10**40, 3: "int key"}},
    {"payload": "not an object"},
    {"flags": {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]
                                     ]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},
    {"id": 42},
])
async def test_a_sanitised_copy_of_any_event_can_be_stored_as_failed(storage: Storage, changes: Any) -> None:
    sanitised, changed = sanitised_event(odd_event(**changes))
    assert changed
    assert await storage.inbox_add_failed(sanitised, "could not be stored as received: test")
    [stored] = await storage.failed_events("incoming")
    assert stored.event.id == sanitised.id and 0 <= stored.event.createdOn <= 2**53
    assert await storage.inbox_pending() == []


def test_an_ordinary_event_needs_no_sanitising() -> None:
    sanitised, changed = sanitised_event(incoming("user-1", "mid.1", text="héllo \U0001f600"))
    assert not changed and sanitised.payload == {"type": "text", "text": "héllo \U0001f600"}


def test_the_key_path_of_what_json_refuses_is_found() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert unserialisable_path({"payload": {"a": [1, {"b": {2}}]}}, "") == (
        "payload.a[1].b", "a set is not JSON (use strings, numbers, booleans, null, lists, objects)")
    assert unserialisable_path({"x": loop}, "")[1].startswith("refers to itself")  # type: ignore[index]
    assert unserialisable_path({"k": {(1, 2): "v"}}, "")[0] == "k[tuple key]"  # type: ignore[index]
    deep: Any = "x"
    for _ in range(600):
        deep = [deep]
    assert "nested deeper" in unserialisable_path(deep, "v")[1]  # type: ignore[index]
    assert unserialisable_path({"fine": [1, 2.5, None, True, "s", (3, 4)]}, "") is None


def test_a_masked_events_error_keeps_only_its_kind() -> None:
    error = ValueError("invalid input for query argument $7: 'my iban is DE89'")
    assert "DE89" in describe_error(error)
    assert describe_error(error, masked=True) == "ValueError (details withheld: the event is masked)"
    assert len(describe_error(ValueError("x" * 10_000))) <= 1000
