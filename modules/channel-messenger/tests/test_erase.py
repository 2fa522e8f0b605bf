"""Erasing a Messenger user: nothing of them stays with the channel, and a linked bot never brings them back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from channel_messenger.handover import SHARDS, shard_key
from messenger_testkit import (
    ADMIN,
    PAGE_A,
    PAGE_B,
    TOKEN_A,
    TOKEN_B,
    FakeMeta,
    add_bot,
    messages_with,
    serve,
    user_message,
    write_global,
)
from observation_kit import context, seen, spy_on_bot_logic

from botpress_py.testing import wait_for

NAMESPACE = "channel-messenger:bot:shop"


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator, mergeContactProfiles=True, chatUserAuthDuration="1s")
    add_bot(folder, "shop", TOKEN_A)
    add_bot(folder, "help", TOKEN_B)
    return folder


async def erase(http: aiohttp.ClientSession, server: Any, bot: str, psid: str) -> dict[str, Any]:
    async with http.delete(f"{server.url}/api/v1/admin/bots/{bot}/users/messenger/{psid}",
                           headers={"Authorization": f"Bearer {ADMIN}"}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def thread_owners(server: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for number in range(SHARDS):
        found.update(await server.storage.kv_get(NAMESPACE, shard_key(number)) or {})
    return found


async def test_an_erased_user_is_not_brought_back_by_a_message_to_a_linked_bot(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    emulator.routing.add_person({PAGE_A: "42", PAGE_B: "4242"})
    spy_help = spy_on_bot_logic(data, "help", tmp_path / "help.jsonl")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        shop, help_ = context(server, "shop"), context(server, "help")
        assert await meta.say(PAGE_A, "42", "hello", mid="a1") == 200
        assert await meta.say(PAGE_B, "4242", "hello", mid="b1") == 200
        await wait_for(lambda: len(seen(spy_help)) == 1)
        assert seen(spy_help)[0]["user"]["linked"] == [{"botId": "shop", "channel": "messenger", "id": "42"}]

        await erase(http, server, "shop", "42")
        assert await shop.users.get("42", "messenger") is None
        await asyncio.sleep(1.1)  # past chatUserAuthDuration: help checks ids_for_pages again
        lookups = len(emulator.calls_to(r"/4242/ids_for_pages$"))
        assert await meta.say(PAGE_B, "4242", "hello", mid="b2") == 200
        await wait_for(lambda: len(seen(spy_help)) == 2)
        assert len(emulator.calls_to(r"/4242/ids_for_pages$")) == lookups + 1, "it did look again"
        assert seen(spy_help)[1]["user"]["linked"] == [], "the erased user is not linked again"
        assert await shop.users.get("42", "messenger") is None, "nor re-created on the bot it was erased from"
        assert (await help_.users.get("4242", "messenger"))["linked"] == []

        # Writing to shop again is the person's own doing: then they are shop's user, and linked, again.
        assert await meta.say(PAGE_A, "42", "hello", mid="a2") == 200
        await wait_for(lambda: shop.users.get("42", "messenger"))
        user = await wait_for(lambda: _linked(shop, "42"))
        assert user["linked"] == [{"botId": "help", "channel": "messenger", "id": "4242"}]


async def _linked(bot: Any, psid: str) -> dict[str, Any] | None:
    user = await bot.users.get(psid, "messenger")
    return user if user and user["linked"] else None


async def test_an_erase_removes_the_channels_own_notes_about_the_user(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        shop = context(server, "shop")
        assert await meta.say(PAGE_A, "77", "hello", mid="n1") == 200  # the messaging window starts
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
        standby = user_message(PAGE_A, "77", "to the inbox", "n2")
        status, _ = await meta.post(GraphEmulator.webhook_body(PAGE_A, [standby], standby=True))
        assert status == 200  # another app owns the thread now
        await wait_for(lambda: server.storage.kv_get(NAMESPACE, f"lastIncoming/{PAGE_A}/77"))
        await wait_for(lambda: _has_owner(server, f"{PAGE_A}/77"))

        await erase(http, server, "shop", "77")
        assert await server.storage.kv_get(NAMESPACE, f"lastIncoming/{PAGE_A}/77") is None
        assert f"{PAGE_A}/77" not in await thread_owners(server)
        assert await shop.users.get("77", "messenger") is None
        assert await server.storage.messages_for("shop", "messenger", "77") == []


async def _has_owner(server: Any, key: str) -> bool:
    return key in await thread_owners(server)
