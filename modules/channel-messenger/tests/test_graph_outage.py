"""A Graph API outage (5xx for a while) ends with every reply delivered, in order per conversation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from channel_messenger import graph_client
from channel_messenger.emulator import GraphEmulator

from botpress_py.testing import make_bot, run_server, send_retry_backoff, wait_for, write_json

PAGE, TOKEN, SECRET = "7007", "EAA-outage-token", "outage-app-secret-123456"
WORDS = ["one", "two", "three", "four"]
USERS = ["u-a", "u-b", "u-c"]


@pytest.fixture
def quick_backoffs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Backoffs of milliseconds, the server's send retries and the Graph client's: the outage is short,
    the order logic is what is tested."""
    monkeypatch.setattr(graph_client, "BACKOFF_FIRST_SECONDS", 0.002)
    monkeypatch.setattr(graph_client, "BACKOFF_MAX_SECONDS", 0.01)
    with send_retry_backoff(0.02):
        yield


async def test_outage_then_every_reply_in_order(tmp_path: Path, quick_backoffs: None) -> None:
    data_dir = tmp_path / "data"
    async with GraphEmulator() as graph:
        graph.add_page(PAGE, TOKEN)
        write_json(data_dir / "global" / "config" / "channel-messenger.json",
                   {"appSecret": SECRET, "verifyToken": "v", "graphApiUrl": graph.url})
        make_bot(data_dir, "outage", module_configs={"channel-messenger": {
            "enabled": True, "accessToken": TOKEN, "pageId": PAGE, "typingIndicators": False}},
            qna={"entries": [{"id": w, "questions": [w], "answers": [{"type": "text", "text": f"reply {w}"}]}
                             for w in WORDS]})
        async with run_server(data_dir, modules=["channel-messenger", "qna"]) as srv, \
                aiohttp.ClientSession() as http:
            outage = graph.add_rule(status=503, code=None, path=r"/messages$")
            webhook = f"{srv.url}/api/v1/bots/___/mod/channel-messenger/webhook"

            async def conversation(user: str) -> None:
                for i, word in enumerate(WORDS):
                    body = GraphEmulator.webhook_body(PAGE, [GraphEmulator.user_message(
                        PAGE, user, word, mid=f"mid.{user}.{i}")])
                    raw, headers = GraphEmulator.signed(body, SECRET)
                    async with http.post(webhook, data=raw, headers=headers) as r:
                        assert r.status == 200

            await asyncio.gather(*(conversation(u) for u in USERS))
            # the outage lasts until the pipeline has retried every conversation's first reply
            await wait_for(lambda: srv.metrics.counters["bp_events_send_retried_total"] >= 2 * len(USERS), 10)
            assert graph.sent_messages == []
            graph.remove_rule(outage)
            await graph.wait_for(lambda g: len(g.sent_messages) == len(USERS) * len(WORDS), timeout=20)
            for user in USERS:
                got = [m["message"]["text"] for m in graph.sent_messages if m["recipient"]["id"] == user]
                assert got == [f"reply {w}" for w in WORDS], user
            assert srv.metrics.counters["bp_events_send_failed_total"] == 0
