"""Failed events as an operator sees them: admin API, CLI, /metrics, /status and retention.

Through a real server on SQLite and on PostgreSQL; events fail because the database refuses
them (a trigger), or because the channel refuses a send for good.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.cli import main
from botpress_py.events import DeliveryError, IOEvent
from botpress_py.testing import make_bot, run_server, wait_for

from .failed_events_support import (
    ADMIN,
    FAILED_IN,
    FAILED_OUT,
    STORED_FAILED_IN,
    STORED_FAILED_OUT,
    TOKEN,
    Database,
    database_for,
    metrics,
    post_in,
)
from .test_pipeline import small_memory_bound, texts

NO_RETRIES = {"failedEvents": {"maxAttempts": 1}}


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: Any, data_dir: Path) -> AsyncIterator[Database]:
    async with database_for(request.param, data_dir) as database:
        yield database


async def get(s: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    async with s.get(url, params=params, headers=ADMIN) as r:
        return r.status, await r.json()


async def post(s: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    async with s.post(url, params=params, headers=ADMIN) as r:
        return r.status, await r.json()


async def status_counts(s: aiohttp.ClientSession, srv: Any) -> dict[str, Any]:
    async with s.get(f"{srv.url}/status") as r:
        body = await r.json()
    assert "alpha" in body["bots"] and body["bots"]["alpha"]["state"] == "mounted"  # the bots shape is kept
    return body["failedEvents"]


async def fail_three(s: aiohttp.ClientSession, srv: Any, db: Database, echo: Any) -> None:
    """Two incoming events the database refuses (u1, u2), one reply the channel refuses (u3)."""
    await db.refuse_history_of()
    await post_in(s, srv, "u1", "refuse me")
    await post_in(s, srv, "u2", "refuse me")
    echo.FAIL_NEXT_SENDS.append(DeliveryError("user unavailable", permanent=True, code=551))
    await post_in(s, srv, "u3", "hello there")
    await wait_for(lambda: srv.pipeline.failed_counts.totals() == {"incoming": 2, "outgoing": 1}, 10)


async def test_failed_events_are_counted_listed_retried_and_discarded_through_the_admin_api(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=NO_RETRIES,
                          admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        listing = f"{srv.url}/api/v1/admin/events/failed"
        assert (await status_counts(s, srv))["total"] == 0
        assert (await metrics(s, srv))[FAILED_IN] == 0  # shown from the start
        await fail_three(s, srv, db, echo)

        assert await status_counts(s, srv) == {"incoming": 2, "outgoing": 1, "total": 3,
                                               "bots": {"alpha": {"incoming": 2, "outgoing": 1}}}
        seen = await metrics(s, srv)
        assert (seen[FAILED_IN], seen[FAILED_OUT], seen[STORED_FAILED_IN], seen[STORED_FAILED_OUT]) == (2, 1, 2, 1)

        status, body = await get(s, listing)
        assert status == 200 and body["nextCursor"] is None
        assert [(e["direction"], e["userId"]) for e in body["events"]] == [
            ("incoming", "u1"), ("incoming", "u2"), ("outgoing", "u3")]
        first = body["events"][0]
        assert first["botId"] == "alpha" and first["attempts"] == 1 and first["status"] == "failed"
        assert "history refused (injected fault)" in first["error"] and first["failedAt"] > 0
        assert body["events"][2]["error"] == "user unavailable" and body["events"][2]["preview"] == "echo: hello there"
        # Paging one at a time walks the same list; filters narrow it.
        paged, cursor = [], None
        while True:
            status, page = await get(s, listing, limit=1, **({"cursor": cursor} if cursor else {}))
            paged += [e["id"] for e in page["events"]]
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert paged == [e["id"] for e in body["events"]]
        assert [e["userId"] for e in (await get(s, listing, direction="outgoing"))[1]["events"]] == ["u3"]
        assert (await get(s, listing, bot="beta"))[1]["events"] == []
        # Bad requests say what is wrong.
        assert (await get(s, listing, direction="sideways"))[0] == 400
        assert (await get(s, listing, limit=0))[0] == 400
        assert (await get(s, listing, cursor="nonsense"))[0] == 400
        async with s.get(listing) as r:
            assert r.status == 401

        u1, u2, u3 = (e["id"] for e in body["events"])
        status, missing = await post(s, f"{srv.url}/api/v1/admin/events/no-such-event/retry")
        assert status == 404 and "no-such-event" in missing["error"]
        await db.stop_refusing()
        assert (await post(s, f"{srv.url}/api/v1/admin/events/{u1}/retry"))[0] == 200
        await wait_for(lambda: texts(echo, "u1") == ["echo: refuse me"], 10)
        status, again = await post(s, f"{srv.url}/api/v1/admin/events/{u1}/retry")
        assert status == 409 and again["state"] == "done" and "not failed" in again["error"]
        assert (await post(s, f"{srv.url}/api/v1/admin/events/{u3}/retry"))[1]["status"] == "pending"
        await wait_for(lambda: texts(echo, "u3") == ["echo: hello there"], 10)
        assert (await post(s, f"{srv.url}/api/v1/admin/events/{u2}/discard"))[1]["status"] == "discarded"
        status, gone = await post(s, f"{srv.url}/api/v1/admin/events/{u2}/retry")
        assert status == 409 and gone["state"] == "discarded"
        assert texts(echo, "u2") == []

        assert (await status_counts(s, srv))["total"] == 0
        seen = await metrics(s, srv)
        assert (seen[FAILED_IN], seen[FAILED_OUT], seen[STORED_FAILED_IN], seen[STORED_FAILED_OUT]) == (2, 1, 0, 0)


async def test_a_bots_failed_events_are_retried_in_bulk_in_their_conversations_order(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=NO_RETRIES,
                          admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        await db.refuse_history_of()
        for i in range(5):
            await post_in(s, srv, "u1", "refuse me", mid=f"r.{i}")
        await wait_for(lambda: srv.pipeline.failed_counts.totals()["incoming"] == 5, 10)
        await db.stop_refusing()
        bulk = f"{srv.url}/api/v1/admin/bots/alpha/events/failed/retry"
        assert (await post(s, bulk, limit=2)) == (200, {"botId": "alpha", "retried": 2, "skipped": 0, "remaining": 3})
        assert (await post(s, bulk)) == (200, {"botId": "alpha", "retried": 3, "skipped": 0, "remaining": 0})
        await wait_for(lambda: texts(echo, "u1") == ["echo: refuse me"] * 5, 10)
        assert [row[0] for row in await db.inbox("u1")] == ["done"] * 5
        assert (await post(s, f"{srv.url}/api/v1/admin/bots/alpha/events/failed/discard"))[1]["discarded"] == 0
        assert (await post(s, f"{srv.url}/api/v1/admin/bots/Not%20A%20Bot/events/failed/retry"))[0] == 400


async def test_events_cli_lists_retries_and_discards_through_the_server_and_without_it(
        data_dir: Path, env: dict, echo: Any, db: Database, capsys: Any, monkeypatch: Any) -> None:
    for key in ("DATABASE_URL", "BP_DATABASE_SCHEMA"):
        monkeypatch.delenv(key, raising=False)
    for key, value in db.env.items():
        monkeypatch.setenv(key, value)  # the offline CLI opens the test server's storage
    make_bot(data_dir, "alpha")

    def cli(*argv: str, url: str | None = None) -> Any:
        return asyncio.to_thread(main, ["events", *argv, "--data", str(data_dir), "--url", url or srv.url,
                                        "--token", TOKEN])

    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=NO_RETRIES,
                          admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        await fail_three(s, srv, db, echo)
        capsys.readouterr()
        assert await cli("failed", "--json") == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(e["direction"], e["userId"]) for e in listed] == [
            ("incoming", "u1"), ("incoming", "u2"), ("outgoing", "u3")]
        assert await cli("failed", "--bot", "alpha", "--direction", "outgoing") == 0
        out = capsys.readouterr().out
        assert listed[2]["id"] in out and "user unavailable" in out and listed[0]["id"] not in out

        await db.stop_refusing()
        assert await cli("retry", listed[0]["id"], "no-such-event") == 1  # one done, one error
        captured = capsys.readouterr()
        assert "pending again" in captured.out and "no-such-event" in captured.err
        await wait_for(lambda: texts(echo, "u1") == ["echo: refuse me"], 10)
        assert await cli("discard", "--bot", "alpha", "--all", "--direction", "outgoing") == 0
        assert "discarded 1 failed event of bot alpha" in capsys.readouterr().out
        assert await cli("retry") == 2 and await cli("retry", "--all") == 2  # nothing named / no --bot
        assert await cli("retry", "x", "--bot", "alpha", "--all") == 2
        assert srv.pipeline.failed_counts.totals() == {"incoming": 1, "outgoing": 0}

    # No server: the CLI works on the storage; the retried event is processed at the next start.
    capsys.readouterr()
    closed = "http://127.0.0.1:9"
    assert await cli("failed", "--json", url=closed) == 0
    [left] = json.loads(capsys.readouterr().out)
    assert left["userId"] == "u2"
    assert await cli("retry", "--bot", "alpha", "--all", url=closed) == 0
    assert "retried 1 failed event of bot alpha" in capsys.readouterr().out
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=NO_RETRIES,
                          admin={"token": TOKEN}) as srv:
        await wait_for(lambda: texts(echo, "u2") == ["echo: refuse me"], 10)
        assert srv.pipeline.failed_counts.totals() == {"incoming": 0, "outgoing": 0}


async def test_failed_events_are_purged_after_their_own_retention(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    keep_failed = {**NO_RETRIES, "retention": {"events": "1ms", "failed": "30d"}, "purgeInterval": "50ms"}
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=keep_failed,
                          admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        await fail_three(s, srv, db, echo)
        await post_in(s, srv, "u4", "an ordinary message")
        await wait_for(lambda: texts(echo, "u4") == ["echo: an ordinary message"], 10)

        async def done_rows_purged() -> bool:
            return await db.query("SELECT count(*) FROM inbox WHERE status = 'done'") == [(0,)]

        await wait_for(done_rows_purged, 10)
        # Purged on the events retention (1 ms): the done ones. Kept on the failed one (30 days):
        assert await db.query("SELECT count(*) FROM inbox WHERE status = 'failed'") == [(2,)]
        assert await db.query("SELECT count(*) FROM outbox WHERE status = 'failed'") == [(1,)]
        assert (await status_counts(s, srv))["total"] == 3

    purge_failed = {**keep_failed, "retention": {"events": "1ms", "failed": "1ms"}}
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=purge_failed,
                          admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:

        async def failed_rows_purged() -> bool:
            rows = await db.query("SELECT count(*) FROM inbox WHERE status = 'failed' UNION ALL "
                                  "SELECT count(*) FROM outbox WHERE status = 'failed'")
            return rows == [(0,), (0,)]

        await wait_for(failed_rows_purged, 10)
        await wait_for(lambda: srv.pipeline.failed_counts.totals() == {"incoming": 0, "outgoing": 0}, 5)
        assert (await status_counts(s, srv))["total"] == 0


async def test_a_retried_event_of_a_disabled_bot_waits_in_storage_until_the_bot_is_enabled(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=NO_RETRIES,
                          admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        await db.refuse_history_of()
        await post_in(s, srv, "u1", "refuse me")
        await wait_for(lambda: srv.pipeline.failed_counts.totals()["incoming"] == 1, 10)
        await db.stop_refusing()
        [failed] = await srv.storage.failed_events("incoming")
        await srv.registry.set_disabled("alpha", True)

        status, body = await post(s, f"{srv.url}/api/v1/admin/events/{failed.event.id}/retry")
        assert status == 200 and body == {"id": failed.event.id, "direction": "incoming", "botId": "alpha",
                                          "status": "pending"}
        assert srv.pipeline.parked_bots() == {"alpha"} and srv.pipeline.incoming.pending() == 0
        assert [row[0] for row in await db.inbox("u1")] == ["pending"]  # in storage, not in memory
        await srv.registry.set_disabled("alpha", False)
        await wait_for(lambda: texts(echo, "u1") == ["echo: refuse me"], 10)
        assert [row[0] for row in await db.inbox("u1")] == ["done"]


async def test_a_retry_while_the_bots_stored_events_are_read_back_queues_every_event_once(
        data_dir: Path, env: dict, echo: Any, db: Database, monkeypatch: Any) -> None:
    small_memory_bound(monkeypatch)
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=NO_RETRIES,
                          admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        await db.refuse_history_of()
        await post_in(s, srv, "u0", "refuse me")
        await wait_for(lambda: srv.pipeline.failed_counts.totals()["incoming"] == 1, 10)
        await db.stop_refusing()
        [failed] = await srv.storage.failed_events("incoming")

        # Stored while the bot is off; once on, its resumer reads them a batch at a time, and
        # bot logic holds the first batch, so the resumer waits for room past the failed event.
        echo.HOLD.append(asyncio.Event())
        channel = srv.registry.records["alpha"].contexts["echo"]
        await srv.registry.set_disabled("alpha", True)
        for i in range(5):
            for user in ("u1", "u2", "u3", "u4"):
                await channel.receive([IOEvent(type="text", channel="test", direction="incoming", botId="alpha",
                                               target=user, threadId="t", payload={"text": f"msg {i}"})])
        await srv.registry.set_disabled("alpha", False)
        await wait_for(lambda: srv.pipeline.incoming.pending() >= 3, 10)
        assert srv.pipeline.parked_bots() == {"alpha"}
        # The retried event is older than what the resumer read: it must read again from the
        # start, once the events in memory are done, and queue nothing twice.
        assert (await post(s, f"{srv.url}/api/v1/admin/events/{failed.event.id}/retry"))[0] == 200
        echo.HOLD[0].set()
        await wait_for(lambda: len(echo.SENT) == 21, 10)
        assert texts(echo, "u0") == ["echo: refuse me"]
        for user in ("u1", "u2", "u3", "u4"):
            assert texts(echo, user) == [f"echo: msg {i}" for i in range(5)]
        await wait_for(lambda: srv.pipeline.parked_bots() == set(), 10)
        assert await srv.storage.inbox_pending() == []


async def test_a_masked_reply_that_failed_cannot_be_sent_again_only_discarded(
        data_dir: Path, env: dict, echo: Any, db: Database) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **db.env}, modules=["echo"], storage=NO_RETRIES,
                          admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        echo.FAIL_NEXT_SENDS.append(DeliveryError("user unavailable", permanent=True, code=551))
        await post_in(s, srv, "u1", "my iban is DE89", flags={"mask": True, "maskReplies": True})
        await wait_for(lambda: srv.pipeline.failed_counts.totals()["outgoing"] == 1, 10)
        [failed] = (await get(s, f"{srv.url}/api/v1/admin/events/failed"))[1]["events"]
        assert failed["preview"] == "***" and "DE89" not in json.dumps(failed)

        status, body = await post(s, f"{srv.url}/api/v1/admin/events/{failed['id']}/retry")
        assert status == 409 and "masked" in body["error"] and "discard" in body["error"]
        assert (await post(s, f"{srv.url}/api/v1/admin/bots/alpha/events/failed/retry"))[1] == {
            "botId": "alpha", "retried": 0, "skipped": 1, "remaining": 1}
        assert (await post(s, f"{srv.url}/api/v1/admin/events/{failed['id']}/discard"))[0] == 200
        assert echo.SENT == []
