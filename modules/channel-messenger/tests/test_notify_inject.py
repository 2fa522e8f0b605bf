"""Proactive messages (notify) within and outside Meta's 24-hour window, and injected user messages."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import PAGE_A, TOKEN_A, FakeMeta, add_bot, messages_with, messenger, serve, write_global
from observation_kit import api, context, event_at, hours_ago, post_events, sqlite_rows

from botpress_py.sdk import IOEvent
from botpress_py.testing import wait_for

TEXT = {"type": "text", "text": "Your parcel ships today."}


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    add_bot(folder, "shop", TOKEN_A)
    return folder


def to_user(emulator: GraphEmulator, psid: str) -> list[dict]:
    return [m for m in messages_with(emulator, TOKEN_A) if m["recipient"]["id"] == psid]


async def test_notify_within_24_hours_of_the_users_message_is_an_update(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "60", "hello") == 200
        await emulator.wait_for(lambda e: to_user(e, "60"))
        status, answer = await api(http, server, "shop", "notify", {"userId": "60", "payload": TEXT})
        assert status == 202 and answer["messagingType"] == "UPDATE" and answer["tag"] is None
        await emulator.wait_for(lambda e: len(to_user(e, "60")) == 2)
        assert to_user(emulator, "60")[1] == {"recipient": {"id": "60"}, "messaging_type": "UPDATE",
                                              "message": {"text": "Your parcel ships today."}}

        async def recorded() -> list[dict]:
            stored = await server.storage.messages_for("shop", "messenger", "60")
            return [m for m in stored if m["id"] == answer["id"]]

        [notified] = await wait_for(recorded)
        assert notified["flags"]["notify"] is True and notified["direction"] == "outgoing"


async def test_notify_outside_the_window_needs_an_allowed_tag(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:
        status, answer = await api(http, server, "shop", "notify", {"userId": "61", "payload": TEXT})
        assert status == 422 and "24-hour" in answer["error"] and "never wrote" in answer["error"]
        assert answer["field"] == "tag"
        status, answer = await api(http, server, "shop", "notify",
                                   {"userId": "61", "payload": TEXT, "tag": "HUMAN_AGENT"})
        assert status == 422 and "7 days" in answer["error"]

        status, answer = await api(http, server, "shop", "notify",
                                   {"userId": "61", "payload": TEXT, "tag": "ACCOUNT_UPDATE"})
        assert status == 202 and answer == {**answer, "messagingType": "MESSAGE_TAG", "tag": "ACCOUNT_UPDATE"}
        await emulator.wait_for(lambda e: to_user(e, "61"))
        assert to_user(emulator, "61") == [{"recipient": {"id": "61"}, "messaging_type": "MESSAGE_TAG",
                                            "tag": "ACCOUNT_UPDATE", "message": {"text": TEXT["text"]}}]

        # A user who last wrote 3 days ago may get a human agent's answer, not after 8 days.
        state = context(server, "shop").state
        await state.set(f"lastIncoming/{PAGE_A}/62", hours_ago(72))
        await state.set(f"lastIncoming/{PAGE_A}/63", hours_ago(8 * 24))
        status, answer = await api(http, server, "shop", "notify", {"userId": "62", "payload": TEXT})
        assert status == 422 and "72 h old" in answer["error"]
        status, answer = await api(http, server, "shop", "notify",
                                   {"userId": "62", "payload": TEXT, "tag": "HUMAN_AGENT"})
        assert status == 202 and answer["messagingType"] == "MESSAGE_TAG"
        status, answer = await api(http, server, "shop", "notify",
                                   {"userId": "63", "payload": TEXT, "tag": "HUMAN_AGENT"})
        assert status == 422
        await emulator.wait_for(lambda e: to_user(e, "62"))
        assert to_user(emulator, "62")[0]["tag"] == "HUMAN_AGENT"
        assert to_user(emulator, "63") == []


async def test_the_last_message_time_survives_a_restart(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "64", "hello") == 200
        await emulator.wait_for(lambda e: to_user(e, "64"))
        await wait_for(lambda: context(server, "shop").state.get(f"lastIncoming/{PAGE_A}/64"))
    async with serve(data) as server:
        status, answer = await api(http, server, "shop", "notify", {"userId": "64", "payload": TEXT})
        assert status == 202 and answer["messagingType"] == "UPDATE"


async def test_inject_feeds_the_bot_as_if_the_user_wrote(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:
        status, answer = await api(http, server, "shop", "inject", {"userId": "65", "text": "hello"})
        assert status == 202 and answer["userId"] == "65"
        status, _ = await api(http, server, "shop", "inject", {"userId": "65", "payload": "GET_STARTED",
                                                               "title": "Get Started"})
        assert status == 202
        await emulator.wait_for(lambda e: len(to_user(e, "65")) == 2)
        assert [m["message"]["text"] for m in to_user(emulator, "65")] == ["hello from shop"] * 2
        assert {m["messaging_type"] for m in to_user(emulator, "65")} == {"RESPONSE"}
        stored = await server.storage.messages_for("shop", "messenger", "65")
        incoming = [m for m in stored if m["direction"] == "incoming"]
        assert [m["type"] for m in incoming] == ["text", "postback"]
        assert incoming[0]["id"] == answer["id"] or incoming[1]["id"] == answer["id"]
        assert all(m["flags"]["injected"] for m in incoming) and incoming[0]["threadId"] == PAGE_A
        # An injected message is not the user writing: Meta's window does not open for it.
        status, answer = await api(http, server, "shop", "notify", {"userId": "65", "payload": TEXT})
        assert status == 422


async def test_erasing_a_user_forgets_the_messaging_window_and_thread_owner(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "62", "hello") == 200
        await emulator.wait_for(lambda e: to_user(e, "62"))
        status, _ = await api(http, server, "shop", "handover", {"userId": "62", "action": "pass"})
        assert status == 200
        _, handed = await api(http, server, "shop", "handover", method="GET", params={"userId": "62"})
        assert handed["owner"]["app"] == "263902037430900"
        async with http.delete(f"{server.url}/api/v1/admin/bots/shop/users/messenger/62",
                               headers={"Authorization": "Bearer admin-token-for-tests"}) as r:
            assert r.status == 200 and (await r.json())["erased"]["users"] >= 0
        # no trace of the user: the window is closed again and the bot owns the (new) thread
        status, answer = await api(http, server, "shop", "notify", {"userId": "62", "payload": TEXT})
        assert status == 422 and "never wrote" in answer["error"]
        status, after = await api(http, server, "shop", "handover", method="GET", params={"userId": "62"})
        assert status == 200 and after["owner"] == {"app": "bot"}


async def test_last_message_times_are_written_in_one_batch_and_a_stop_writes_what_waits(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    users = [str(7000 + i) for i in range(30)]
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        events = [event_at(PAGE_A, psid, "hello", f"m.batch.{psid}", hours_ago(0)) for psid in users]
        assert await post_events(meta, PAGE_A, events) == 200
        # Stopped at once: what the flusher had not written yet is written by the stop.
    rows = sqlite_rows(data, "SELECT key, updated_at FROM kv WHERE key LIKE 'lastIncoming/%'")
    assert sorted(key.rsplit("/", 1)[1] for key, _ in rows) == users
    assert len({updated for _, updated in rows}) == 1  # one set_many: one transaction, one time
    async with serve(data) as server:
        status, answer = await api(http, server, "shop", "notify", {"userId": users[-1], "payload": TEXT})
        assert status == 202 and answer["messagingType"] == "UPDATE"


async def test_an_erase_before_the_batch_is_written_leaves_no_last_message_time(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:
        bot = context(server, "shop")
        window = messenger(server).window
        window.note(bot, PAGE_A, [IOEvent(type="text", channel="messenger", direction="incoming", botId="shop",
                                          target="77", threadId=PAGE_A, payload={"type": "text"})])
        await window.forget(bot, PAGE_A, "77")
        await window.flush()
        assert await bot.state.get(f"lastIncoming/{PAGE_A}/77") is None
        assert await window.last_incoming(bot, PAGE_A, "77") is None
