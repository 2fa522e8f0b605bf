"""What the admin page reads: a bot's config problems, its conversations and their history, the live feed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from botpress_py import admin_views
from botpress_py.testing import make_bot, run_server, wait_for

from .admin_support import TOKEN, call, cookie_session, login
from .failed_events_support import database_for

BEARER = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "my card is 4242 4242"


async def say(s: aiohttp.ClientSession, url: str, bot: str, user: str, text: str, **flags: Any) -> None:
    async with s.post(f"{url}/api/v1/bots/{bot}/mod/echo/in", json={"user": user, "text": text, "flags": flags}) as r:
        assert r.status == 200, await r.text()


async def test_conversations_are_listed_per_bot_most_recent_first_and_paged(data_dir: Path, env: dict,
                                                                            echo: Any) -> None:
    make_bot(data_dir, "alpha")
    make_bot(data_dir, "beta")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        for i in range(5):
            await say(s, srv.url, "alpha", f"user-{i}", f"hello {i}")
        await say(s, srv.url, "beta", "user-b", "hi beta")
        base = f"{srv.url}/api/v1/admin/bots/alpha/conversations"

        async def five_answered() -> bool:
            _, body = await call(s, "GET", base, BEARER)
            return len(body["conversations"]) == 5 and all(c["lastDirection"] == "outgoing"
                                                          for c in body["conversations"])

        await wait_for(five_answered, 10)
        seen: list[str] = []
        cursor = None
        while True:
            status, body = await call(s, "GET", base, BEARER, params={"limit": "2", **({"cursor": cursor} if cursor
                                                                                       else {})})
            assert status == 200 and len(body["conversations"]) <= 2
            seen += [c["userId"] for c in body["conversations"]]
            cursor = body["nextCursor"]
            if not cursor:
                break
        assert sorted(seen) == [f"user-{i}" for i in range(5)] and len(set(seen)) == 5
        first = (await call(s, "GET", base, BEARER))[1]["conversations"][0]
        assert first["channel"] == "test" and first["threadId"] == "t" and first["lastPreview"].startswith("echo: ")
        status, body = await call(s, "GET", base, BEARER, params={"channel": "messenger"})
        assert status == 200 and body["conversations"] == []
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots/beta/conversations", BEARER)
        assert [c["userId"] for c in body["conversations"]] == ["user-b"]


@pytest.mark.parametrize(("path", "status"), [
    ("/bots/alpha/conversations?limit=0", 400), ("/bots/alpha/conversations?limit=abc", 400),
    ("/bots/alpha/conversations?cursor=bm9wZQ", 400), ("/bots/alpha/conversations?cursor=%%%", 400),
    ("/bots/nobody/conversations", 404), ("/bots/Bad%20Id/conversations", 400),
    ("/bots/alpha/messages?channel=test", 400), ("/bots/alpha/messages?user=u", 400),
    ("/bots/alpha/messages?channel=test&user=u&before=-1", 400),
    ("/bots/alpha/messages?channel=test&user=" + "u" * 201, 400), ("/bots/nobody/problems", 404),
    ("/live?bot=nobody", 404), ("/bots/alpha/conversations?channel=a%00b", 400),
    ("/bots/alpha/messages?channel=test&user=a%00b", 400),
    ("/bots/alpha/conversations?cursor=WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwLCAiYSIsICJiIiwgImMiXQ", 400),  # a huge time
    ("/bots/alpha/conversations?cursor=WzEsICJhXHUwMDAwYiIsICJiIiwgImMiXQ", 400),  # a NUL in an id
])
async def test_bad_queries_get_clear_errors(data_dir: Path, env: dict, echo: Any, path: str, status: int) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        got, body = await call(s, "GET", f"{srv.url}/api/v1/admin{path}", BEARER)
        assert got == status and body["error"], body
        assert (await call(s, "GET", f"{srv.url}/api/v1/admin{path}"))[0] == 401  # and never without a token


async def test_history_shows_masked_messages_as_stored_and_pages_back(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        await say(s, srv.url, "alpha", "u1", "hello")
        await say(s, srv.url, "alpha", "u1", SECRET, mask=True, maskReplies=True)
        url = f"{srv.url}/api/v1/admin/bots/alpha/messages"
        query = {"channel": "test", "user": "u1", "thread": "t"}

        async def four_messages() -> list[dict[str, Any]] | None:
            body = (await call(s, "GET", url, BEARER, params=query))[1]
            return body["messages"] if len(body["messages"]) == 4 else None

        messages = await wait_for(four_messages, 10)
        assert [(m["direction"], m["masked"]) for m in messages] == [
            ("incoming", False), ("outgoing", False), ("incoming", True), ("outgoing", True)]
        assert messages[0]["preview"] == "hello" and messages[0]["payload"] == {"text": "hello"}
        assert messages[1]["type"] == "text" and messages[1]["preview"] == messages[1]["payload"]["text"] != ""
        assert messages[2]["preview"] == "***" and messages[3]["preview"] == "***"
        body_text = json.dumps(messages)
        assert "4242" not in body_text
        status, page = await call(s, "GET", url, BEARER, params={**query, "limit": "3"})
        assert status == 200 and [m["seq"] for m in page["messages"]] == [m["seq"] for m in messages[1:]]
        status, earlier = await call(s, "GET", url, BEARER, params={**query, "limit": "3", "before": page["earlier"]})
        assert status == 200 and [m["seq"] for m in earlier["messages"]] == [messages[0]["seq"]]
        assert earlier["earlier"] is None
        # the conversation list shows the stored (masked) text of the last message too
        _, listed = await call(s, "GET", f"{srv.url}/api/v1/admin/bots/alpha/conversations", BEARER)
        assert listed["conversations"][0]["lastPreview"] == "***"


async def test_problems_name_the_file_and_pointer_without_touching_the_running_bot(data_dir: Path, env: dict,
                                                                                   echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN},
                          watch={"enabled": False}) as srv, aiohttp.ClientSession() as s:
        url = f"{srv.url}/api/v1/admin/bots/alpha/problems"
        assert (await call(s, "GET", url, BEARER))[1] == {"botId": "alpha", "problems": []}
        flag = data_dir / "bots" / "alpha" / "echo-bad.flag"
        flag.write_text("")  # the module's own check of the bot's files complains
        status, body = await call(s, "GET", url, BEARER)
        assert status == 200 and body["problems"] == [
            {"file": str(flag), "pointer": "", "message": "echo-bad.flag present", "hint": "delete it"}]
        config = data_dir / "bots" / "alpha" / "config" / "echo.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"level": -1, "<img src=x onerror=alert(1)>": 1}))
        status, body = await call(s, "GET", url, BEARER)
        assert status == 200
        found = {(p["file"], p["pointer"]) for p in body["problems"]}
        assert (str(config), "/level") in found
        assert srv.registry.records["alpha"].state == "mounted"


async def read_events(ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            message = await ws.receive_json()
            if message["type"] == "event":
                found.append(message["event"])
    return found


async def test_the_live_feed_shows_events_in_and_out_filtered_by_bot_and_masked(data_dir: Path, env: dict,
                                                                                echo: Any) -> None:
    make_bot(data_dir, "alpha")
    make_bot(data_dir, "beta")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        assert len(srv.pipeline.feed) == 0
        async with s.ws_connect(f"{srv.url}/api/v1/admin/live?bot=alpha", headers=BEARER) as ws:
            assert await ws.receive_json() == {"type": "ready", "bot": "alpha"}
            assert len(srv.pipeline.feed) == 1
            await say(s, srv.url, "beta", "u1", "not for this view")
            await say(s, srv.url, "alpha", "u1", "hello")
            received, sent = await read_events(ws, 2)
            assert (received["stage"], received["direction"], received["botId"], received["preview"]) == \
                ("received", "incoming", "alpha", "hello")
            assert (sent["stage"], sent["direction"], sent["userId"], sent["channel"]) == \
                ("sent", "outgoing", "u1", "test")
            await say(s, srv.url, "alpha", "u2", SECRET, mask=True, maskReplies=True)
            masked_in, masked_out = await read_events(ws, 2)
            assert masked_in["masked"] and masked_in["preview"] == "***"
            assert masked_out["masked"] and masked_out["preview"] == "***"

            await ws.send_json({"type": "filter", "bot": "beta"})
            assert await ws.receive_json() == {"type": "filter", "bot": "beta"}
            await say(s, srv.url, "alpha", "u1", "now hidden")
            await say(s, srv.url, "beta", "u1", "now shown")
            [event, _] = await read_events(ws, 2)
            assert (event["botId"], event["preview"]) == ("beta", "now shown")
            await ws.send_str("nonsense")
            assert (await ws.receive_json())["type"] == "error"
        await wait_for(lambda: len(srv.pipeline.feed) == 0, 5)


async def test_a_live_view_opened_by_a_session_needs_its_origin_and_csrf_and_ends_with_it(
        data_dir: Path, env: dict, echo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_views, "LIVE_SESSION_CHECK_SECONDS", 0.05)
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, cookie_session() as s:
        session = await login(s, srv.url)
        url = f"{srv.url}/api/v1/admin/live"
        for query, origin in (("", srv.url), (f"?csrf={session.csrf}", "https://evil.example"),
                              ("?csrf=wrong", srv.url)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.ws_connect(url + query, headers=session.headers(csrf=False, origin=origin))
            assert refused.value.status == 403
        async with s.ws_connect(f"{url}?csrf={session.csrf}", headers=session.headers(csrf=False)) as ws:
            assert (await ws.receive_json())["type"] == "ready"
            status, _ = await call(s, "POST", f"{srv.url}/admin/logout", session.headers())
            assert status == 200
            closing = await asyncio.wait_for(ws.receive(), 5)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == admin_views.LIVE_CLOSE_SESSION_ENDED


async def test_live_views_are_bounded_and_closed_when_the_server_stops(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        srv.pipeline.feed.max_listeners = 2
        sockets = [await s.ws_connect(f"{srv.url}/api/v1/admin/live", headers=BEARER) for _ in range(2)]
        for ws in sockets:
            assert (await ws.receive_json())["type"] == "ready"
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/live", {**BEARER, "Connection": "Upgrade",
                                                                              "Upgrade": "websocket"})
        assert status == 503 and "live views" in body["error"]
        stopping = asyncio.create_task(srv.stop())
        for ws in sockets:
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
            await ws.close()
        await stopping


@given(st.text(max_size=200))
def test_any_cursor_from_outside_is_a_clear_400_or_a_page_key(text: str) -> None:
    try:
        key = admin_views._decode_cursor(text)
    except web.HTTPBadRequest as refused:
        assert "cursor" in (refused.text or "")
        return
    assert key is None or (isinstance(key[0], int) and 0 <= key[0] < 2**62
                           and all(isinstance(part, str) and "\x00" not in part for part in key[1:]))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_conversations_and_history_on_either_backend_refuse_what_it_cannot_take(
        data_dir: Path, env: dict, echo: Any, kind: str) -> None:
    make_bot(data_dir, "alpha")
    async with database_for(kind, data_dir) as database, \
            run_server(data_dir, {**env, **database.env}, modules=["echo"], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        await say(s, srv.url, "alpha", "u1", "hello")
        base = f"{srv.url}/api/v1/admin/bots/alpha"

        async def answered() -> bool:
            body = (await call(s, "GET", f"{base}/conversations", BEARER))[1]
            return [c["lastDirection"] for c in body["conversations"]] == ["outgoing"]

        await wait_for(answered, 10)
        status, body = await call(s, "GET", f"{base}/messages", BEARER, params={"channel": "test", "user": "u1"})
        assert status == 200 and body["messages"][0]["preview"] == "hello"
        for query in ({"channel": "te\x00st"}, {"cursor": "WzEsICJhXHUwMDAwYiIsICJiIiwgImMiXQ"},
                      {"cursor": "WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwLCAiYSIsICJiIiwgImMiXQ"}):
            status, body = await call(s, "GET", f"{base}/conversations", BEARER, params=query)
            assert status == 400, (query, body)
        status, _ = await call(s, "GET", f"{base}/messages", BEARER, params={"channel": "test", "user": "u\x00"})
        assert status == 400
