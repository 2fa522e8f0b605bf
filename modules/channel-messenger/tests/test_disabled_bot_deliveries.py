"""A disabled bot's Page: its deliveries are verified and acknowledged (never 403, which makes Meta unsubscribe
the app), then stored and answered once the bot is enabled, or dropped (disabledBotDeliveries: drop); at start
and at runtime alike."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import (
    PAGE_A,
    PAGE_B,
    SECRET_B,
    TOKEN_A,
    TOKEN_B,
    FakeMeta,
    add_bot,
    messages_with,
    messenger,
    serve,
    texts,
    write_global,
)
from observation_kit import sqlite_rows

from botpress_py.testing import wait_for


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    return folder


def disable(data: Path, bot_id: str, disabled: bool = True) -> None:
    path = data / "bots" / bot_id / "bot.config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "disabled": disabled}))


def stored_for(data: Path, bot_id: str) -> int:
    return sqlite_rows(data, "SELECT COUNT(*) FROM inbox WHERE bot_id = ?", bot_id)[0][0]


async def test_a_bot_disabled_at_start_stores_its_pages_deliveries_and_answers_them_once_enabled(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    # Its own app (its own appSecret), and the only bot of that app: nobody else could verify the signature.
    add_bot(data, "shop", TOKEN_B, appSecret=SECRET_B)
    disable(data, "shop")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        # Never connected, no pageId: the channel asks GET /me for the Page, in the background.
        await wait_for(lambda: messenger(server).registry.parked(PAGE_B) is not None)
        assert await meta.say(PAGE_B, "61", "hello", secret=SECRET_B, mid="m_while_off") == 200
        assert await meta.say(PAGE_B, "61", "hello", secret=SECRET_B, mid="m_while_off") == 200, "a redelivery"
        assert stored_for(data, "shop") == 1
        assert messages_with(emulator, TOKEN_B) == [], "a disabled bot does not answer"
        assert await meta.admin("shop", "enable") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_B))
        assert texts(messages_with(emulator, TOKEN_B)) == ["hello from shop"], "answered once, after enable"


async def test_the_page_a_disabled_bot_was_connected_to_is_remembered_across_restarts(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A)
    async with serve(data):
        pass  # connected once: the Page is remembered in storage
    disable(data, "shop")
    asked = len(emulator.calls_to(r"/me$"))
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert messenger(server).registry.parked(PAGE_A) is not None, "known at once, from the last connection"
        assert await meta.say(PAGE_A, "62", "hello", mid="m_restart") == 200
        assert stored_for(data, "shop") == 1
        assert len(emulator.calls_to(r"/me$")) == asked, "no GET /me needed"


async def test_disabled_bot_deliveries_drop_acknowledges_without_keeping(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, pageId=PAGE_A, disabledBotDeliveries="drop")
    add_bot(data, "help", TOKEN_B, pageId=PAGE_B, disabledBotDeliveries="drop")
    disable(data, "shop")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "63", "hello", mid="m_dropped") == 200
        assert stored_for(data, "shop") == 0
        # At runtime too: parked while it unmounts, then dropped once it is disabled.
        assert await meta.admin("help", "disable") == 200
        assert await meta.say(PAGE_B, "64", "hello", mid="m_dropped_b") == 200
        assert stored_for(data, "help") == 0
        assert await meta.admin("shop", "enable") == 200
        assert await meta.say(PAGE_A, "65", "hello", mid="m_after") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
    assert [m["recipient"]["id"] for m in messages_with(emulator, TOKEN_A)] == ["65"]


async def test_a_disabled_bot_whose_channel_is_off_has_no_page_and_enabling_takes_the_page_back(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, pageId=PAGE_A)
    add_bot(data, "idle", TOKEN_B, pageId=PAGE_B, enabled=False)
    disable(data, "idle")
    disable(data, "shop")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert messenger(server).registry.parked(PAGE_B) is None, "channel off for the bot: nothing waits for its Page"
        binding = messenger(server).registry.parked(PAGE_A)
        assert binding is not None and binding.dormant
        assert await meta.admin("shop", "enable") == 200
        registry = messenger(server).registry
        assert registry.parked(PAGE_A) is None and registry.by_page(PAGE_A) is not None


async def test_a_disabled_bot_whose_page_cannot_be_found_still_never_gets_a_refusal(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="botpress_py")
    add_bot(data, "shop", TOKEN_B, appSecret=SECRET_B)  # the only bot of its app, never connected
    disable(data, "shop")
    emulator.add_rule(status=400, code=190, message="Invalid OAuth access token", path=r"/me$")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        await wait_for(lambda: any("its Page is not known" in r.getMessage() for r in caplog.records))
        assert await meta.say(PAGE_B, "66", "hello", secret=SECRET_B, mid="m_unknown_page") == 200, \
            "verified with its appSecret and acknowledged: Meta keeps the webhook"
        assert (await meta.say(PAGE_B, "66", "hello", secret="another-secret", mid="m_forged")) == 403
        assert stored_for(data, "shop") == 0
