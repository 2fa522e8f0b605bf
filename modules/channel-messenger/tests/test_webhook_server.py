"""The webhook on the real server: verification, signatures, routing by Page, silence, dedupe."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import (
    PAGE_A,
    PAGE_B,
    PAGE_C,
    SECRET,
    SECRET_B,
    TOKEN_A,
    TOKEN_B,
    TOKEN_C,
    VERIFY,
    FakeMeta,
    add_bot,
    messages_with,
    serve,
    texts,
    user_message,
    write_global,
)


@pytest.fixture
async def three_bots(tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> AsyncIterator[FakeMeta]:
    """bot-a and bot-c on app A (global secret); bot-b on app B (its own appSecret)."""
    data = tmp_path / "data"
    write_global(data, emulator)
    add_bot(data, "bot-a", TOKEN_A)
    add_bot(data, "bot-b", TOKEN_B, appSecret=SECRET_B, verifyToken="verify-b")
    add_bot(data, "bot-c", TOKEN_C)
    async with serve(data) as server:
        yield FakeMeta(http, server)


# -- GET verification -------------------------------------------------------------------------


async def test_verification_accepts_the_configured_token(three_bots: FakeMeta) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}
    assert await three_bots.verify(**query) == (200, "1158201444")
    assert await three_bots.verify(bot="bot-a", **query) == (200, "1158201444")
    assert await three_bots.verify(bot="bot-b", **{**query, "hub.verify_token": "verify-b"}) == (200, "1158201444")


@pytest.mark.parametrize(
    "query",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY},
        {},
    ],
)
async def test_verification_rejects(three_bots: FakeMeta, query: dict[str, str]) -> None:
    status, text = await three_bots.verify(**query)
    assert status == 403
    assert VERIFY not in text


async def test_per_bot_verification_uses_that_bots_token(three_bots: FakeMeta) -> None:
    status, _ = await three_bots.verify(bot="bot-b", **{"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                                         "hub.challenge": "1"})
    assert status == 403, "bot-b has its own verifyToken"


# -- POST signature and body checks -----------------------------------------------------------


async def test_sha256_and_sha1_signatures_are_accepted(three_bots: FakeMeta, emulator: GraphEmulator) -> None:
    body = GraphEmulator.webhook_body(PAGE_A, [user_message(PAGE_A, "501", "hello", "m_sha256")])
    assert await three_bots.post(body) == (200, "EVENT_RECEIVED")
    raw = json.dumps(GraphEmulator.webhook_body(PAGE_A, [user_message(PAGE_A, "502", "hello", "m_sha1")])).encode()
    sha1_only = {k: v for k, v in GraphEmulator.signed(raw, SECRET)[1].items() if k != "X-Hub-Signature-256"}
    assert await three_bots.post(None, raw=raw, secret=None, headers=sha1_only) == (200, "EVENT_RECEIVED")
    await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 2)
    recipients = sorted(m["recipient"]["id"] for m in messages_with(emulator, TOKEN_A))
    assert recipients == ["501", "502"]


async def test_missing_wrong_and_malformed(three_bots: FakeMeta, emulator: GraphEmulator) -> None:
    body = GraphEmulator.webhook_body(PAGE_A, [user_message(PAGE_A, "503", "hello", "m_bad")])
    assert (await three_bots.post(body, secret=None))[0] == 403
    assert (await three_bots.post(body, secret="not-the-app-secret"))[0] == 403
    assert (await three_bots.post(body, headers={"X-Hub-Signature-256": "sha256=deadbeef"}))[0] == 403
    assert (await three_bots.post(None, raw=b"{not json", secret=None))[0] == 403, "unsigned is refused first"
    assert (await three_bots.post(None, raw=b"{not json"))[0] == 400
    assert (await three_bots.post({"object": "whatsapp_business_account", "entry": []}))[0] == 404
    assert (await three_bots.post({"object": ["page"], "entry": []}))[0] == 404
    assert (await three_bots.post({"object": "instagram", "entry": []}))[0] == 200, "Instagram is read too"
    assert (await three_bots.post({"object": "page", "entry": "x"}))[0] == 400
    assert (await three_bots.post({"object": "page", "entry": [{"id": PAGE_A}]}))[0] == 200, "no messaging: fine"
    assert messages_with(emulator, TOKEN_A) == []


async def test_app_a_cannot_inject_events_for_app_b(three_bots: FakeMeta, emulator: GraphEmulator) -> None:
    forged = {"object": "page", "entry": [
        {"id": PAGE_B, "time": 1, "messaging": [user_message(PAGE_B, "601", "hello", "m_forged")]},
        {"id": PAGE_A, "time": 1, "messaging": [user_message(PAGE_A, "602", "hello", "m_legit_a")]},
    ]}
    assert (await three_bots.post(forged, secret=SECRET))[0] == 200
    # App A's own entry went through; app B's page only answers what app B signs.
    assert (await three_bots.say(PAGE_B, "603", "hello", mid="m_legit_b", secret=SECRET_B)) == 200
    await emulator.wait_for(lambda e: messages_with(e, TOKEN_A) and messages_with(e, TOKEN_B))
    assert [m["recipient"]["id"] for m in messages_with(emulator, TOKEN_B)] == ["603"]
    assert [m["recipient"]["id"] for m in messages_with(emulator, TOKEN_A)] == ["602"]
    # On bot-b's own route, app A's signature is not even accepted.
    status, _ = await three_bots.post(GraphEmulator.webhook_body(PAGE_B, []), secret=SECRET, bot="bot-b")
    assert status == 403


async def test_per_bot_route_serves_only_its_page(three_bots: FakeMeta, emulator: GraphEmulator) -> None:
    body = {"object": "page", "entry": [
        {"id": PAGE_C, "messaging": [user_message(PAGE_C, "701", "hello", "m_c_on_a")]},
        {"id": PAGE_A, "messaging": [user_message(PAGE_A, "702", "hello", "m_a_on_a")]},
    ]}
    assert (await three_bots.post(body, bot="bot-a"))[0] == 200
    assert await three_bots.say(PAGE_C, "703", "hello", mid="m_c_sentinel") == 200
    await emulator.wait_for(lambda e: messages_with(e, TOKEN_A) and messages_with(e, TOKEN_C))
    assert [m["recipient"]["id"] for m in messages_with(emulator, TOKEN_C)] == ["703"]


# -- routing a batch --------------------------------------------------------------------------


async def test_batch_of_three_entries_each_routed_to_its_bot(three_bots: FakeMeta, emulator: GraphEmulator) -> None:
    def entry(page: str, *events: dict[str, Any]) -> dict[str, Any]:
        return {"id": page, "time": 1, "messaging": list(events)}

    body = {"object": "page", "entry": [
        entry(PAGE_A, user_message(PAGE_A, "11", "hello", "m_a1"), user_message(PAGE_A, "12", "what?", "m_a2")),
        entry(PAGE_C, user_message(PAGE_C, "31", "hello", "m_c1")),
        entry("9999", user_message("9999", "91", "hello", "m_unknown")),
    ]}
    assert (await three_bots.post(body))[0] == 200
    body_b = {"object": "page", "entry": [entry(PAGE_B, user_message(PAGE_B, "21", "hello", "m_b1"))]}
    assert (await three_bots.post(body_b, secret=SECRET_B))[0] == 200
    await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 2 and messages_with(e, TOKEN_B)
                            and messages_with(e, TOKEN_C))
    by_user = {m["recipient"]["id"]: m["message"]["text"] for m in emulator.sent_messages}
    assert by_user == {"11": "hello from bot-a", "12": "fallback from bot-a", "21": "hello from bot-b",
                       "31": "hello from bot-c"}
    assert all(m["messaging_type"] == "RESPONSE" for m in emulator.sent_messages)


# -- never answered, answered once ------------------------------------------------------------


async def test_echo_delivery_read_reaction_standby_are_recorded_never_answered(
        three_bots: FakeMeta, emulator: GraphEmulator) -> None:
    # A recent time: history older than the retention (90 days) may be purged by the start-up purge.
    user, page, ts = "801", PAGE_A, int(time.time() * 1000) - 60_000

    def ev(**body: Any) -> dict[str, Any]:
        return {"sender": {"id": user}, "recipient": {"id": page}, "timestamp": ts, **body}

    echo = {"sender": {"id": page}, "recipient": {"id": user}, "timestamp": ts,
            "message": {"mid": "m_echo", "text": "hello", "is_echo": True, "app_id": 1}}
    body = {"object": "page", "entry": [
        {"id": page, "time": ts, "messaging": [
            echo, ev(delivery={"mids": ["m_x"], "watermark": ts}), ev(read={"watermark": ts}),
            ev(reaction={"reaction": "love", "emoji": "❤", "action": "react", "mid": "m_x"})]},
        {"id": page, "time": ts, "standby": [ev(message={"mid": "m_standby", "text": "hello"})]},
    ]}
    assert (await three_bots.post(body))[0] == 200
    # A real message after them in the same conversation: once it is answered, they were all processed.
    assert await three_bots.say(page, user, "hello", mid="m_sentinel") == 200
    await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
    assert texts(messages_with(emulator, TOKEN_A)) == ["hello from bot-a"]
    history = await three_bots.server.storage.messages_for("bot-a", "messenger", user)
    recorded = [(m["type"], m["direction"]) for m in history]
    for kind in ("delivery", "read", "reaction"):
        assert (kind, "incoming") in recorded
    assert sum(1 for m in history if m["type"] == "text" and m["direction"] == "incoming") == 3, \
        "echo, standby text and the real text are all recorded"


async def test_duplicate_delivery_is_answered_once(three_bots: FakeMeta, emulator: GraphEmulator) -> None:
    body = GraphEmulator.webhook_body(PAGE_A, [user_message(PAGE_A, "901", "hello", "m_dup")])
    assert (await three_bots.post(body))[0] == 200
    assert (await three_bots.post(body))[0] == 200, "a redelivery is acknowledged"
    assert await three_bots.say(PAGE_A, "901", "something else", mid="m_after_dup") == 200
    await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) >= 2)
    assert texts(messages_with(emulator, TOKEN_A)) == ["hello from bot-a", "fallback from bot-a"]


async def test_say_something_postback_reaches_bot_logic_as_text(three_bots: FakeMeta,
                                                                emulator: GraphEmulator) -> None:
    postback = {"sender": {"id": "950"}, "recipient": {"id": PAGE_A}, "timestamp": 1,
                "postback": {"mid": "m_say", "title": "Say hello", "payload": "say::hello"}}
    assert (await three_bots.post(GraphEmulator.webhook_body(PAGE_A, [postback])))[0] == 200
    await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
    assert texts(messages_with(emulator, TOKEN_A)) == ["hello from bot-a"]
