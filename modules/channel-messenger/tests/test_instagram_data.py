"""Instagram on the real server, beyond the happy path: Instagram's limits (what it cannot render degrades),
bad deliveries skipped and logged (never 5xx), masking and erase, and a disabled bot's deliveries kept."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from channel_messenger.emulator.instagram import instagram_webhook_body
from channel_messenger.handover import SHARDS, shard_key
from channel_messenger.instagram_rendering import utf8_len
from instagram_kit import ACCOUNT_A, ig_message, ig_say, messages_to
from messenger_testkit import ADMIN, PAGE_A, TOKEN_A, FakeMeta, add_bot, serve, texts, write_global
from observation_kit import sqlite_rows

from botpress_py.testing import wait_for

IGSID = "6100000000000002"
NAMESPACE = "channel-messenger:bot:shop"
LONG = "Ünïcödé wörds, 🌍 included. " * 90  # 2,430 characters, 3,060 bytes of UTF-8
CARD = {"type": "card", "title": "Our hats", "subtitle": "For every head",
        "actions": [{"action": "Open URL", "title": "Shop", "url": "https://shop.example/hats"},
                    {"action": "Postback", "title": "More", "payload": "MORE"},
                    {"action": "Say something", "title": "Sizes?", "text": "sizes"},
                    {"action": "Postback", "title": "Help", "payload": "HELP"}]}
QNA = {"entries": [
    {"id": "long", "questions": ["long"], "answers": [{"type": "text", "text": LONG}]},
    {"id": "files", "questions": ["files"], "answers": [
        {"type": "file", "url": "https://cdn.example/spec.docx", "title": "The spec"},
        {"type": "file", "url": "https://cdn.example/manual.pdf"}]},
    {"id": "custom", "questions": ["custom"], "answers": [
        {"type": "custom", "messenger": {"text": "Messenger only"}, "instagram": {"text": "Instagram only"}}]},
    {"id": "card", "questions": ["card"], "answers": [CARD]},
], "fallback": [{"type": "text", "text": "fallback from shop"}]}


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    emulator.instagram.link(PAGE_A, ACCOUNT_A)
    folder = tmp_path / "data"
    write_global(folder, emulator)
    return folder


async def turn(meta: FakeMeta, emulator: GraphEmulator, text: str, mid: str, count: int) -> list[dict[str, Any]]:
    before = len(messages_to(emulator, IGSID))
    assert await ig_say(meta, emulator, ACCOUNT_A, IGSID, text, mid) == 200
    await emulator.wait_for(lambda e: len(messages_to(e, IGSID)) >= before + count)
    return [b["message"] for b in messages_to(emulator, IGSID)[before:]]


async def test_what_instagram_cannot_render_is_reshaped_to_what_it_can(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA, instagram={"enabled": True})
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        parts = await turn(meta, emulator, "long", "ig_long", 4)
        assert len(parts) == 4 and all(utf8_len(p["text"]) <= 1000 for p in parts), "1000 bytes each, not 2000"
        assert " ".join(p["text"] for p in parts) == LONG.strip()

        files = await turn(meta, emulator, "files", "ig_files", 2)
        assert files == [{"text": "The spec\nhttps://cdn.example/spec.docx"},  # not a PDF: its link
                         {"attachment": {"type": "file", "payload": {"url": "https://cdn.example/manual.pdf",
                                                                     "is_reusable": True}}}]
        assert await turn(meta, emulator, "custom", "ig_custom", 1) == [{"text": "Instagram only"}]

        [carousel] = await turn(meta, emulator, "card", "ig_card", 1)
        elements = carousel["attachment"]["payload"]["elements"]
        assert [[b["type"] for b in e["buttons"]] for e in elements] == [["web_url", "postback", "postback"],
                                                                        ["postback"]]
        refused = [c for c in emulator.calls if c["path"].endswith("/messages") and not c["accepted"]]
        assert refused == [], "every body kept Instagram's limits (the emulator checks them)"


async def test_bad_instagram_deliveries_are_skipped_and_logged_never_a_5xx(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    add_bot(data, "shop", TOKEN_A, instagram={"enabled": True})
    caplog.set_level(logging.INFO, logger="botpress_py.module.channel-messenger.webhook")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        emulator.instagram.add_user(ACCOUNT_A, IGSID)
        good = ig_message(ACCOUNT_A, IGSID, "hello", "ig_good")
        body = {"object": "instagram", "entry": [
            {"id": "17849999999999999", "time": 1, "messaging": [ig_message("17849999999999999", "7", "x", "u1")]},
            {"id": ["not", "an", "id"], "messaging": [good]},
            {"id": ACCOUNT_A, "messaging": "not a list"},
            "not an entry",
            {"id": ACCOUNT_A, "time": 1, "messaging": [
                {"sender": {"id": {"an": "object"}}, "recipient": {"id": ACCOUNT_A}, "message": {"mid": "b1"}},
                {"sender": {"id": IGSID}, "recipient": {"id": ACCOUNT_A}, "message": {"mid": "b2", "text": ["x"]}},
                good,
                {"sender": {"id": IGSID}, "recipient": {"id": ACCOUNT_A}, "message": {"mid": ["b3"], "text": "x"}},
            ]},
        ]}
        assert await meta.post(body) == (200, "EVENT_RECEIVED")
        await emulator.wait_for(lambda e: messages_to(e, IGSID))
        assert texts(messages_to(emulator, IGSID)) == ["hello from shop"], "the good event, once"
        log = caplog.text
        assert "Webhook entry for Instagram account 17849999999999999 skipped (any-bot webhook): no connected bot " \
               "has this Instagram account" in log
        for field in ("entry[1].id", "entry.messaging", "entry[3]", "sender.id", "message.text", "message.mid"):
            assert f"skipped: {field}: " in log, field
        assert "hello" not in log and "not a list" not in log, "never a value, only where and what"

        assert (await meta.post({"object": "instagram", "entry": "x"}))[0] == 400
        assert (await meta.post(None, raw=b'{"object": "instagram", "entry": [')).__getitem__(0) == 400
        assert (await meta.post({"object": "instagram", "entry": [{"id": ACCOUNT_A}]}))[0] == 200
        assert (await meta.post({"object": "instagram"}))[0] == 200, "no entry: nothing to do"


async def test_instagram_users_are_masked_and_erased_like_messenger_users(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, instagram={"enabled": True}, maskIncomingMessages=True,
            maskOutgoingMessages=True)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await ig_say(meta, emulator, ACCOUNT_A, IGSID, "my secret order 1234", "ig_mask") == 200
        await emulator.wait_for(lambda e: messages_to(e, IGSID))
        # A message arriving as standby: another app (the inbox) owns the thread now.
        standby = {"object": "instagram", "entry": [{"id": ACCOUNT_A, "time": 1, "standby": [
            ig_message(ACCOUNT_A, IGSID, "still secret", "ig_standby")]}]}
        assert (await meta.post(standby))[0] == 200

        async def stored() -> list[dict[str, Any]] | None:
            found = await server.storage.messages_for("shop", "instagram", IGSID)
            return found if len(found) == 3 else None

        history = await wait_for(stored)
        assert [m["payload"].get("text") for m in history] == ["***", "***", "***"]
        dump = json.dumps(sqlite_rows(data, "SELECT * FROM messages"))
        assert "secret" not in dump and "fallback from shop" not in dump
        await wait_for(lambda: server.storage.kv_get(NAMESPACE, f"lastIncoming/{ACCOUNT_A}/{IGSID}"))
        await wait_for(lambda: _owner(server, f"{ACCOUNT_A}/{IGSID}"))

        async with http.delete(f"{server.url}/api/v1/admin/bots/shop/users/instagram/{IGSID}",
                               headers={"Authorization": f"Bearer {ADMIN}"}) as response:
            assert response.status == 200, await response.text()
        assert await server.storage.messages_for("shop", "instagram", IGSID) == []
        assert await server.storage.kv_get(NAMESPACE, f"lastIncoming/{ACCOUNT_A}/{IGSID}") is None
        assert not await _owner(server, f"{ACCOUNT_A}/{IGSID}")


async def _owner(server: Any, key: str) -> bool:
    for number in range(SHARDS):
        if key in (await server.storage.kv_get(NAMESPACE, shard_key(number)) or {}):
            return True
    return False


def disable(data: Path, bot_id: str, disabled: bool = True) -> None:
    path = data / "bots" / bot_id / "bot.config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "disabled": disabled}))


async def test_a_disabled_bots_instagram_deliveries_are_kept_and_answered_once_it_is_enabled(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    add_bot(data, "shop", TOKEN_A, pageId=PAGE_A, instagram={"enabled": True, "accountId": ACCOUNT_A})
    add_bot(data, "unknown", "EAA-token-of-nobody", instagram={"enabled": True})
    disable(data, "shop")
    disable(data, "unknown")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await ig_say(meta, emulator, ACCOUNT_A, IGSID, "hello", "ig_off") == 200
        assert await ig_say(meta, emulator, ACCOUNT_A, IGSID, "hello", "ig_off") == 200, "a redelivery"
        assert sqlite_rows(data, "SELECT COUNT(*) FROM inbox WHERE bot_id = 'shop'")[0][0] == 1
        assert messages_to(emulator, IGSID) == []
        assert "bot 'unknown' is disabled and its Instagram account is not known" in caplog.text

        assert await meta.admin("shop", "enable") == 200
        await emulator.wait_for(lambda e: messages_to(e, IGSID))
        assert texts(messages_to(emulator, IGSID)) == ["hello from shop"]
        history = await wait_for(lambda: server.storage.messages_for("shop", "instagram", IGSID))
        assert history[0]["payload"]["mid"] == "ig_off"
        body = instagram_webhook_body(ACCOUNT_A, [ig_message(ACCOUNT_A, IGSID, "again", "ig_on")])
        assert (await meta.post(body))[0] == 200
        await emulator.wait_for(lambda e: len(messages_to(e, IGSID)) == 2)
