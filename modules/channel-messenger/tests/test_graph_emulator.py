"""The fake Graph API: Meta's error shape, Send API limits, profile API, faults, recording."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from channel_messenger.cli.emulator import main
from channel_messenger.emulator import GraphEmulator

TOKEN = "page-token"


@pytest.fixture
async def emu() -> AsyncIterator[GraphEmulator]:
    async with GraphEmulator(pages={"1001": {"token": TOKEN, "name": "Shop"}},
                             users={"42": {"first_name": "Ada", "locale": "en_GB"}},
                             profile_rate_limit=(3, 600)) as emulator:
        yield emulator


async def call(http: aiohttp.ClientSession, emu: GraphEmulator, method: str, path: str,
               body: Any = None, token: str = TOKEN, **params: str) -> tuple[int, dict[str, Any]]:
    async with http.request(method, f"{emu.url}/v25.0{path}", params={"access_token": token, **params},
                            json=body) as response:
        return response.status, await response.json()


def send(text: Any = None, **message: Any) -> dict[str, Any]:
    body = {"text": text} if text is not None else {}
    return {"recipient": {"id": "42"}, "messaging_type": "RESPONSE", "message": {**body, **message}}


def assert_meta_error(answer: dict[str, Any], code: int) -> None:
    error = answer["error"]
    assert error["code"] == code
    assert {"message", "type", "code", "fbtrace_id"} <= set(error)


async def test_me_and_bad_token(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    assert await call(http, emu, "GET", "/me") == (200, {"id": "1001", "name": "Shop"})
    status, answer = await call(http, emu, "GET", "/me", token="wrong")
    assert status == 400
    assert_meta_error(answer, 190)
    assert answer["error"]["type"] == "OAuthException"


async def test_send_success_and_page_path(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    status, answer = await call(http, emu, "POST", "/me/messages", send("hi"))
    assert status == 200 and answer["recipient_id"] == "42" and answer["message_id"]
    status, answer = await call(http, emu, "POST", "/1001/messages", {"recipient": {"id": "42"},
                                                                        "sender_action": "typing_on"})
    assert (status, answer) == (200, {"recipient_id": "42"})
    assert emu.sent == [send("hi"), {"recipient": {"id": "42"}, "sender_action": "typing_on"}]
    assert emu.sent_messages == [send("hi")]


@pytest.mark.parametrize(
    "body",
    [
        send("a" * 2001),
        send("😀" * 1001),
        send("t", quick_replies=[{"content_type": "text", "title": str(i), "payload": "p"} for i in range(14)]),
        send("t", quick_replies=[{"content_type": "text", "title": "x" * 21, "payload": "p"}]),
        send(attachment={"type": "template", "payload": {"template_type": "generic",
                                                         "elements": [{"title": "t"}] * 11}}),
        send(attachment={"type": "template", "payload": {"template_type": "generic", "elements": [
            {"title": "t", "buttons": [{"type": "postback", "title": "b", "payload": "p"}] * 4}]}}),
        send(attachment={"type": "template", "payload": {"template_type": "generic",
                                                         "elements": [{"title": "x" * 81}]}}),
        send(),
        {"recipient": {"id": "42"}, "message": {"text": "no messaging_type"}},
        {"recipient": {"id": "42"}, "messaging_type": "MESSAGE_TAG", "message": {"text": "no tag"}},
        {"message": {"text": "no recipient"}, "messaging_type": "RESPONSE"},
    ],
)
async def test_limits_are_error_100(http: aiohttp.ClientSession, emu: GraphEmulator, body: dict) -> None:
    status, answer = await call(http, emu, "POST", "/me/messages", body)
    assert status == 400
    assert_meta_error(answer, 100)
    assert emu.sent == []


async def test_limits_at_the_edge_are_accepted(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    edge = [
        send("a" * 2000),
        send("t", quick_replies=[{"content_type": "text", "title": "x" * 20, "payload": "p"}] * 13),
        send(attachment={"type": "template", "payload": {"template_type": "generic", "elements": [
            {"title": "x" * 80, "buttons": [{"type": "postback", "title": "b", "payload": "p"}] * 3}] * 10}}),
    ]
    for body in edge:
        assert (await call(http, emu, "POST", "/me/messages", body))[0] == 200


async def test_profile_api(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    menu = [{"locale": "default", "composer_input_disabled": False,
             "call_to_actions": [{"type": "postback", "title": "Help", "payload": "HELP"}]}]
    status, answer = await call(http, emu, "POST", "/me/messenger_profile", {"persistent_menu": menu})
    assert status == 400 and "Get Started" in answer["error"]["message"]
    body = {"greeting": [{"locale": "default", "text": "Hi"}], "get_started": {"payload": "GO"},
            "persistent_menu": menu}
    assert await call(http, emu, "POST", "/me/messenger_profile", body) == (200, {"result": "success"})
    assert await call(http, emu, "GET", "/me/messenger_profile", fields="greeting,get_started") == (
        200, {"data": [{"greeting": [{"locale": "default", "text": "Hi"}], "get_started": {"payload": "GO"}}]})
    assert await call(http, emu, "DELETE", "/me/messenger_profile", {"fields": ["persistent_menu", "greeting"]}) \
        == (200, {"result": "success"})
    assert emu.pages["1001"].profile == {"get_started": {"payload": "GO"}}


async def test_profile_rate_limit(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    body = {"greeting": [{"locale": "default", "text": "Hi"}]}
    for _ in range(3):
        assert (await call(http, emu, "POST", "/me/messenger_profile", body))[0] == 200
    status, answer = await call(http, emu, "POST", "/me/messenger_profile", body)
    assert status == 400
    assert_meta_error(answer, 613)


async def test_greeting_over_160_is_refused(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    status, answer = await call(http, emu, "POST", "/me/messenger_profile",
                                {"greeting": [{"locale": "default", "text": "x" * 161}]})
    assert status == 400
    assert_meta_error(answer, 100)


async def test_user_profile(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    assert await call(http, emu, "GET", "/42", fields="first_name") == (200, {"first_name": "Ada", "id": "42"})
    status, answer = await call(http, emu, "GET", "/77", fields="first_name")
    assert status == 400
    assert_meta_error(answer, 100)


async def test_planned_faults_and_rules(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    emu.fail_next(1, status=500, code=1200, path="/messages$")
    assert (await call(http, emu, "GET", "/me"))[0] == 200, "a fault for another path is kept"
    status, answer = await call(http, emu, "POST", "/me/messages", send("x"))
    assert status == 500
    assert_meta_error(answer, 1200)
    assert (await call(http, emu, "POST", "/me/messages", send("x")))[0] == 200
    rule = emu.add_rule(status=400, code=613, when=lambda body: "message" in (body or {}))
    assert (await call(http, emu, "POST", "/me/messages", {"recipient": {"id": "42"},
                                                             "sender_action": "mark_seen"}))[0] == 200
    assert (await call(http, emu, "POST", "/me/messages", send("x")))[0] == 400
    emu.remove_rule(rule)
    assert (await call(http, emu, "POST", "/me/messages", send("x")))[0] == 200
    assert [c["method"] for c in emu.calls].count("POST") == 5


async def test_wait_for_wakes_on_each_call(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    waiter = asyncio.create_task(emu.wait_for_messages(2, timeout=5))
    await call(http, emu, "POST", "/me/messages", send("one"))
    assert not waiter.done()
    await call(http, emu, "POST", "/me/messages", send("two"))
    messages = await waiter
    assert [m["message"]["text"] for m in messages] == ["one", "two"]


async def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        _ = GraphEmulator().url


async def test_calls_listing_hides_tokens(http: aiohttp.ClientSession, emu: GraphEmulator) -> None:
    await call(http, emu, "POST", "/me/messages", send("hi"))
    async with http.get(f"{emu.url}/_emulator/calls") as response:
        listing = await response.json()
    assert listing["calls"][0]["query"] == {"access_token": "***"}
    assert listing["calls"][0]["json"] == send("hi")
    assert TOKEN not in json.dumps(listing)


def test_command_line_rejects_a_bad_page_spec(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--page", "not-a-page"])
    assert "ID:TOKEN" in capsys.readouterr().err
