"""Mounting on the real server: status reasons, one Page per bot, profile pushes, disable/enable."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import (
    MODULE,
    PAGE_A,
    PAGE_B,
    SECRET,
    TOKEN_A,
    TOKEN_B,
    FakeMeta,
    add_bot,
    edit_bot_config,
    messages_with,
    profile_calls,
    serve,
    texts,
    write_global,
)

from botpress_py.testing import make_bot, run_server

MENU = [{"type": "postback", "title": "Help", "payload": "HELP"},
        {"type": "web_url", "title": "Website", "url": "https://example.com"}]


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    return folder


async def test_enabled_false_is_off_and_says_where(data: Path, emulator: GraphEmulator,
                                                   http: aiohttp.ClientSession) -> None:
    add_bot(data, "quiet", TOKEN_A, enabled=False)
    make_bot(data, "plain", qna={"entries": []})
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.module_status("quiet") == {
            "state": "off", "reason": "enabled is false in data/bots/quiet/config/channel-messenger.json"}
        plain = await meta.module_status("plain")
        assert plain["state"] == "off" and '"enabled": true' in plain["reason"]
    assert emulator.calls == [], "a channel that is off makes no Graph call"


async def test_off_says_which_file_or_variable_turned_it_off(data: Path, emulator: GraphEmulator,
                                                            http: aiohttp.ClientSession) -> None:
    make_bot(data, "plain", qna={"entries": []})
    write_global(data, emulator, enabled=False)
    async with serve(data) as server:
        assert await FakeMeta(http, server).module_status("plain") == {
            "state": "off", "reason": "enabled is false in data/global/config/channel-messenger.json"}
    env = {"BP_MODULE_CHANNEL_MESSENGER_ENABLED": "false"}
    async with run_server(data, env=env, modules=[MODULE, "qna"]) as server:
        assert await FakeMeta(http, server).module_status("plain") == {
            "state": "off", "reason": "enabled is false in env BP_MODULE_CHANNEL_MESSENGER_ENABLED"}


async def test_config_and_graph_errors_at_mount_leave_other_bots_serving(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "good", TOKEN_A)
    add_bot(data, "revoked", "EAA-revoked-token")
    add_bot(data, "tokenless", "")
    add_bot(data, "placeholder", TOKEN_B, appSecret="<APP_SECRET>")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        status = await meta.status()
        modules = {bot: status["bots"][bot]["modules"]["channel-messenger"] for bot in status["bots"]}
        assert modules["good"] == {"state": "on"}
        assert modules["revoked"]["state"] == "error"
        assert "code 190" in modules["revoked"]["reason"] and "Access Tokens" in modules["revoked"]["reason"]
        assert modules["tokenless"]["state"] == "error"
        assert "accessToken is missing" in modules["tokenless"]["reason"]
        assert "data/bots/tokenless/config/channel-messenger.json" in modules["tokenless"]["reason"]
        assert modules["placeholder"]["state"] == "error" and "appSecret" in modules["placeholder"]["reason"]
        assert all(status["bots"][b]["state"] == "mounted" for b in modules), "the bots themselves stay up"
        text = json.dumps(status)
        for secret in (TOKEN_A, TOKEN_B, "EAA-revoked-token", SECRET):
            assert secret not in text

        assert await meta.say(PAGE_A, "42", "hello") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
        assert texts(messages_with(emulator, TOKEN_A)) == ["hello from good"]


async def test_unreachable_graph_at_mount_then_a_remount_retries(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, fast_retries: None) -> None:
    add_bot(data, "flaky", TOKEN_A, graphApiUrl="http://127.0.0.1:9")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        status = await meta.module_status("flaky")
        assert status["state"] == "error" and "could not be reached" in status["reason"]
        edit_bot_config(data, "flaky", graphApiUrl=None)
        assert await meta.admin("flaky", "reload") == 200
        assert await meta.module_status("flaky") == {"state": "on"}


async def test_a_second_bot_cannot_claim_a_connected_page(data: Path, emulator: GraphEmulator,
                                                          http: aiohttp.ClientSession) -> None:
    add_bot(data, "first", TOKEN_A)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        add_bot(data, "second", TOKEN_A)
        assert await meta.admin("second", "reload") == 200
        reason = (await meta.module_status("second"))["reason"]
        assert f"page {PAGE_A} is already connected to bot 'first'" in reason and "'second'" in reason
        assert await meta.module_status("first") == {"state": "on"}
        # Disabling the refused bot must not disconnect the owner.
        assert await meta.admin("second", "disable") == 200
        assert await meta.say(PAGE_A, "42", "hello") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
        assert texts(messages_with(emulator, TOKEN_A)) == ["hello from first"]


async def test_profile_is_pushed_only_when_it_changed(data: Path, emulator: GraphEmulator,
                                                      http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, greeting="Welcome to the shop!", getStarted="GET_STARTED", persistentMenu=MENU)
    async with serve(data):
        pass
    pushes = profile_calls(emulator)
    assert [(c["method"], c["json"]) for c in pushes] == [("POST", {
        "greeting": [{"locale": "default", "text": "Welcome to the shop!"}],
        "get_started": {"payload": "GET_STARTED"},
        "persistent_menu": [{"locale": "default", "composer_input_disabled": False, "call_to_actions": MENU}],
    })]

    async with serve(data):
        pass
    assert len(profile_calls(emulator)) == 1, "a restart with the same profile makes no profile call"

    async with serve(data) as server:
        meta = FakeMeta(http, server)
        edit_bot_config(data, "shop", greeting=None, persistentMenu=None)
        assert await meta.admin("shop", "reload") == 200
        calls = profile_calls(emulator)[1:]
        assert [(c["method"], c["json"]) for c in calls] == [
            ("DELETE", {"fields": ["persistent_menu", "greeting"]})]
        assert emulator.pages[PAGE_A].profile == {"get_started": {"payload": "GET_STARTED"}}

        edit_bot_config(data, "shop", getStarted="START_OVER")
        assert await meta.admin("shop", "reload") == 200
        assert [(c["method"], c["json"]) for c in profile_calls(emulator)[2:]] == [
            ("POST", {"get_started": {"payload": "START_OVER"}})]
        assert await meta.module_status("shop") == {"state": "on"}


async def test_menu_without_get_started_is_not_pushed(data: Path, emulator: GraphEmulator) -> None:
    add_bot(data, "menu-only", TOKEN_A, persistentMenu=MENU)
    async with serve(data):
        pass
    assert profile_calls(emulator) == []


async def test_failed_profile_push_keeps_channel_on_and_is_retried_next_mount(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, fast_retries: None) -> None:
    add_bot(data, "shop", TOKEN_A, greeting="Hello!")
    # A rate limit is not retried within the mount: one refused push, then the reload pushes.
    emulator.add_rule(status=400, code=613, path="messenger_profile$", times=1)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        status = await meta.module_status("shop")
        assert status["state"] == "on" and "profile not updated" in status["reason"]
        assert await meta.admin("shop", "reload") == 200
        assert await meta.module_status("shop") == {"state": "on"}
    assert emulator.pages[PAGE_A].profile == {"greeting": [{"locale": "default", "text": "Hello!"}]}


async def test_disable_then_enable_pushes_an_edited_greeting_without_restart(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, greeting="Old greeting")
    add_bot(data, "other", TOKEN_B)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        before = len(emulator.calls)
        assert await meta.admin("shop", "disable") == 200
        assert len(emulator.calls) == before, "unmount makes no Graph call"
        assert (await meta.status())["bots"]["shop"]["state"] == "disabled"
        edit_bot_config(data, "shop", greeting="New greeting")
        assert await meta.admin("shop", "enable") == 200
        assert emulator.pages[PAGE_A].profile["greeting"] == [{"locale": "default", "text": "New greeting"}]
        assert await meta.module_status("shop") == {"state": "on"}
        assert await meta.module_status("other") == {"state": "on"}


async def test_events_for_a_disabled_bot_wait_and_are_answered_after_enable(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.admin("shop", "disable") == 200
        assert await meta.say(PAGE_A, "77", "hello", mid="m_while_disabled") == 200
        assert messages_with(emulator, TOKEN_A) == []
        assert await meta.admin("shop", "enable") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
        assert texts(messages_with(emulator, TOKEN_A)) == ["hello from shop"]


async def test_page_id_from_config_skips_get_me(data: Path, emulator: GraphEmulator,
                                                http: aiohttp.ClientSession) -> None:
    add_bot(data, "pinned", TOKEN_B, pageId=PAGE_B)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.module_status("pinned") == {"state": "on"}
        assert emulator.calls_to(r"/me$") == []
        assert await meta.say(PAGE_B, "5", "hello") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_B))
