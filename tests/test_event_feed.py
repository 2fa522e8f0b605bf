"""The live event feed: bounded per listener, dropping with a count, never the text of a masked event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from botpress_py.event_feed import QUEUE_SIZE, EventFeed, TooManyListeners, summary
from botpress_py.events import IOEvent
from botpress_py.testing import run_server

from .admin_support import TOKEN


def event(text: str, *, bot: str = "alpha", mask: bool = False) -> IOEvent:
    return IOEvent(type="text", channel="web", direction="incoming", botId=bot, target="u1",
                   payload={"type": "text", "text": text}, preview=text, flags={"mask": True} if mask else {})


def items(listener_queue: asyncio.Queue[str]) -> list[dict]:
    found = []
    while not listener_queue.empty():
        found.append(json.loads(listener_queue.get_nowait())["event"])
    return found


async def test_a_listener_gets_its_bots_events_and_a_slow_one_loses_the_newest_with_a_count() -> None:
    feed = EventFeed()
    feed.publish(event("nobody listens"), "received")  # costs nothing and keeps nothing
    everything = feed.subscribe(None)
    only_beta = feed.subscribe("beta")
    feed.publish(event("to alpha"), "received")
    feed.publish(event("to beta", bot="beta"), "sent")
    assert [e["preview"] for e in items(everything.queue)] == ["to alpha", "to beta"]
    assert [(e["preview"], e["stage"]) for e in items(only_beta.queue)] == [("to beta", "sent")]

    for i in range(QUEUE_SIZE + 25):
        feed.publish(event(f"burst {i}"), "received")
    assert everything.queue.qsize() == QUEUE_SIZE and everything.take_dropped() == 25
    assert everything.take_dropped() == 0
    assert items(everything.queue)[0]["preview"] == "burst 0"  # the oldest are kept, in order
    assert only_beta.dropped == 0
    feed.unsubscribe(everything)
    feed.unsubscribe(only_beta)
    assert len(feed) == 0


def test_listeners_are_bounded() -> None:
    feed = EventFeed(max_listeners=2)
    feed.subscribe(None)
    feed.subscribe(None)
    with pytest.raises(TooManyListeners):
        feed.subscribe("alpha")


@given(st.text(min_size=4))
def test_a_masked_event_never_shows_its_text(text: str) -> None:
    shown = summary(event(text, mask=True), "received")
    others = json.dumps({key: value for key, value in shown.items() if key != "preview"})
    assume(text not in others and text not in '"***"')
    assert shown["preview"] == "***" and shown["masked"] is True
    assert text not in json.dumps(shown)


async def test_a_browser_that_falls_behind_is_told_how_many_events_it_missed(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.url}/api/v1/admin/live",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert (await ws.receive_json())["type"] == "ready"
            # Published faster than anything is sent (no await in between): the queue fills up.
            for i in range(QUEUE_SIZE + 40):
                srv.pipeline.feed.publish(event(f"e{i}"), "received")
            dropped, seen = 0, 0
            async with asyncio.timeout(10):
                while seen < QUEUE_SIZE:
                    message = await ws.receive_json()
                    if message["type"] == "dropped":
                        dropped += message["count"]
                    else:
                        seen += 1
            assert dropped == 40
