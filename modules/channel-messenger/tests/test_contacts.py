"""Profiles (requestProfile, updateContactProfiles, storeProfiles) and one contact across Pages
(mergeContactProfiles), on the real server against the Graph emulator, failure paths included."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import (
    PAGE_A,
    PAGE_B,
    PAGE_C,
    TOKEN_A,
    TOKEN_B,
    FakeMeta,
    add_bot,
    edit_bot_config,
    messages_with,
    serve,
    write_global,
)
from observation_kit import all_stored_text, context, seen, spy_on_bot_logic

from botpress_py.testing import wait_for

ADA = {"first_name": "Ada", "last_name": "Lovelace", "locale": "en_GB", "timezone": 0}


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    return folder


def profile_fetches(emulator: GraphEmulator, psid: str) -> list[dict]:
    return emulator.calls_to(rf"/{psid}$", "GET")


async def until_seen(spy: Path, count: int) -> list[dict]:
    return await wait_for(lambda: (found := seen(spy)) and len(found) >= count and found)


async def test_request_profile_is_shown_as_event_user_profile_and_cached_in_storage(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    add_bot(data, "shop", TOKEN_A, requestProfile=True, chatUserAuthDuration="1s")
    spy = spy_on_bot_logic(data, "shop", tmp_path / "seen.jsonl")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "42", "hello", mid="m1") == 200
        assert await meta.say(PAGE_A, "42", "hello", mid="m2") == 200
        first, second = await until_seen(spy, 2)
        assert first["user"]["id"] == "42" and first["user"]["profile"] == ADA
        assert second["user"]["profile"] == ADA
        assert len(profile_fetches(emulator, "42")) == 1, "cached for chatUserAuthDuration"
        stored = await context(server, "shop").users.get("42", "messenger")
        assert stored is not None and stored["profile"] == ADA
        fields = profile_fetches(emulator, "42")[0]["query"]["fields"].split(",")
        assert fields == ["first_name", "last_name", "profile_pic", "locale", "timezone", "gender"]
        await asyncio.sleep(1.1)  # past the refresh age: fetched again
        assert await meta.say(PAGE_A, "42", "hello", mid="m3") == 200
        await until_seen(spy, 3)
        assert len(profile_fetches(emulator, "42")) == 2
        assert await meta.module_status("shop") == {"state": "on"}


async def test_store_profiles_false_never_writes_the_profile(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    add_bot(data, "shop", TOKEN_A, requestProfile=True, storeProfiles=False)
    spy = spy_on_bot_logic(data, "shop", tmp_path / "seen.jsonl")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "42", "hello", mid="m1") == 200
        assert await meta.say(PAGE_A, "42", "hello", mid="m2") == 200
        first, second = await until_seen(spy, 2)
        assert first["user"]["profile"] == ADA == second["user"]["profile"], "bot logic still sees it"
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 2)
        assert len(profile_fetches(emulator, "42")) == 1, "kept in memory for chatUserAuthDuration"
        assert await context(server, "shop").users.get("42", "messenger") is None
    stored = all_stored_text(data)
    assert "Lovelace" not in stored and "en_GB" not in stored


async def test_missing_field_permissions_fall_back_to_the_basic_fields_quietly(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    emulator.users["43"] = {**ADA, "first_name": "Grace", "profile_pic": "https://example.com/g.png"}
    emulator.routing.grant_fields(PAGE_A, set())  # no pages_user_locale / _timezone / _gender
    add_bot(data, "shop", TOKEN_A, requestProfile=True)
    spy = spy_on_bot_logic(data, "shop", tmp_path / "seen.jsonl")
    caplog.set_level(logging.DEBUG, logger="botpress_py")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "43", "hello") == 200
        assert await meta.say(PAGE_A, "42", "hello") == 200
        await until_seen(spy, 2)
        by_user = {e["user"]["id"]: e["user"]["profile"] for e in seen(spy)}
        assert by_user == {"43": {"first_name": "Grace", "last_name": "Lovelace",
                                  "profile_pic": "https://example.com/g.png"},
                           "42": {"first_name": "Ada", "last_name": "Lovelace"}}
        assert await meta.module_status("shop") == {"state": "on"}, "no status change"
    refused = [c for c in emulator.calls_to(r"/4[23]$") if not c["accepted"]]
    assert len(refused) == 1, "the Page's missing permission is remembered: one refused call in all"
    told = [r for r in caplog.records if "may not read every profile field" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.INFO


async def test_hidden_unreadable_and_failing_profiles_are_handled_quietly(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path, fast_retries: None) -> None:
    emulator.users["77"] = {}  # the user hides everything: Graph answers only the id
    emulator.add_rule(status=500, code=2, message="Service temporarily unavailable", path=r"/88$")
    add_bot(data, "shop", TOKEN_A, requestProfile=True)
    spy = spy_on_bot_logic(data, "shop", tmp_path / "seen.jsonl")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        for psid in ("77", "66", "88"):  # hidden, unknown to Graph (error 100), Graph failing
            assert await meta.say(PAGE_A, psid, "hello", mid=f"m-{psid}") == 200
        await until_seen(spy, 3)
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 3)
        users = {e["user"]["id"]: e["user"] for e in seen(spy)}
        assert users["77"]["profile"] == {} and users["66"]["profile"] == {}
        assert "profile" not in users["88"], "nothing known yet: no profile rather than a wrong one"
        assert await meta.module_status("shop") == {"state": "on"}
        assert await meta.say(PAGE_A, "77", "hello", mid="m-77b") == 200
        await until_seen(spy, 4)
        assert len(profile_fetches(emulator, "77")) == 1, "a hidden profile is not asked again and again"


async def test_merge_contact_profiles_links_one_person_across_two_bots(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    emulator.routing.add_person({PAGE_A: "42", PAGE_B: "4242", PAGE_C: "424242"})  # Page C has no bot
    emulator.routing.ids_page_size = 1  # three pages of ids: the channel follows the cursors
    add_bot(data, "shop", TOKEN_A, requestProfile=True, mergeContactProfiles=True, updateContactProfiles=True)
    add_bot(data, "help", TOKEN_B, mergeContactProfiles=True)
    spy_shop = spy_on_bot_logic(data, "shop", tmp_path / "shop.jsonl")
    spy_help = spy_on_bot_logic(data, "help", tmp_path / "help.jsonl")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        # The person first writes to help: shop does not know them, so there is nothing to link yet.
        assert await meta.say(PAGE_B, "4242", "hello") == 200
        [first_at_help] = await until_seen(spy_help, 1)
        assert first_at_help["user"]["contactId"] is None and first_at_help["user"]["linked"] == [], \
            "present from the first message, and right"
        assert await context(server, "shop").users.get("42", "messenger") is None, "no user made up on shop"

        assert await meta.say(PAGE_A, "42", "hello") == 200
        [at_shop] = await until_seen(spy_shop, 1)
        assert at_shop["user"]["linked"] == [{"botId": "help", "channel": "messenger", "id": "4242"}]
        contact = at_shop["user"]["contactId"]
        assert contact and at_shop["user"]["profile"] == ADA
        assert len(emulator.calls_to(r"/42/ids_for_pages$")) == 3
        help_user = await context(server, "help").users.get("4242", "messenger")
        assert help_user is not None and help_user["contactId"] == contact
        assert help_user["profile"] == ADA, "updateContactProfiles copied the profile to the linked user"

        assert await meta.say(PAGE_B, "4242", "hello", mid="again-at-help") == 200
        _, at_help = await until_seen(spy_help, 2)
        assert at_help["user"]["contactId"] == contact
        assert at_help["user"]["linked"] == [{"botId": "shop", "channel": "messenger", "id": "42"}]
        assert await meta.say(PAGE_A, "42", "hello", mid="again") == 200
        await until_seen(spy_shop, 2)
        assert len(emulator.calls_to(r"/42/ids_for_pages$")) == 3, "checked again only after chatUserAuthDuration"


async def test_merge_failures_are_quiet(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    add_bot(data, "shop", TOKEN_A, mergeContactProfiles=True)
    add_bot(data, "help", TOKEN_B)
    spy = spy_on_bot_logic(data, "shop", tmp_path / "seen.jsonl")
    emulator.add_rule(status=400, code=10, message="(#10) Requires business_management", path="ids_for_pages",
                      times=1)
    caplog.set_level(logging.INFO, logger="botpress_py")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "42", "hello") == 200  # refused
        assert await meta.say(PAGE_A, "43", "hello") == 200  # a PSID Graph does not know as a person
        await until_seen(spy, 2)
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 2)
        assert all(e["user"]["linked"] == [] and e["user"]["contactId"] is None for e in seen(spy))
        assert await meta.module_status("shop") == {"state": "on"}
    assert any("Ids on other Pages" in r.getMessage() for r in caplog.records)


async def test_refused_lookups_are_one_info_line_per_page_and_cause_not_a_warning_per_user(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    add_bot(data, "shop", TOKEN_A, mergeContactProfiles=True, requestProfile=True)
    add_bot(data, "help", TOKEN_B)
    spy = spy_on_bot_logic(data, "shop", tmp_path / "seen.jsonl")
    emulator.add_rule(status=400, code=10, message="(#10) Requires business_management", path="ids_for_pages")
    emulator.add_rule(status=400, code=230, message="(#230) Requires pages_messaging permission", path=r"/6\d$")
    caplog.set_level(logging.DEBUG, logger="botpress_py")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        for psid in range(60, 66):
            assert await meta.say(PAGE_A, str(psid), "hello") == 200
        await until_seen(spy, 6)
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 6)
    assert len(emulator.calls_to("ids_for_pages")) == 6, "every new user was looked up"
    mine = [r for r in caplog.records if r.name.startswith("botpress_py.bot.shop.channel-messenger")]
    assert [r for r in mine if r.levelno >= logging.WARNING] == [], "a refusal is not a warning per user"
    ids = [r for r in mine if "Ids on other Pages" in r.getMessage() and r.levelno == logging.INFO]
    profiles = [r for r in mine if "Profile of a user" in r.getMessage() and r.levelno == logging.INFO]
    assert len(ids) == 1 and len(profiles) == 1, "one line per Page and cause, at INFO"


async def test_a_lower_chat_user_auth_duration_applies_at_once_to_users_already_fetched(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    add_bot(data, "shop", TOKEN_A, requestProfile=True, chatUserAuthDuration="24h")
    spy = spy_on_bot_logic(data, "shop", tmp_path / "seen.jsonl")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "42", "hello", mid="before-edit") == 200
        await until_seen(spy, 1)
        assert len(profile_fetches(emulator, "42")) == 1
        edit_bot_config(data, "shop", chatUserAuthDuration="1s")
        await wait_for(lambda: server.registry.records["shop"].contexts.get("channel-messenger") is not None
                       and server.registry.records["shop"].contexts["channel-messenger"].config.get(
                           "chatUserAuthDuration") == "1s")
        await asyncio.sleep(1.1)  # older than the new duration (and far younger than the old one)
        assert await meta.say(PAGE_A, "42", "hello", mid="after-edit") == 200
        await until_seen(spy, 2)
        assert len(profile_fetches(emulator, "42")) == 2, "fetched again under the new, shorter duration"
