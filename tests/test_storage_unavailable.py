"""A storage stall reaches any channel as StorageUnavailable, and the core bounds what waits in memory
(the echo test channel; the Messenger channel's own stall tests are beside that module)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from botpress_py.testing import StuckSQLiteWriter, make_bot, run_server, wait_for

ACK_TIMEOUT = "1s"


async def test_any_channel_gets_storage_unavailable_and_its_route_answers_503(
        data_dir: Path, env: dict[str, str], echo: Any) -> None:
    """Through the SDK alone: the channel maps StorageUnavailable to 503, and one that does not gets a 503
    from the core rather than a 500; both events are processed once the stall ends."""
    make_bot(data_dir, "alpha")
    stalled = StuckSQLiteWriter()
    async with run_server(data_dir, env, modules=["echo"], storage={"ackTimeout": ACK_TIMEOUT}) as srv, \
            aiohttp.ClientSession() as http:
        await stalled.start(srv)
        try:
            for route, user in (("in", "guarded"), ("in-unguarded", "unguarded")):
                async with http.post(f"{srv.url}/api/v1/bots/alpha/mod/echo/{route}",
                                     json={"user": user, "text": route}) as response:
                    body = await response.json()
                    assert response.status == 503, body
                    assert "storage.ackTimeout" in str(body), body
            assert stalled.active
        finally:
            await stalled.release()
        await wait_for(lambda: sorted(m["target"] for m in echo.SENT) == ["guarded", "unguarded"], 10)


async def test_past_the_bound_of_waiting_events_new_ones_are_refused_at_once(
        data_dir: Path, env: dict[str, str], echo: Any, monkeypatch: Any) -> None:
    """A stalled storage and webhooks that keep coming: memory does not fill with events waiting for a
    commit; past MAX_UNSTORED_INCOMING the next webhook is answered 503 without waiting its turn."""
    import botpress_py.pipeline as pipeline

    monkeypatch.setattr(pipeline, "MAX_UNSTORED_INCOMING", 3)
    make_bot(data_dir, "alpha")
    stalled = StuckSQLiteWriter()
    async with run_server(data_dir, env, modules=["echo"], storage={"ackTimeout": "10s"}) as srv, \
            aiohttp.ClientSession() as http:
        await stalled.start(srv)

        async def say(user: str) -> tuple[int, str]:
            async with http.post(f"{srv.url}/api/v1/bots/alpha/mod/echo/in", json={"user": user, "text": "hi"}) as r:
                return r.status, str(await r.json())

        try:
            waiting = [asyncio.create_task(say(f"waiting-{i}")) for i in range(3)]
            await wait_for(lambda: srv.pipeline._unstored == 3, 10)
            status, body = await say("one-too-many")
            assert status == 503 and "not keeping up" in body
            assert not any(task.done() for task in waiting), "refused before the others' wait ended"
        finally:
            await stalled.release()
        assert [(await task)[0] for task in waiting] == [200, 200, 200]
        await wait_for(lambda: len(echo.SENT) == 3, 10)
