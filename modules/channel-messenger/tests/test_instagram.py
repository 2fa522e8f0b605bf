"""Instagram messaging on the real server: signed ``object: "instagram"`` deliveries on the same webhook, answered
on channel "instagram" through the Page's token, one account per bot, and the account found from the Page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from channel_messenger.emulator.instagram import instagram_webhook_body
from instagram_kit import ACCOUNT_A, ACCOUNT_B, ig_message, ig_postback, ig_say, messages_to, sent_to
from messenger_testkit import (
    PAGE_A,
    PAGE_B,
    SECRET_B,
    TOKEN_A,
    TOKEN_B,
    FakeMeta,
    add_bot,
    messages_with,
    serve,
    texts,
    write_global,
)

from botpress_py.testing import wait_for

IGSID = "6100000000000001"
SPY = '''import json

def transform_input(event, bot):
    with open({path!r}, "a", encoding="utf-8") as out:
        out.write(json.dumps({{"channel": event.channel, "type": event.type, "target": event.target,
                               "threadId": event.threadId, "payload": event.payload}}) + "\\n")
'''


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    emulator.instagram.link(PAGE_A, ACCOUNT_A, "shop_on_instagram")
    emulator.instagram.link(PAGE_B, ACCOUNT_B)
    folder = tmp_path / "data"
    write_global(folder, emulator)
    return folder


def spy(data: Path, bot: str, out: Path) -> Path:
    (data / "bots" / bot / "transformers.py").write_text(SPY.format(path=str(out)), encoding="utf-8")
    return out


def seen(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def reply(recipient: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"recipient": {"id": recipient}, "messaging_type": "RESPONSE", "message": message}


async def test_an_instagram_message_is_answered_on_the_instagram_channel_with_the_page_token(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    add_bot(data, "shop", TOKEN_A, instagram={"enabled": True})
    out = spy(data, "shop", tmp_path / "seen.jsonl")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.module_status("shop") == {"state": "on"}
        lookups = emulator.calls_to(rf"^/v27\.0/{PAGE_A}$", "GET")
        assert [c["query"]["fields"] for c in lookups] == ["instagram_business_account"], "found from the Page"

        assert await ig_say(meta, emulator, ACCOUNT_A, IGSID, "hello", "ig_m_1") == 200
        await emulator.wait_for(lambda e: messages_to(e, IGSID))
        assert sent_to(emulator, IGSID) == [{"recipient": {"id": IGSID}, "sender_action": "mark_seen"},
                                            reply(IGSID, {"text": "hello from shop"})]
        call = [c for c in emulator.calls if c["path"].endswith("/messages")][-1]
        assert call["path"] == "/v27.0/me/messages" and call["query"]["access_token"] == TOKEN_A

        # Bot logic can tell: channel "instagram", the user's IGSID, the account as the thread.
        assert seen(out) == [{"channel": "instagram", "type": "text", "target": IGSID, "threadId": ACCOUNT_A,
                              "payload": {"type": "text", "text": "hello", "mid": "ig_m_1"}}]

        # Meta redelivers: handled once. An ice breaker (a postback) is answered like any postback.
        assert await ig_say(meta, emulator, ACCOUNT_A, IGSID, "hello", "ig_m_1") == 200
        tap = ig_postback(ACCOUNT_A, IGSID, "GET_STARTED", "What do you sell?", "ig_m_2")
        assert (await meta.post(instagram_webhook_body(ACCOUNT_A, [tap])))[0] == 200
        await emulator.wait_for(lambda e: len(messages_to(e, IGSID)) == 2)
        await wait_for(lambda: len(seen(out)) == 2)
        assert [s["type"] for s in seen(out)] == ["text", "postback"]

        async def history_of(channel: str, user: str, count: int) -> list[dict[str, Any]] | None:
            found = await server.storage.messages_for("shop", channel, user)
            return found if len(found) >= count else None

        history = await wait_for(lambda: history_of("instagram", IGSID, 4))  # sent marks come a moment later
        assert [(m["direction"], m["type"]) for m in history] == [("incoming", "text"), ("outgoing", "text"),
                                                                 ("incoming", "postback"), ("outgoing", "text")]
        assert all(m["channelMessageId"] for m in history if m["direction"] == "outgoing")
        assert await server.storage.messages_for("shop", "messenger", IGSID) == []
        assert messages_with(emulator, TOKEN_A) == messages_to(emulator, IGSID), "no Messenger message went out"

        # The Page's Messenger users are still served, on channel "messenger".
        assert await meta.say(PAGE_A, "42", "hello", mid="fb_m_1") == 200
        assert [m["channel"] for m in await wait_for(lambda: history_of("messenger", "42", 2))] == \
            ["messenger", "messenger"]


async def test_an_instagram_account_is_served_by_one_bot(data: Path, emulator: GraphEmulator,
                                                         http: aiohttp.ClientSession) -> None:
    add_bot(data, "alpha", TOKEN_A, instagram={"enabled": True})
    add_bot(data, "beta", TOKEN_B, instagram={"enabled": True, "accountId": ACCOUNT_A})  # someone else's account
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        statuses = {bot: await meta.module_status(bot) for bot in ("alpha", "beta")}
        refused = [bot for bot, status in statuses.items() if status["state"] == "error"]
        assert len(refused) == 1, statuses
        owner = "alpha" if refused == ["beta"] else "beta"
        reason = statuses[refused[0]]["reason"]
        assert reason.startswith(f"instagram: Instagram account {ACCOUNT_A} is already connected to bot '{owner}', "
                                 f"so bot '{refused[0]}' cannot connect to it too (one Instagram account answers "
                                 "through one bot)")
        assert "Messenger is connected" in reason
        assert statuses[owner] == {"state": "on"}

        # The account's messages reach its one bot; both Pages still answer on Messenger.
        assert await ig_say(meta, emulator, ACCOUNT_A, IGSID, "hello", "ig_one") == 200
        await emulator.wait_for(lambda e: messages_to(e, IGSID))
        assert texts(messages_to(emulator, IGSID)) == [f"hello from {owner}"]
        assert await meta.say(PAGE_A, "42", "hello", mid="fb_a") == 200
        assert await meta.say(PAGE_B, "43", "hello", mid="fb_b") == 200
        await emulator.wait_for(lambda e: messages_to(e, "42") and messages_to(e, "43"))
        assert texts(messages_to(emulator, "43")) == ["hello from beta"]


async def test_a_page_without_a_linked_account_says_so_and_keeps_messenger(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    emulator.instagram.accounts.clear()
    add_bot(data, "shop", TOKEN_A, instagram={"enabled": True})
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        status = await meta.module_status("shop")
        assert status["state"] == "error"
        assert status["reason"].startswith(f"instagram: page {PAGE_A} has no Instagram professional account linked")
        assert "instagram.accountId in data/bots/shop/config/channel-messenger.json" in status["reason"]
        assert await meta.say(PAGE_A, "42", "hello", mid="fb_1") == 200
        await emulator.wait_for(lambda e: messages_to(e, "42"))


async def test_instagram_deliveries_are_signed_with_the_bots_app_secret(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    add_bot(data, "shop", TOKEN_A, instagram={"enabled": True, "accountId": ACCOUNT_A})
    add_bot(data, "other", TOKEN_B, appSecret=SECRET_B, instagram={"enabled": True, "accountId": ACCOUNT_B})
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        body = instagram_webhook_body(ACCOUNT_A, [ig_message(ACCOUNT_A, IGSID, "hello", "ig_s_1")])
        emulator.instagram.add_user(ACCOUNT_A, IGSID)
        assert (await meta.post(body, secret=None))[0] == 403
        assert (await meta.post(body, secret="not-the-app-secret"))[0] == 403
        # Signed by the other bot's App: its entries for shop's account are not shop's to take.
        assert (await meta.post(body, secret=SECRET_B))[0] == 200
        assert f"Webhook entry for Instagram account {ACCOUNT_A} skipped: the request was not signed" in caplog.text
        # The per-bot URL serves only that bot's account.
        assert (await meta.post(body, bot="other", secret=SECRET_B))[0] == 200
        assert messages_to(emulator, IGSID) == []
        assert (await meta.post(body, bot="shop"))[0] == 200
        await emulator.wait_for(lambda e: messages_to(e, IGSID))
        assert texts(messages_to(emulator, IGSID)) == ["hello from shop"]
