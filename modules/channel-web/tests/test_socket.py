"""The visitor's WebSocket: replies and typing pushed, catching up after a blip, bots going away."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from webchat_testkit import WebChat, web_channel

from botpress_py.sdk import IOEvent
from botpress_py.testing import BotpressServer, wait_for


async def receive(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next message of that type (others, such as typing, are skipped)."""
    while True:
        message = await ws.receive(timeout=timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        data = json.loads(message.data)
        if data["type"] == kind:
            return data


async def sent_status(server: BotpressServer, event_id: str) -> str | None:
    row = await server.storage.outbox_get(event_id)
    return row.status if row else None


def proactive(server: BotpressServer, chat: WebChat, text: str) -> IOEvent:
    return IOEvent(type="text", channel="web", direction="outgoing", botId="welcome-bot", target=chat.user_id,
                   threadId=chat.conversation, payload={"type": "text", "text": text})


async def test_replies_and_typing_are_pushed_to_the_open_socket(chat: WebChat) -> None:
    await chat.start()
    async with chat.socket() as ws:
        ready = await receive(ws, "ready")
        assert ready["messages"] == [] and ready["conversationId"] == chat.conversation
        await chat.post({"type": "postback", "payload": "GET_STARTED"})
        first = await receive(ws, "message")
        assert first["message"]["payload"]["text"].startswith("Welcome!")
        typing = await receive(ws, "typing")
        assert typing == {"type": "typing", "conversationId": chat.conversation, "value": 800}
        card = await receive(ws, "message")
        assert card["message"]["payload"]["type"] == "card"


async def test_a_reply_sent_while_the_socket_is_down_arrives_on_reconnect(chat: WebChat,
                                                                          server: BotpressServer) -> None:
    await chat.start()
    async with chat.socket() as ws:
        ready = await receive(ws, "ready")
        await chat.say("hello")
        await receive(ws, "message")
        await receive(ws, "message")
        await chat.wait_for_replies(2)
        cursor = (await chat.history())["cursor"]
    await wait_for(lambda: not web_channel(server).hub.connected(("welcome-bot", chat.user_id)))
    bot = server.module_contexts["channel-web"].get_bot("welcome-bot")
    assert bot is not None and ready["cursor"] == 0
    event = proactive(server, chat, "while you were away")
    await bot.send([event])

    async def sent() -> bool:
        return await sent_status(server, event.id) == "sent"

    await wait_for(sent, timeout=10)  # delivered (to history): nobody was connected
    async with chat.socket(after=cursor) as ws:
        ready = await receive(ws, "ready")
    assert [m["payload"]["text"] for m in ready["messages"]] == ["while you were away"]
    assert ready["cursor"] > cursor


async def test_a_catch_up_includes_deliveries_not_yet_in_history(chat: WebChat, server: BotpressServer) -> None:
    """A reply is written to history just after the channel delivered it; a socket connecting in
    between still gets it, from the hub's recent deliveries."""
    await chat.start()
    channel = web_channel(server)
    bot = server.module_contexts["channel-web"].get_bot("welcome-bot")
    event = proactive(server, chat, "just delivered")
    assert await channel.send(event, bot) is True  # delivered, not recorded in history (yet)
    async with chat.socket() as ws:
        ready = await receive(ws, "ready")
    assert [m["payload"]["text"] for m in ready["messages"]] == ["just delivered"]


async def test_disabling_the_bot_closes_its_sockets_as_unavailable(chat: WebChat, server: BotpressServer) -> None:
    await chat.start()
    async with chat.socket() as ws:
        await receive(ws, "ready")
        await server.registry.set_disabled("welcome-bot", True)
        closed = await ws.receive(timeout=10)
        assert (closed.type, closed.data, closed.extra) == (aiohttp.WSMsgType.CLOSE, 4503, "bot unavailable")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with chat.socket():
            pass
    assert refused.value.status == 404
    await server.registry.set_disabled("welcome-bot", False)
    async with chat.socket() as ws:
        await receive(ws, "ready")
        await chat.say("hello")
        assert (await receive(ws, "message"))["message"]["direction"] == "outgoing"


@pytest.mark.parametrize("hello", [
    {"type": "auth", "token": "forged", "conversationId": "c1"},
    {"type": "auth", "conversationId": "c1"},
    {"type": "hello"},
    "not json",
    {"type": "auth", "token": "<valid>", "conversationId": "../x"},
    {"type": "auth", "token": "<valid>", "conversationId": "c1", "after": -5},
    {"type": "auth", "token": "<valid>", "conversationId": "c1", "after": "12"},
])
async def test_a_socket_without_a_valid_auth_message_is_closed_4401(chat: WebChat, hello: Any) -> None:
    await chat.start()
    async with chat.http.ws_connect(f"{chat.base}/socket") as ws:
        if isinstance(hello, dict) and hello.get("token") == "<valid>":
            hello = {**hello, "token": chat.token}
        await ws.send_str(hello if isinstance(hello, str) else json.dumps(hello))
        closed = await ws.receive(timeout=10)
        assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 4401)


async def test_a_socket_sees_only_its_visitor(server: BotpressServer, http: aiohttp.ClientSession) -> None:
    alice = await WebChat(http, server.url, "welcome-bot").start()
    bob = await WebChat(http, server.url, "welcome-bot").start()
    async with alice.socket() as alice_ws, bob.socket() as bob_ws:
        await receive(alice_ws, "ready")
        await receive(bob_ws, "ready")
        await bob.say("hello")
        await receive(bob_ws, "message")
        await alice.say("help")
        got = await receive(alice_ws, "message")
        assert got["message"]["conversationId"] == alice.conversation
        assert got["message"]["payload"]["text"].startswith("I can show you around")


async def test_server_stop_closes_sockets_with_going_away(tmp_path: Any, http: aiohttp.ClientSession) -> None:
    from webchat_testkit import shipped_data, start_web_server

    async with start_web_server(shipped_data(tmp_path)) as server:
        chat = await WebChat(http, server.url, "welcome-bot").start()
        ws = await http.ws_connect(f"{chat.base}/socket")
        await ws.send_str(json.dumps({"type": "auth", "token": chat.token, "conversationId": chat.conversation}))
        await receive(ws, "ready")
    closed = await ws.receive(timeout=5)
    assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    await ws.close()


async def test_erasing_a_visitor_deletes_their_messages_and_closes_their_chats(tmp_path: Any,
                                                                              http: aiohttp.ClientSession) -> None:
    from webchat_testkit import shipped_data, start_web_server

    async with start_web_server(shipped_data(tmp_path), admin={"token": "t"}) as server:
        chat = await WebChat(http, server.url, "welcome-bot").start()
        await chat.say("hello")
        await chat.wait_for_replies(2)
        async with chat.socket() as ws:
            await receive(ws, "ready")
            url = f"{server.url}/api/v1/admin/bots/welcome-bot/users/web/{chat.user_id}"
            async with http.delete(url, headers={"Authorization": "Bearer t"}) as r:
                assert r.status == 200 and (await r.json())["erased"]["messages"] == 3
            closed = await ws.receive(timeout=10)
            assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 4401)
        assert (await chat.history())["messages"] == []
