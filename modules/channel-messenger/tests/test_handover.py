"""Conversation routing: handing a conversation to a human (Page Inbox) and getting it back.

The bot stays silent while another app owns the thread (standby events are recorded, never
answered; its replies are not sent and say why), and answers again once control comes back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import PAGE_INBOX_APP_ID, GraphEmulator, handover_event
from channel_messenger.handover import LEGACY_KEY, SHARDS, shard_key
from messenger_testkit import (
    PAGE_A,
    TOKEN_A,
    FakeMeta,
    add_bot,
    messages_with,
    serve,
    texts,
    user_message,
    write_global,
)
from observation_kit import api, outbox, post_events

from botpress_py.testing import wait_for

QNA = {
    "entries": [
        {"id": "hello", "questions": ["hello"], "answers": [{"type": "text", "text": "hi"}]},
        {"id": "human", "questions": ["human"],
         "answers": [{"type": "text", "text": "A person will answer you here."},
                     {"type": "handover", "target": "inbox", "metadata": "asked for a human"}]},
    ],
    "fallback": [{"type": "text", "text": "fallback"}],
}


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    add_bot(folder, "shop", TOKEN_A, qna=QNA)
    return folder


def thread_calls(emulator: GraphEmulator, action: str) -> list[dict[str, Any]]:
    return emulator.calls_to(rf"/{action}_thread_control$", "POST")


def sent_to(emulator: GraphEmulator, psid: str) -> list[str]:
    return texts([m for m in messages_with(emulator, TOKEN_A) if m["recipient"]["id"] == psid])


async def history(server: Any, psid: str, count: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]]:
        found = await server.storage.messages_for("shop", "messenger", psid)
        return found if len(found) >= count else []

    return await wait_for(enough)


async def failed_replies(data: Path, psid: str, count: int) -> list[dict[str, Any]]:
    return await wait_for(lambda: (rows := [r for r in outbox(data) if r["target"] == psid
                                            and r["status"] == "failed"]) and len(rows) >= count and rows)


async def test_a_handover_answer_passes_to_the_inbox_and_the_bot_stays_silent_until_it_is_back(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    our_app = emulator.routing.app_id
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "50", "human") == 200
        await emulator.wait_for(lambda e: [c for c in thread_calls(e, "pass") if c["accepted"]])
        [call] = thread_calls(emulator, "pass")
        assert call["json"]["recipient"] == {"id": "50"}
        assert str(call["json"]["target_app_id"]) == PAGE_INBOX_APP_ID
        assert call["json"]["metadata"] == "asked for a human"
        assert emulator.routing.owner(PAGE_A, "50") == PAGE_INBOX_APP_ID
        assert sent_to(emulator, "50") == ["A person will answer you here."]

        async def with_the_inbox() -> bool:
            _, state = await api(http, server, "shop", "handover", method="GET", params={"userId": "50"})
            return state["owner"]["app"] == PAGE_INBOX_APP_ID

        await wait_for(with_the_inbox)

        # The person in the Page Inbox answers; the user's messages reach the bot as standby only.
        standby = user_message(PAGE_A, "50", "hello? is someone there", "m_standby")
        assert await post_events(meta, PAGE_A, [standby], standby=True) == 200

        async def standby_recorded() -> bool:
            stored = await server.storage.messages_for("shop", "messenger", "50")
            return any(m["payload"].get("text") == "hello? is someone there" and m["flags"].get("standby")
                       for m in stored)

        await wait_for(standby_recorded)
        status, answer = await api(http, server, "shop", "notify",
                                   {"userId": "50", "payload": {"type": "text", "text": "promo"}})
        assert status == 409 and "Page Inbox" in answer["error"]

        # The agent is done: the Inbox passes the thread back, and the bot answers again.
        emulator.routing.set_owner(PAGE_A, "50", our_app)
        back = handover_event(PAGE_A, "50", "pass_thread_control", previous_owner_app_id=PAGE_INBOX_APP_ID,
                              new_owner_app_id=our_app, metadata="resolved")
        assert await post_events(meta, PAGE_A, [back]) == 200
        assert await meta.say(PAGE_A, "50", "hello") == 200
        await emulator.wait_for(lambda e: len(sent_to(e, "50")) == 2)
        assert sent_to(emulator, "50") == ["A person will answer you here.", "hi"]
        kinds = [(m["direction"], m["type"]) for m in await history(server, "50", 7)]
        assert ("outgoing", "handover") in kinds and ("incoming", "handover") in kinds


async def test_replies_in_a_thread_owned_by_another_app_are_not_sent_and_say_why(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    emulator.routing.add_app("555", "Agent desk")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        emulator.routing.set_owner(PAGE_A, "51", "555")
        taken = handover_event(PAGE_A, "51", "take_thread_control", previous_owner_app_id=emulator.routing.app_id,
                               new_owner_app_id="555", metadata="agent takes over")
        assert await post_events(meta, PAGE_A, [taken]) == 200
        status, owner = await api(http, server, "shop", "handover", method="GET", params={"userId": "51"})
        assert status == 200 and owner["owner"]["app"] == "555"

        status, _ = await api(http, server, "shop", "inject", {"userId": "51", "text": "hello"})
        assert status == 202
        [failed] = await failed_replies(data, "51", 1)
        assert "handed over to app 555" in failed["error"] and "silent" in failed["error"]
        assert emulator.calls_to(r"/messages$") == [], "nothing reached Messenger"

        status, answer = await api(http, server, "shop", "handover", {"userId": "51", "action": "take"})
        assert status == 200 and answer["owner"] == {"app": "bot"}
        assert emulator.routing.owner(PAGE_A, "51") == emulator.routing.app_id
        assert (await api(http, server, "shop", "inject", {"userId": "51", "text": "hello"}))[0] == 202
        await emulator.wait_for(lambda e: sent_to(e, "51") == ["hi"])


async def test_a_send_refused_with_2018300_marks_the_thread_as_owned_elsewhere(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    emulator.routing.add_app("555")
    emulator.routing.set_owner(PAGE_A, "52", "555")  # the bot was not told
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "52", "hello") == 200
        [failed] = await failed_replies(data, "52", 1)
        assert "2018300" in failed["error"]
        status, owner = await api(http, server, "shop", "handover", method="GET", params={"userId": "52"})
        assert status == 200 and owner["owner"]["app"] == "another app"
        attempts = [c for c in emulator.calls_to(r"/messages$") if "message" in (c["json"] or {})]
        assert len(attempts) == 1, "not retried"
        assert (await api(http, server, "shop", "inject", {"userId": "52", "text": "hello"}))[0] == 202
        second = (await failed_replies(data, "52", 2))[1]
        assert "another app" in second["error"]
        assert len([c for c in emulator.calls_to(r"/messages$") if "message" in (c["json"] or {})]) == 1


async def test_handover_api_passes_requests_takes_and_releases(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    emulator.routing.add_app("555")
    async with serve(data) as server:
        status, answer = await api(http, server, "shop", "handover",
                                   {"userId": "53", "action": "pass", "metadata": "VIP"})
        assert status == 200 and answer["owner"]["app"] == PAGE_INBOX_APP_ID
        assert emulator.routing.owner(PAGE_A, "53") == PAGE_INBOX_APP_ID
        assert thread_calls(emulator, "pass")[-1]["json"]["metadata"] == "VIP"

        status, answer = await api(http, server, "shop", "handover",
                                   {"userId": "53", "action": "pass", "targetAppId": "555"})
        assert status == 409 and answer["subcode"] == 2018300, "only the owner passes"

        status, answer = await api(http, server, "shop", "handover", {"userId": "53", "action": "request"})
        assert status == 200 and emulator.routing.requests[-1]["psid"] == "53"
        assert answer["owner"]["app"] == PAGE_INBOX_APP_ID, "a request changes nothing until the owner passes"

        status, answer = await api(http, server, "shop", "handover", {"userId": "53", "action": "take"})
        assert status == 200 and answer["owner"] == {"app": "bot"}
        status, answer = await api(http, server, "shop", "handover", {"userId": "53", "action": "release"})
        assert status == 200 and answer["owner"]["app"] == "none"
        assert emulator.routing.owner(PAGE_A, "53") is None

        status, answer = await api(http, server, "shop", "handover",
                                   {"userId": "54", "action": "pass", "targetAppId": "999"})
        assert status == 409 and "target_app_id" in answer["error"]

        recorded = await history(server, "53", 4)
        assert [m["payload"]["action"] for m in recorded] == [
            "pass_thread_control", "request_thread_control", "take_thread_control", "release_thread_control"]
        assert all(m["flags"].get("silent") for m in recorded)


async def test_admin_routes_need_the_admin_token_and_a_good_body(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    good = {"notify": {"userId": "55", "payload": {"type": "text", "text": "x"}, "tag": "ACCOUNT_UPDATE"},
            "inject": {"userId": "55", "text": "hello"},
            "handover": {"userId": "55", "action": "take"}}
    bad: list[tuple[str, Any, str]] = [
        ("notify", {"payload": {"type": "text", "text": "x"}}, "userId"),
        ("notify", {"userId": "abc", "payload": {"type": "text", "text": "x"}}, "userId"),
        ("notify", {"userId": "55"}, "payload"),
        ("notify", {"userId": "55", "payload": {"type": "dance"}}, "payload"),
        ("notify", {"userId": "55", "payload": {"type": "text"}}, "payload"),
        ("notify", {"userId": "55", "payload": {"type": "handover"}}, "payload"),
        ("notify", {"userId": "55", "payload": {"type": "text", "text": "x"}, "tag": "PROMO"}, "tag"),
        ("notify", {"userId": "55", "payload": {"type": "text", "text": "x"}, "tags": "x"}, "tags"),
        ("inject", {"userId": "55"}, "text"),
        ("inject", {"userId": "55", "text": "a", "payload": "B"}, "text"),
        ("inject", {"userId": "55", "text": "   "}, "text"),
        ("inject", {"userId": "55", "payload": 7}, "payload"),
        ("handover", {"userId": "55", "action": "steal"}, "action"),
        ("handover", {"userId": "55"}, "action"),
        ("handover", {"userId": "55", "action": "take", "targetAppId": "555"}, "targetAppId"),
        ("handover", {"userId": "55", "action": "pass", "targetAppId": "the desk"}, "targetAppId"),
        ("handover", {"userId": "55", "action": "pass", "metadata": "x" * 1001}, "metadata"),
        ("handover", [], "(body)"),
    ]
    async with serve(data) as server:
        for route, body in good.items():
            assert (await api(http, server, "shop", route, body, token=None))[0] == 401, route
            assert (await api(http, server, "shop", route, body, token="wrong"))[0] == 403, route
        assert (await api(http, server, "shop", "handover", method="GET", params={"userId": "55"},
                          token=None))[0] == 401
        for route, body, field in bad:
            status, answer = await api(http, server, "shop", route, body)
            assert status == 400 and answer["field"] == field, (route, body, answer)
            assert answer["reason"] and field in answer["error"]
        status, answer = await api(http, server, "shop", "inject", raw=b"{not json")
        assert status == 400 and answer["field"] == "(body)"
        await asyncio.sleep(0.1)
    assert emulator.calls_to(r"/messages$|thread_control$") == [], "nothing was sent for refused requests"


async def test_a_handed_over_conversation_stays_handed_over_after_a_restart(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:
        status, _ = await api(http, server, "shop", "handover", {"userId": "56", "action": "pass"})
        assert status == 200
    async with serve(data) as server:
        status, state = await api(http, server, "shop", "handover", method="GET", params={"userId": "56"})
        assert status == 200 and state["owner"]["app"] == PAGE_INBOX_APP_ID
        assert (await api(http, server, "shop", "inject", {"userId": "56", "text": "hello"}))[0] == 202
        [failed] = await failed_replies(data, "56", 1)
        assert "Page Inbox" in failed["error"]
    assert [c for c in emulator.calls_to(r"/messages$") if "message" in (c["json"] or {})] == []


async def test_thread_owners_stored_in_one_value_before_are_moved_to_the_shards(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    namespace = "channel-messenger:bot:shop"
    async with serve(data) as server:
        await server.storage.kv_set(namespace, LEGACY_KEY, {
            f"{PAGE_A}/57": {"owner": PAGE_INBOX_APP_ID, "since": 1, "reason": "passed by the bot (api)"}})
    async with serve(data) as server:
        status, state = await api(http, server, "shop", "handover", method="GET", params={"userId": "57"})
        assert status == 200 and state["owner"]["app"] == PAGE_INBOX_APP_ID
        assert await server.storage.kv_get(namespace, LEGACY_KEY) is None
        shards = [await server.storage.kv_get(namespace, shard_key(n)) or {} for n in range(SHARDS)]
        assert [key for shard in shards for key in shard] == [f"{PAGE_A}/57"]
