"""The Graph emulator's Instagram accounts and Attachment Upload API, as Meta answers them; and an Instagram user
writing to a real server's bot through its control API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import DEMO_APP_SECRET, DEMO_PAGE_ID, DEMO_TOKEN, GraphEmulator
from channel_messenger.emulator.instagram import DEMO_INSTAGRAM_ACCOUNT
from messenger_testkit import MODULE

from botpress_py.testing import make_bot, run_server

IGSID, PSID = "6100000000000001", "2000000000000001"
CAT = "https://cdn.example/cat.png"


@pytest.fixture
async def emulator() -> AsyncIterator[GraphEmulator]:
    pages = {DEMO_PAGE_ID: {"token": DEMO_TOKEN, "instagram": DEMO_INSTAGRAM_ACCOUNT}, "2002": {"token": "T2"}}
    async with GraphEmulator(pages, any_user=True) as emu:
        emu.instagram.add_user(DEMO_INSTAGRAM_ACCOUNT, IGSID)
        yield emu


async def graph(http: aiohttp.ClientSession, emulator: GraphEmulator, method: str, path: str, body: Any = None,
                token: str = DEMO_TOKEN, **params: str) -> tuple[int, dict[str, Any]]:
    async with http.request(method, f"{emulator.url}/v25.0{path}", params={"access_token": token, **params},
                            json=body) as response:
        return response.status, await response.json()


def message(recipient: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"recipient": {"id": recipient}, "messaging_type": "RESPONSE", "message": body}


async def test_the_page_tells_its_instagram_account(emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    assert await graph(http, emulator, "GET", f"/{DEMO_PAGE_ID}", fields="instagram_business_account") == \
        (200, {"id": DEMO_PAGE_ID, "instagram_business_account": {"id": DEMO_INSTAGRAM_ACCOUNT}})
    assert await graph(http, emulator, "GET", "/2002", token="T2", fields="instagram_business_account,name") == \
        (200, {"id": "2002", "name": "Page 2002"})


async def test_sends_to_instagram_users_keep_instagrams_limits(emulator: GraphEmulator,
                                                               http: aiohttp.ClientSession) -> None:
    long = {"text": "é" * 501}  # 1,002 bytes: fine on Messenger, too long on Instagram
    assert (await graph(http, emulator, "POST", "/me/messages", message(PSID, long)))[0] == 200
    status, answer = await graph(http, emulator, "POST", "/me/messages", message(IGSID, long))
    assert (status, answer["error"]["code"]) == (400, 100) and "1000 bytes" in answer["error"]["message"]
    refused = [
        {"attachment": {"type": "template", "payload": {"template_type": "receipt"}}},
        {"attachment": {"type": "template", "payload": {"template_type": "button", "text": "Call us", "buttons": [
            {"type": "phone_number", "title": "Call", "payload": "+15555550100"}]}}},
        {"attachment": {"type": "file", "payload": {"url": "https://cdn.example/terms.docx"}}},
    ]
    for body in refused:
        assert (await graph(http, emulator, "POST", "/me/messages", message(IGSID, body)))[0] == 400, body
        assert (await graph(http, emulator, "POST", "/me/messages", message(PSID, body)))[0] == 200, body
    button = {"attachment": {"type": "template", "payload": {"template_type": "button", "text": "Pick", "buttons": [
        {"type": "postback", "title": "Go", "payload": "GO"}]}}}
    assert (await graph(http, emulator, "POST", "/me/messages", message(IGSID, button)))[0] == 200


async def test_attachment_ids_belong_to_a_page_and_platform_until_they_expire(
        emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    upload = {"message": {"attachment": {"type": "image", "payload": {"url": CAT, "is_reusable": True}}}}
    status, answer = await graph(http, emulator, "POST", f"/{DEMO_PAGE_ID}/message_attachments", upload)
    assert status == 200
    messenger_id = answer["attachment_id"]
    status, answer = await graph(http, emulator, "POST", "/me/message_attachments", {**upload, "platform": "instagram"})
    instagram_id = answer["attachment_id"]

    def by_id(attachment_id: str, kind: str = "image") -> dict[str, Any]:
        return {"attachment": {"type": kind, "payload": {"attachment_id": attachment_id}}}

    assert (await graph(http, emulator, "POST", "/me/messages", message(PSID, by_id(messenger_id))))[0] == 200
    assert (await graph(http, emulator, "POST", "/me/messages", message(IGSID, by_id(instagram_id))))[0] == 200
    assert (await graph(http, emulator, "POST", "/me/messages", message(IGSID, by_id(messenger_id))))[0] == 400
    assert (await graph(http, emulator, "POST", "/me/messages", message(PSID, by_id(messenger_id, "video"))))[0] \
        == 400
    assert (await graph(http, emulator, "POST", "/me/messages", message(PSID, by_id(messenger_id)), token="T2"))[0] \
        == 400, "another Page's id"
    assert (await graph(http, emulator, "POST", "/2002/message_attachments", {**upload, "platform": "instagram"},
                        token="T2"))[0] == 400, "no Instagram account linked to that Page"

    async with http.post(f"{emulator.url}/_emulator/attachments/expire", json={"ids": [messenger_id]}) as response:
        assert await response.json() == {"expired": 1}
    status, answer = await graph(http, emulator, "POST", "/me/messages", message(PSID, by_id(messenger_id)))
    assert (status, answer["error"]["code"]) == (400, 100)
    async with http.get(f"{emulator.url}/_emulator/attachments") as response:
        listed = (await response.json())["attachments"]
    assert [(a["id"], a["platform"], a["expired"]) for a in listed] == [(messenger_id, "messenger", True),
                                                                        (instagram_id, "instagram", False)]

    emulator.attachments.broken_urls.add("https://cdn.example/gone.png")
    gone = {"message": {"attachment": {"type": "image", "payload": {"url": "https://cdn.example/gone.png",
                                                                    "is_reusable": True}}}}
    status, answer = await graph(http, emulator, "POST", "/me/message_attachments", gone)
    assert (status, answer["error"].get("error_subcode")) == (400, 2018008)
    not_reusable = {"message": {"attachment": {"type": "image", "payload": {"url": CAT}}}}
    assert (await graph(http, emulator, "POST", "/me/message_attachments", not_reusable))[0] == 400


async def test_the_instagram_profile_is_the_accounts_own(emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    breakers = [{"locale": "default", "call_to_actions": [{"question": "Hours?", "payload": "HOURS"}]}]
    body = {"platform": "instagram", "ice_breakers": breakers}
    assert await graph(http, emulator, "POST", "/me/messenger_profile", body, platform="instagram") == \
        (200, {"result": "success"})
    assert emulator.instagram.profiles[DEMO_INSTAGRAM_ACCOUNT] == {"ice_breakers": breakers}
    assert emulator.pages[DEMO_PAGE_ID].profile == {}, "not the Page's Messenger profile"
    assert await graph(http, emulator, "GET", "/me/messenger_profile", platform="instagram", fields="ice_breakers") == \
        (200, {"data": [{"ice_breakers": breakers}]})
    for bad in ({"platform": "instagram", "greeting": [{"locale": "default", "text": "Hi"}]},
                {"platform": "instagram", "ice_breakers": [{"question": "Flat?", "payload": "OLD_FORMAT"}]},
                {"platform": "instagram", "ice_breakers": [{**breakers[0], "locale": "fr_FR"}]}):
        assert (await graph(http, emulator, "POST", "/me/messenger_profile", bad, platform="instagram"))[0] == 400
    assert await graph(http, emulator, "DELETE", "/me/messenger_profile", {"fields": ["ice_breakers"]},
                       platform="instagram") == (200, {"result": "success"})
    assert emulator.instagram.profiles[DEMO_INSTAGRAM_ACCOUNT] == {}
    assert (await graph(http, emulator, "POST", "/me/messenger_profile", body, token="T2", platform="instagram"))[0] \
        == 400, "a Page without an Instagram account"


async def test_an_instagram_user_writes_through_the_control_api(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pages = {DEMO_PAGE_ID: {"token": DEMO_TOKEN, "instagram": DEMO_INSTAGRAM_ACCOUNT}}
    async with GraphEmulator(pages, app_secret=DEMO_APP_SECRET, any_user=True) as emulator:
        make_bot(data, "shop", qna={"entries": [{"id": "hi", "questions": ["hello"],
                                                "answers": [{"type": "text", "text": "Hi from Instagram!"}]}]},
                 module_configs={MODULE: {"enabled": True, "graphApiUrl": emulator.url, "accessToken": DEMO_TOKEN,
                                          "appSecret": DEMO_APP_SECRET, "instagram": {"enabled": True}}})
        async with run_server(data, modules=[MODULE, "qna"]) as server, aiohttp.ClientSession() as http:
            emulator.server_url = server.url
            async with http.post(f"{emulator.url}/_emulator/instagram/send",
                                 json={"psid": "6100000000000042", "text": "hello", "wait": True,
                                       "settle": 0.3}) as response:
                answer = await response.json()
            assert answer["status"] == 200 and answer["timedOut"] is False
            assert answer["event"]["recipient"] == {"id": DEMO_INSTAGRAM_ACCOUNT}
            sent = [r["json"] for r in answer["replies"] if "message" in r["json"]]
            assert sent == [message("6100000000000042", {"text": "Hi from Instagram!"})]
            assert all(r["query"]["access_token"] == "***" for r in answer["replies"])
            history = await server.storage.messages_for("shop", "instagram", "6100000000000042")
            assert history[0]["payload"]["text"] == "hello"

            async with http.get(f"{emulator.url}/_emulator/instagram") as response:
                info = await response.json()
            assert info["accounts"][0]["id"] == DEMO_INSTAGRAM_ACCOUNT
            assert info["users"] == {"6100000000000042": DEMO_INSTAGRAM_ACCOUNT}
            async with http.post(f"{emulator.url}/_emulator/instagram/send", json={"text": "no user"}) as response:
                assert response.status == 400
