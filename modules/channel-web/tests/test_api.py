"""The web chat's REST API without a browser: identity, sending, history, reset, bad input."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from webchat_testkit import WebChat

from botpress_py.testing import BotpressServer


async def test_a_visitor_says_hello_and_reads_the_answer_with_its_quick_replies(chat: WebChat) -> None:
    await chat.start()
    sent = await chat.say("hello")
    assert sent["duplicate"] is False and sent["conversationId"] == chat.conversation
    replies = await chat.wait_for_replies(2)
    assert replies[0]["payload"] == {"type": "text", "text": "Hi there! 😊 Good to see you."}
    choice = replies[1]["payload"]
    assert choice["type"] == "single-choice" and [c["value"] for c in choice["choices"]] == ["TOUR", "HELP", "ABOUT"]
    # a quick reply is answered like Messenger's: by its value
    status, _ = await chat.post({"type": "quick_reply", "text": "About you", "payload": "ABOUT"})
    assert status == 200
    later = await chat.wait_for_replies(3)
    assert later[2]["direction"] == "outgoing" and later[2]["id"] not in {r["id"] for r in replies}
    history = (await chat.history())["messages"]
    assert [m["direction"] for m in history[:2]] == ["incoming", "outgoing"]
    assert history[0]["payload"] == {"type": "text", "text": "hello"} and history[0]["clientMessageId"]


async def test_postbacks_and_say_something_reach_the_bot(chat: WebChat) -> None:
    await chat.start()
    status, _ = await chat.post({"type": "postback", "payload": "TOUR", "title": "Take the tour"})
    assert status == 200
    replies = await chat.wait_for_replies(2)
    assert replies[1]["payload"]["type"] == "carousel"


async def test_the_same_client_message_id_is_stored_once(chat: WebChat) -> None:
    await chat.start()
    first = await chat.post({"type": "text", "text": "hello"}, clientMessageId="m-1")
    again = await chat.post({"type": "text", "text": "hello"}, clientMessageId="m-1")
    assert first[0] == again[0] == 200 and (first[1]["duplicate"], again[1]["duplicate"]) == (False, True)
    await chat.wait_for_replies(2)
    incoming = [m for m in (await chat.history())["messages"] if m["direction"] == "incoming"]
    assert len(incoming) == 1


async def test_history_pages_back_and_catches_up(chat: WebChat, server: BotpressServer) -> None:
    await chat.start()
    for word in ("hello", "help", "about"):
        await chat.say(word)
    await chat.wait_for_replies(4)
    full = (await chat.history(limit=200))["messages"]
    seqs = [m["seq"] for m in full]
    assert seqs == sorted(seqs)
    page = await chat.history(limit=2)
    assert [m["id"] for m in page["messages"]] == [m["id"] for m in full[-2:]] and page["more"] is True
    earlier = await chat.history(limit=2, before=page["first"])
    assert [m["id"] for m in earlier["messages"]] == [m["id"] for m in full[-4:-2]]
    since = await chat.history(after=seqs[1], limit=200)
    assert [m["id"] for m in since["messages"]] == [m["id"] for m in full[2:]] and since["more"] is False
    assert since["cursor"] == seqs[-1]


async def test_reset_starts_an_empty_conversation_and_keeps_the_old_one(chat: WebChat) -> None:
    await chat.start()
    await chat.say("hello")
    await chat.wait_for_replies(2)
    old = chat.conversation
    new = await chat.new_conversation()
    assert new != old and (await chat.history())["messages"] == []
    await chat.say("hello")
    await chat.wait_for_replies(2)
    chat.conversation = old
    assert len((await chat.history())["messages"]) == 3


async def test_a_visitor_reads_only_their_own_conversations(server: BotpressServer,
                                                              http: aiohttp.ClientSession) -> None:
    alice = await WebChat(http, server.url, "welcome-bot").start()
    await alice.say("hello")
    await alice.wait_for_replies(2)
    mallory = await WebChat(http, server.url, "welcome-bot").start()
    mallory.conversation = alice.conversation  # the id alone opens nothing of Alice's
    assert (await mallory.history())["messages"] == []
    # tokens are signed: Alice's id with another signature, or Mallory's signature, is refused
    for forged in (f"{alice.user_id}.{mallory.token.split('.')[1]}", alice.user_id, f"{alice.token}x",
                   "v" + "A" * 22 + "." + "B" * 43, ""):
        mallory.token = forged
        async with http.get(f"{mallory.base}/conversations/{alice.conversation}/messages",
                            headers=mallory.auth) as r:
            assert r.status == 401, forged
            assert (await r.json())["error"] in ("invalid visitor token", "missing visitor token")
        assert (await mallory.post({"type": "text", "text": "hi"}))[0] == 401
    async with http.get(f"{alice.base}/conversations/{alice.conversation}/messages") as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"


async def test_a_token_is_valid_for_its_bot_only(tmp_path: Any, http: aiohttp.ClientSession) -> None:
    from webchat_testkit import shipped_data, start_web_server

    from botpress_py.testing import make_bot

    data = shipped_data(tmp_path)
    make_bot(data, "other-bot")
    async with start_web_server(data) as server:
        visitor = await WebChat(http, server.url, "welcome-bot").start()
        other = WebChat(http, server.url, "other-bot")
        other.token, other.conversation = visitor.token, visitor.conversation
        status, body = await other.post({"type": "text", "text": "hi"})
        assert (status, body["error"]) == (401, "invalid visitor token")


@pytest.mark.parametrize(("body", "field"), [
    ({"payload": {"type": "text", "text": "hi"}}, "conversationId"),
    ({"conversationId": "../etc", "payload": {"type": "text", "text": "hi"}}, "conversationId"),
    ({"conversationId": "c1", "payload": {"type": "text", "text": ""}}, "payload.text"),
    ({"conversationId": "c1", "payload": {"type": "text", "text": "   "}}, "payload.text"),
    ({"conversationId": "c1", "payload": {"type": "text", "text": 42}}, "payload.text"),
    ({"conversationId": "c1", "payload": {"type": "text", "text": "x" * 361}}, "payload.text"),
    ({"conversationId": "c1", "payload": {"type": "text", "text": "a\u0000b"}}, "payload.text"),
    ({"conversationId": "c1", "payload": {"type": "text"}}, "payload.text"),
    ({"conversationId": "c1", "payload": {"type": "image", "image": "x"}}, "payload.type"),
    ({"conversationId": "c1", "payload": "hello"}, "payload"),
    ({"conversationId": "c1", "payload": {"type": "quick_reply", "text": "A"}}, "payload.payload"),
    ({"conversationId": "c1", "payload": {"type": "postback", "payload": ["x"]}}, "payload.payload"),
    ({"conversationId": "c1", "payload": {"type": "text", "text": "hi"}, "clientMessageId": "a b"}, "clientMessageId"),
    ({"conversationId": 7, "payload": {"type": "text", "text": "hi"}}, "conversationId"),
])
async def test_bad_messages_get_400_naming_the_field(chat: WebChat, body: dict[str, Any], field: str) -> None:
    await chat.start()
    async with chat.http.post(f"{chat.base}/messages", json=body, headers=chat.auth) as r:
        assert r.status == 400, await r.text()
        assert (await r.json())["field"] == field


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000, b"\"text\""])
async def test_bodies_that_are_not_json_objects_get_400(chat: WebChat, raw: bytes) -> None:
    await chat.start()
    headers = {**chat.auth, "Content-Type": "application/json"}
    async with chat.http.post(f"{chat.base}/messages", data=raw, headers=headers) as r:
        assert r.status == 400, await r.text()
        assert "error" in await r.json()


@pytest.mark.parametrize("query", ["after=-1", "after=abc", "limit=0", "limit=201", "before=1.5", "limit=" + "9" * 30])
async def test_bad_history_queries_get_400(chat: WebChat, query: str) -> None:
    await chat.start()
    async with chat.http.get(f"{chat.base}/conversations/{chat.conversation}/messages?{query}",
                             headers=chat.auth) as r:
        assert r.status == 400, await r.text()
    async with chat.http.get(f"{chat.base}/conversations/bad%20id/messages", headers=chat.auth) as r:
        assert r.status == 400 and (await r.json())["field"] == "conversationId"


async def test_bot_info_shows_the_bot_and_its_info_page_settings(server: BotpressServer, chat: WebChat) -> None:
    async with chat.http.get(f"{chat.base}/botInfo") as r:
        info = await r.json()
    assert info["name"] == "Welcome Bot" and info["showBotInfoPage"] is True
    assert info["maxMessageLength"] == 360 and info["description"]


async def test_unknown_and_disabled_bots(server: BotpressServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/api/v1/bots/nobody/mod/channel-web/botInfo") as r:
        assert r.status == 404
    await server.registry.set_disabled("welcome-bot", True)
    async with http.get(f"{server.url}/api/v1/bots/welcome-bot/mod/channel-web/botInfo") as r:
        assert r.status == 404 and (await r.json())["error"] == "bot is disabled"


async def test_visitor_messages_are_rate_limited_per_visitor(server: BotpressServer,
                                                             http: aiohttp.ClientSession) -> None:
    config = server.data_dir / "bots" / "welcome-bot" / "config" / "channel-web.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"rateLimit": {"burst": 3, "perMinute": 1}}))
    await server.registry.reload("welcome-bot")
    greedy = await WebChat(http, server.url, "welcome-bot").start()  # the conversation costs one
    statuses = [(await greedy.post({"type": "text", "text": f"m{i}"}))[0] for i in range(4)]
    assert statuses == [200, 200, 429, 429]
    async with http.post(f"{greedy.base}/messages", headers=greedy.auth,
                         json={"conversationId": greedy.conversation, "payload": {"type": "text", "text": "x"}}) as r:
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    polite = await WebChat(http, server.url, "welcome-bot").start()
    assert (await polite.post({"type": "text", "text": "hello"}))[0] == 200, "other visitors are not held back"


async def test_new_visitors_are_limited_per_client_address(server: BotpressServer,
                                                           http: aiohttp.ClientSession) -> None:
    config = server.data_dir / "bots" / "welcome-bot" / "config" / "channel-web.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"rateLimit": {"newVisitorsPerMinute": 2}}))
    await server.registry.reload("welcome-bot")
    statuses = []
    for _ in range(3):
        async with http.post(f"{server.url}/api/v1/bots/welcome-bot/mod/channel-web/visitors") as r:
            statuses.append(r.status)
    assert statuses == [201, 201, 429]


async def test_the_channel_can_be_turned_off_per_bot(server: BotpressServer, http: aiohttp.ClientSession) -> None:
    config = server.data_dir / "bots" / "welcome-bot" / "config" / "channel-web.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"enabled": False}))
    await server.registry.reload("welcome-bot")
    async with http.get(f"{server.url}/status") as r:
        state = (await r.json())["bots"]["welcome-bot"]["modules"]["channel-web"]
    assert state == {"state": "off", "reason": "disabled in config/channel-web.json (enabled: false)"}
    async with http.post(f"{server.url}/api/v1/bots/welcome-bot/mod/channel-web/visitors") as r:
        assert r.status == 404
