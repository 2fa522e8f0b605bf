"""The event pipeline through a real server and the echo test channel (docs/architecture.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.events import DeliveryError, IOEvent
from botpress_py.storage import open_storage
from botpress_py.testing import make_bot, run_server, send_retry_backoff, wait_for


async def say(s: aiohttp.ClientSession, srv: Any, bot: str, user: str, text: str, **extra: Any) -> int:
    async with s.post(f"{srv.url}/api/v1/bots/{bot}/mod/echo/in", json={"user": user, "text": text, **extra}) as r:
        assert r.status == 200
        return (await r.json())["accepted"]


def texts(echo: Any, user: str) -> list[str]:
    return [m["payload"]["text"] for m in echo.SENT if m["target"] == user]


async def test_hook_on_incoming_reply_roundtrip(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "hey there"}})
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        await say(s, srv, "alpha", "u1", "hello")
        await wait_for(lambda: len(echo.SENT) == 1)
        assert echo.SENT[0]["payload"] == {"type": "text", "text": "hey there"}
        assert echo.SENT[0]["tags"] == ["out"]  # outgoing middleware ran before the channel
        history = await srv.storage.messages_for("alpha", "test", "u1")
        assert [m["direction"] for m in history] == ["incoming", "outgoing"]
        assert history[1]["channelMessageId"] == "m1"


async def test_order_kept_per_conversation_and_conversations_concurrent(data_dir: Path, env: dict,
                                                                         echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        await asyncio.gather(*(say(s, srv, "alpha", f"user{u}", f"many 3 {u}") for u in range(5)))
        for i in range(10):
            await say(s, srv, "alpha", "seq", f"msg {i}")
        await wait_for(lambda: len(echo.SENT) == 25)
        assert texts(echo, "seq") == [f"echo: msg {i}" for i in range(10)]
        for u in range(5):
            assert texts(echo, f"user{u}") == ["part 0", "part 1", "part 2"]


async def test_duplicates_are_acknowledged_but_processed_once(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        assert await say(s, srv, "alpha", "u1", "once", mid="m.1") == 1
        assert await say(s, srv, "alpha", "u1", "once", mid="m.1") == 0
        await say(s, srv, "alpha", "u1", "after", mid="m.2")
        await wait_for(lambda: texts(echo, "u1") == ["echo: once", "echo: after"])


async def test_middleware_drops_and_silent_events_are_not_answered(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        await say(s, srv, "alpha", "u1", "drop me")
        await say(s, srv, "alpha", "u1", "a read receipt", silent=True)
        await say(s, srv, "alpha", "u1", "boom")  # bot logic raises: recorded, the next still runs
        await say(s, srv, "alpha", "u1", "last")
        await wait_for(lambda: texts(echo, "u1") == ["echo: last"])
        assert await srv.storage.inbox_pending() == []
        assert srv.metrics.counters["bp_events_dropped_total"] == 1
        assert srv.metrics.counters["bp_events_error_total"] == 1
        assert [h for h, b in echo.CALLS].count("on_incoming") == 2  # neither dropped nor silent ran


@pytest.fixture
def quick_send_retries() -> Iterator[None]:
    with send_retry_backoff(0.01):
        yield


async def test_transient_failures_retry_in_order_permanent_recorded(data_dir: Path, env: dict, echo: Any,
                                                                   quick_send_retries: None) -> None:
    make_bot(data_dir, "alpha")
    echo.FAIL_NEXT_SENDS.extend([DeliveryError("busy"), DeliveryError("busy again", retry_after=0.01)])
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        await say(s, srv, "alpha", "u1", "one")
        await say(s, srv, "alpha", "u1", "two")
        await wait_for(lambda: texts(echo, "u1") == ["echo: one", "echo: two"])
        assert srv.metrics.counters["bp_events_send_retried_total"] == 2
        echo.FAIL_NEXT_SENDS.append(DeliveryError("user unavailable", permanent=True, code=551))
        await say(s, srv, "alpha", "u2", "three")
        await wait_for(lambda: srv.metrics.counters["bp_events_send_failed_total"] == 1)
        row = await srv.storage.outbox_get(echo.FAILED_IDS[-1])
        assert row is not None and row.status == "failed" and "user unavailable" in (row.error or "")
        assert await srv.storage.outbox_pending() == []  # failed for good, not retried
        assert texts(echo, "u2") == []


async def test_stored_events_replay_at_start(data_dir: Path, env: dict, echo: Any) -> None:
    """Events stored but not processed before a stop are processed at the next start."""
    make_bot(data_dir, "alpha")
    storage = open_storage(data_dir, {})
    await storage.open()
    events = [IOEvent(type="text", channel="test", direction="incoming", botId="alpha", target="u9",
                      threadId="t", payload={"text": f"stored {i}"}, dedupeKey=f"s{i}") for i in range(3)]
    await storage.inbox_add(events)
    await storage.close()
    async with run_server(data_dir, env, modules=["echo"]):
        await wait_for(lambda: texts(echo, "u9") == ["echo: stored 0", "echo: stored 1", "echo: stored 2"])


async def test_events_wait_while_bot_is_disabled(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        ctx = srv.registry.records["alpha"].contexts["echo"]
        await srv.registry.set_disabled("alpha", True)
        # a channel still holding the context (e.g. the any-bot webhook) hands an event in
        await ctx.receive([IOEvent(type="text", channel="test", direction="incoming", botId="alpha",
                                   target="u5", threadId="t", payload={"text": "while off"})])
        assert texts(echo, "u5") == []
        await srv.registry.set_disabled("alpha", False)
        await wait_for(lambda: texts(echo, "u5") == ["echo: while off"])
        del s


async def test_hook_on_outgoing_only_the_channel_of_the_event_sends(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv:
        ctx = srv.registry.records["alpha"].contexts["echo"]
        other = IOEvent(type="text", channel="nowhere", direction="outgoing", botId="alpha", target="u1",
                        payload={"type": "text", "text": "lost?"})
        await ctx.send([other])
        await wait_for(lambda: srv.metrics.counters["bp_events_send_failed_total"] == 1)
        row = await srv.storage.outbox_get(other.id)
        assert row is not None and row.status == "failed"
        assert "no mounted module sends on channel 'nowhere'" in (row.error or "")
        assert echo.SENT == []


async def test_replies_sent_after_processing_go_straight_to_the_outbox(data_dir: Path, env: dict,
                                                                      echo: Any) -> None:
    """Replies of a handled event commit with its processed mark; later sends are stored at once."""
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        await say(s, srv, "alpha", "u1", "many 2")
        await wait_for(lambda: texts(echo, "u1") == ["part 0", "part 1"])
        assert await srv.storage.inbox_pending() == []
        ctx = srv.registry.records["alpha"].contexts["echo"]
        with pytest.raises(ValueError, match="needs 'text'"):
            await ctx.send([IOEvent(type="text", channel="test", direction="outgoing", botId="alpha",
                                    target="u1", payload={"type": "text"})])
        await ctx.send([IOEvent(type="text", channel="test", direction="outgoing", botId="alpha", target="u1",
                                payload={"type": "text", "text": "proactive"})])
        await wait_for(lambda: texts(echo, "u1")[-1:] == ["proactive"])


async def test_shutdown_leaves_waiting_work_stored_and_next_start_finishes_it(
        data_dir: Path, env: dict, echo: Any) -> None:
    """A send waiting for its retry and an event waiting for a disabled bot do not hold up the
    shutdown; both are done after the next start."""
    make_bot(data_dir, "alpha")
    make_bot(data_dir, "beta")
    echo.FAIL_NEXT_SENDS.append(DeliveryError("graph is down"))
    loop = asyncio.get_running_loop()
    with send_retry_backoff(3600.0):  # the retry would be far away
        async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
            await say(s, srv, "alpha", "u1", "first")
            await wait_for(lambda: srv.metrics.counters["bp_events_send_retried_total"] == 1)
            beta = srv.registry.records["beta"].contexts["echo"]
            await srv.registry.set_disabled("beta", True)
            await beta.receive([IOEvent(type="text", channel="test", direction="incoming", botId="beta",
                                        target="u2", threadId="t", payload={"text": "while off"})])
            stopping = loop.time()
    assert loop.time() - stopping < 3  # neither the hour-long backoff nor the disabled bot held it
    assert echo.SENT == []
    make_bot(data_dir, "beta")  # enabled again
    with send_retry_backoff(0.01):
        async with run_server(data_dir, env, modules=["echo"]) as srv:
            await wait_for(lambda: texts(echo, "u2") == ["echo: while off"])
            # the stored retry keeps its schedule (an hour away): only an operator's retry brings it forward
            assert [r.event.payload["text"] for r in await srv.storage.outbox_pending()] == ["echo: first"]


async def test_retention_purges_processed_rows_in_the_background(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], storage={
            "retention": {"events": "1ms", "messages": "1ms"}, "purgeInterval": "50ms"}) as srv, \
            aiohttp.ClientSession() as s:
        await say(s, srv, "alpha", "u1", "hello")
        await wait_for(lambda: len(echo.SENT) == 1)

        async def history_gone() -> bool:
            return await srv.storage.messages_for("alpha", "test", "u1") == []

        await wait_for(history_gone, 5)


async def gauges(s: aiohttp.ClientSession, srv: Any) -> dict[str, float]:
    async with s.get(f"{srv.url}/metrics") as r:
        text = await r.text()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def small_memory_bound(monkeypatch: Any) -> None:
    """At most 6 events in memory; resume below 3, reading 4 at a time."""
    import botpress_py.pipeline as pipeline

    monkeypatch.setattr(pipeline, "MAX_QUEUED_INCOMING", 6)
    monkeypatch.setattr(pipeline, "RESUME_BELOW", 3)
    monkeypatch.setattr(pipeline, "RESUME_BATCH", 4)


async def test_memory_holds_a_bounded_number_of_events_the_rest_waits_in_storage_in_order(
        data_dir: Path, env: dict, echo: Any, monkeypatch: Any) -> None:
    small_memory_bound(monkeypatch)
    make_bot(data_dir, "alpha")
    echo.HOLD.append(asyncio.Event())  # bot logic waits: events pile up
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        for i in range(10):
            for user in ("u1", "u2", "u3", "u4"):
                assert await say(s, srv, "alpha", user, f"msg {i}") == 1
        held = await gauges(s, srv)
        assert held["bp_incoming_queued"] == 6  # the cap, not 40
        assert held["bp_incoming_parked_bots"] == 1
        assert len(await srv.storage.inbox_pending(bot_id="alpha")) == 40  # every one stored
        echo.HOLD[0].set()
        await wait_for(lambda: len(echo.SENT) == 40, 10)
        for user in ("u1", "u2", "u3", "u4"):
            assert texts(echo, user) == [f"echo: msg {i}" for i in range(10)]
        after = await gauges(s, srv)
        assert after["bp_incoming_queued"] == 0 and after["bp_incoming_parked_bots"] == 0
        assert await srv.storage.inbox_pending() == []
        # once caught up, events go straight to memory again
        await say(s, srv, "alpha", "u1", "later")
        await wait_for(lambda: texts(echo, "u1")[-1:] == ["echo: later"])


async def test_a_disabled_bots_events_wait_in_storage_not_in_memory(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    make_bot(data_dir, "beta")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        ctx = srv.registry.records["alpha"].contexts["echo"]
        await srv.registry.set_disabled("alpha", True)
        for i in range(30):
            await ctx.receive([IOEvent(type="text", channel="test", direction="incoming", botId="alpha",
                                       target=f"u{i % 3}", threadId="t", payload={"text": f"off {i}"})])
        await say(s, srv, "beta", "b1", "still here")  # other bots are not held up
        await wait_for(lambda: texts(echo, "b1") == ["echo: still here"])
        held = await gauges(s, srv)
        assert held["bp_incoming_queued"] == 0 and held["bp_incoming_parked_bots"] == 1
        assert texts(echo, "u0") == []
        await srv.registry.set_disabled("alpha", False)
        await wait_for(lambda: sum(len(texts(echo, f"u{u}")) for u in range(3)) == 30)
        for u in range(3):
            assert texts(echo, f"u{u}") == [f"echo: off {i}" for i in range(30) if i % 3 == u]
        assert (await gauges(s, srv))["bp_incoming_parked_bots"] == 0


async def test_stored_events_of_a_disabled_bot_stay_stored_at_start_until_it_is_enabled(
        data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha", disabled=True)
    storage = open_storage(data_dir, {})
    await storage.open()
    await storage.inbox_add([IOEvent(type="text", channel="test", direction="incoming", botId="alpha",
                                     target="u7", threadId="t", payload={"text": f"kept {i}"}) for i in range(3)])
    await storage.close()
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        held = await gauges(s, srv)
        assert held["bp_incoming_queued"] == 0 and held["bp_incoming_parked_bots"] == 1
        await srv.registry.set_disabled("alpha", False)
        await wait_for(lambda: texts(echo, "u7") == ["echo: kept 0", "echo: kept 1", "echo: kept 2"])


async def test_replies_waiting_for_a_slow_platform_count_against_memory_too(
        data_dir: Path, env: dict, echo: Any, monkeypatch: Any) -> None:
    """A platform that answers slowly must not pile replies up in memory: new events wait in storage."""
    small_memory_bound(monkeypatch)
    make_bot(data_dir, "alpha")
    echo.HOLD_SENDS.append(asyncio.Event())
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        for i in range(8):
            for user in ("u1", "u2", "u3"):
                assert await say(s, srv, "alpha", user, f"msg {i}") == 1
        held = await gauges(s, srv)
        assert held["bp_incoming_queued"] + held["bp_outgoing_queued"] <= 6 + 3  # the cap, plus one reply each
        assert held["bp_incoming_parked_bots"] == 1
        assert len(await srv.storage.inbox_pending(bot_id="alpha")) >= 24 - 9
        echo.HOLD_SENDS[0].set()
        await wait_for(lambda: len(echo.SENT) == 24, 10)
        for user in ("u1", "u2", "u3"):
            assert texts(echo, user) == [f"echo: msg {i}" for i in range(8)]
        assert (await gauges(s, srv))["bp_incoming_parked_bots"] == 0
