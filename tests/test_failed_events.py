"""One bad event never hurts another: through a real server, on SQLite and on PostgreSQL.

A poison event shares transactions with other users' events; the shared transaction is split
until only the poison fails; the poison is retried, then failed, and never replayed; an event
that fails never blocks its conversation; a reply that cannot be stored fails only its sender.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.events import IOEvent
from botpress_py.storage import open_storage
from botpress_py.testing import make_bot, run_server, wait_for

from .failed_events_support import (
    FAILED_IN,
    FAST_RETRIES,
    POISON_CREATED_ON,
    Database,
    database_for,
    metrics,
    post_in,
)
from .test_pipeline import texts

SPLIT_WARNING = "committing them in halves"


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: Any, data_dir: Path) -> AsyncIterator[Database]:
    async with database_for(request.param, data_dir) as database:
        yield database


def on_incoming_calls(echo: Any) -> int:
    return [hook for hook, _ in echo.CALLS].count("on_incoming")


async def test_a_poison_event_among_fifty_fails_alone_and_is_not_replayed(
        data_dir: Path, env: dict, echo: Any, db: Database, caplog: Any) -> None:
    make_bot(data_dir, "alpha")
    echo.HOLD.append(asyncio.Event())  # bot logic waits, so that all 51 events complete together
    caplog.set_level(logging.WARNING, "botpress_py")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=FAST_RETRIES) as srv, \
            aiohttp.ClientSession() as s:
        answers = await asyncio.gather(
            *(post_in(s, srv, f"user{i}", f"hello {i}", mid=f"m.{i}") for i in range(50)),
            post_in(s, srv, "poison", "a timestamp from the far future", mid="m.poison", createdOn=POISON_CREATED_ON))
        assert all(status == 200 and body == {"accepted": 1} for status, body in answers), answers
        await wait_for(lambda: on_incoming_calls(echo) == 51, 10)
        echo.HOLD[0].set()

        await wait_for(lambda: srv.pipeline.failed_counts.totals()["incoming"] == 1, 10)
        await wait_for(lambda: len(echo.SENT) == 50, 10)
        for i in range(50):
            assert texts(echo, f"user{i}") == [f"echo: hello {i}"]  # exactly once
        assert texts(echo, "poison") == []  # failed without its replies
        assert any(SPLIT_WARNING in r.getMessage() for r in caplog.records), "the poison shared no transaction"
        [failed] = await srv.storage.failed_events("incoming")
        assert failed.event.target == "poison" and failed.attempts == 3
        assert failed.error is not None and failed.error.startswith("recording its result: ")
        await wait_for(nothing_pending_in(srv), 10)
        assert (await metrics(s, srv))[FAILED_IN] == 1
        calls = on_incoming_calls(echo)

    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=FAST_RETRIES) as srv:
        # Nothing was pending, so nothing replays: the poison stays failed, the others answered once.
        assert srv.pipeline.parked_bots() == set() and srv.pipeline.incoming.pending() == 0
        assert await srv.storage.inbox_pending() == []
        assert [f.event.target for f in await srv.storage.failed_events("incoming")] == ["poison"]
        assert on_incoming_calls(echo) == calls and len(echo.SENT) == 50
        assert srv.pipeline.failed_counts.totals() == {"incoming": 1, "outgoing": 0}


async def test_an_event_the_inbox_refuses_is_stored_as_failed_and_nobody_else_gets_503(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=FAST_RETRIES) as srv, \
            aiohttp.ClientSession() as s:
        # Dedupe keys a channel should have refused: storage cannot bind them as text.
        poisons = [("list-mid", [1, 2]), ("huge-mid", 10**30)]
        answers = await asyncio.gather(
            *(post_in(s, srv, f"user{i}", f"hi {i}", mid=f"m.{i}") for i in range(100)),
            *(post_in(s, srv, user, "bad id", mid=mid) for user, mid in poisons))
        assert [status for status, _ in answers] == [200] * 102  # nobody got a 503
        assert [body["accepted"] for _, body in answers] == [1] * 100 + [0, 0]
        await wait_for(lambda: len(echo.SENT) == 100, 10)

        failed = {f.event.target: f for f in await srv.storage.failed_events("incoming")}
        assert set(failed) == {"list-mid", "huge-mid"}
        assert failed["list-mid"].event.dedupeKey == "[1,2]"  # kept as text: a redelivery still dedupes
        assert all((f.error or "").startswith("could not be stored as received: ") for f in failed.values())
        assert srv.pipeline.failed_counts.totals()["incoming"] == 2
        # The platform redelivers the poison: acknowledged again, not stored twice.
        assert await post_in(s, srv, "list-mid", "bad id", mid=[1, 2]) == (200, {"accepted": 0})
        assert len(await srv.storage.failed_events("incoming")) == 2
        assert await srv.storage.inbox_pending() == []


async def test_an_unserialisable_reply_fails_only_the_event_whose_bot_logic_sent_it(
        data_dir: Path, env: dict, echo: Any, db: Database, caplog: Any) -> None:
    make_bot(data_dir, "alpha")
    echo.HOLD.append(asyncio.Event())
    caplog.set_level(logging.WARNING, "botpress_py")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=FAST_RETRIES) as srv, \
            aiohttp.ClientSession() as s:
        await asyncio.gather(*(post_in(s, srv, f"user{i}", f"hi {i}") for i in range(20)),
                             post_in(s, srv, "sender", "unserialisable"))
        await wait_for(lambda: on_incoming_calls(echo) == 21, 10)
        echo.HOLD[0].set()
        await wait_for(lambda: len(echo.SENT) == 20, 10)

        [(status, error, _)] = await wait_for(lambda: db.inbox("sender"), 10)
        assert status == "error"  # bot logic raised: recorded, not retried
        assert "bot alpha, module echo" in error and "payload.extra.seen" in error and "set" in error
        assert not any(SPLIT_WARNING in r.getMessage() for r in caplog.records), "it reached a shared transaction"
        assert srv.pipeline.failed_counts.totals()["incoming"] == 0
        assert await srv.storage.inbox_pending() == []
        await wait_for(nothing_pending_in(srv), 10)


def nothing_pending_in(srv: Any) -> Any:
    async def check() -> bool:
        return await srv.storage.inbox_pending() == [] and await srv.storage.outbox_pending() == []

    return check


async def test_a_failed_event_does_not_block_the_next_event_of_its_conversation(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=FAST_RETRIES) as srv, \
            aiohttp.ClientSession() as s:
        await post_in(s, srv, "u1", "first", createdOn=POISON_CREATED_ON)
        await post_in(s, srv, "u1", "second")
        await post_in(s, srv, "u1", "third")
        await wait_for(lambda: texts(echo, "u1") == ["echo: second", "echo: third"], 10)
        assert [status for status, _, _ in await db.inbox("u1")] == ["failed", "done", "done"]
        assert (await db.inbox("u1"))[0][2] == 3  # retried, in order, before the conversation moved on


async def test_a_processing_failure_that_passes_is_retried_and_the_event_answered(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"],
                          storage={"failedEvents": {"maxAttempts": 10, "backoff": "100ms"}}) as srv, \
            aiohttp.ClientSession() as s:
        await db.refuse_history_of()  # like a full disk, for this one event
        await post_in(s, srv, "u1", "refuse me")
        await post_in(s, srv, "u1", "queued behind it")
        await wait_for(lambda: srv.metrics.counters["bp_events_retried_total"] >= 1, 10)

        async def attempt_counted() -> bool:  # the retry is counted, then its attempt stored
            return (await db.inbox("u1"))[0][2] >= 1

        await wait_for(attempt_counted, 10)
        assert texts(echo, "u1") == []  # the conversation waits while its event is retried
        [status, error, attempts] = (await db.inbox("u1"))[0]
        assert status == "pending" and attempts >= 1 and "history refused (injected fault)" in (error or "")
        await db.stop_refusing()  # the disk has room again
        await wait_for(lambda: texts(echo, "u1") == ["echo: refuse me", "echo: queued behind it"], 10)
        assert [row[0] for row in await db.inbox("u1")] == ["done", "done"]
        assert srv.pipeline.failed_counts.totals()["incoming"] == 0


async def test_attempts_survive_restarts_and_an_event_out_of_attempts_is_failed_at_start(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    slow_retries = {"failedEvents": {"maxAttempts": 2, "backoff": "1h"}}
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=slow_retries) as srv, \
            aiohttp.ClientSession() as s:
        await db.refuse_history_of()
        await post_in(s, srv, "u1", "refuse me")
        await wait_for(lambda: srv.metrics.counters["bp_events_retried_total"] == 1, 10)
    assert await db.inbox("u1") == [("pending", await_error(await db.inbox("u1")), 1)]

    # The next start replays it with one attempt used: the second fails it for good.
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=slow_retries) as srv:
        await wait_for(lambda: srv.pipeline.failed_counts.totals()["incoming"] == 1, 10)
        assert [row[:1] + row[2:] for row in await db.inbox("u1")] == [("failed", 2)]
        calls = on_incoming_calls(echo)

    # An event that has used up its attempts by the next start (failed twice on a full disk,
    # and maxAttempts is 2) is failed at start, not replayed once more.
    storage = open_storage(data_dir, db.env)
    await storage.open()
    stuck = IOEvent(type="text", channel="test", direction="incoming", botId="alpha", target="u2", threadId="t",
                    payload={"text": "stuck"}, preview="stuck")
    await storage.inbox_add([stuck])
    await storage.inbox_attempt_failed(stuck.id, 2, "recording its result: OperationalError: disk full")
    await storage.close()
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=slow_retries) as srv:
        assert [row[0] for row in await db.inbox("u2")] == ["failed"]
        assert srv.pipeline.failed_counts.totals()["incoming"] == 2
        assert await srv.storage.inbox_pending() == []
        assert on_incoming_calls(echo) == calls


def await_error(rows: list[tuple[str, str | None, int]]) -> str | None:
    """The stored error of the only row (checked for its content separately)."""
    [(_, error, _)] = rows
    assert error is not None and "history refused (injected fault)" in error
    return error


async def test_a_sent_mark_that_cannot_be_recorded_fails_alone_and_is_not_sent_again(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    echo.HOLD_SENDS.append(asyncio.Event())  # deliveries wait, so that their sent marks share a transaction
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=FAST_RETRIES) as srv, \
            aiohttp.ClientSession() as s:
        await asyncio.gather(*(post_in(s, srv, f"user{i}", f"hi {i}") for i in range(10)),
                             post_in(s, srv, "odd", "odd flags"))
        await wait_for(lambda: [hook for hook, _ in echo.CALLS].count("on_outgoing") == 11, 10)
        echo.HOLD_SENDS[0].set()
        await wait_for(lambda: srv.metrics.counters["bp_events_sent_mark_failed_total"] == 1, 10)
        for i in range(10):  # the others' marks and history are recorded
            history = await srv.storage.messages_for("alpha", "test", f"user{i}")
            assert [m["direction"] for m in history] == ["incoming", "outgoing"]
        assert await srv.storage.outbox_pending() == []  # the odd one is marked sent too, without history
        assert [m["direction"] for m in await srv.storage.messages_for("alpha", "test", "odd")] == ["incoming"]
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=FAST_RETRIES) as srv:
        assert await srv.storage.outbox_pending() == []
        assert len(texts(echo, "odd")) == 1  # not sent a second time after the restart


async def test_a_refresh_of_the_counts_drops_a_read_that_a_failure_counted_just_after_it_may_include() -> None:
    """A failed event committed before storage's counts were read, but counted in memory just after the read
    returned, must not be counted twice: the refresh waits a moment and gives up when anything was counted."""
    from botpress_py.failed_events import FailedCounts

    counts = FailedCounts()
    counts.add("alpha", "incoming")  # counted earlier, and in storage

    async def read() -> dict[str, dict[str, int]]:
        # Storage already holds the second failure; its writer counts it right after this read returns.
        asyncio.get_running_loop().call_soon(counts.add, "alpha", "incoming")
        return {"alpha": {"incoming": 2, "outgoing": 0}}

    assert await counts.refresh(read, settle=0.05) is False
    assert counts.totals()["incoming"] == 2

    async def quiet_read() -> dict[str, dict[str, int]]:
        return {"alpha": {"incoming": 1, "outgoing": 0}}  # an erase took one away unseen

    assert await counts.refresh(quiet_read, settle=0.05) is True
    assert counts.totals()["incoming"] == 1


async def test_conversations_completing_and_delivering_together_with_one_poison_answer_each_once_in_order(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    """Completions and sent marks of many conversations share transactions: a poison message fails
    alone, every other message is answered once, and each conversation keeps its order."""
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=FAST_RETRIES) as srv, \
            aiohttp.ClientSession() as s:
        async def conversation(user: str) -> None:
            for n in range(3):
                poison = {"createdOn": POISON_CREATED_ON} if (user, n) == ("user7", 1) else {}
                assert await post_in(s, srv, user, f"msg {n}", mid=f"{user}.{n}", **poison) == (200, {"accepted": 1})

        await asyncio.gather(*(conversation(f"user{u}") for u in range(30)))
        await wait_for(lambda: srv.pipeline.failed_counts.totals()["incoming"] == 1, 10)
        await wait_for(lambda: len(echo.SENT) == 89, 10)
        await wait_for(nothing_pending_in(srv), 10)
        for u in range(30):
            expected = [f"echo: msg {n}" for n in range(3) if (u, n) != (7, 1)]
            assert texts(echo, f"user{u}") == expected, u  # exactly once each, in order
            history = await srv.storage.messages_for("alpha", "test", f"user{u}")
            assert [m["preview"] for m in history if m["direction"] == "incoming"] == [
                f"msg {n}" for n in range(3) if (u, n) != (7, 1)]
            assert [m["preview"] for m in history if m["direction"] == "outgoing"] == expected
        [failed] = await srv.storage.failed_events("incoming")
        assert failed.event.target == "user7" and failed.event.payload["text"] == "msg 1"
        assert len(echo.SENT) == 89
