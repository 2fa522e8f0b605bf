"""The Messenger profile, completed: per-locale greetings, ice breakers (Messenger's and Instagram's) and
whitelisted domains; their config shapes, and pushes made only when something changed (DELETE for what was
removed), on the real server against the emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from channel_messenger.profile import ProfileConfigError, desired_profile, profile_changes
from channel_messenger.profile_fields import greeting_field, ice_breakers_field
from channel_messenger.settings import MessengerSettings
from instagram_kit import ACCOUNT_A
from messenger_testkit import PAGE_A, TOKEN_A, FakeMeta, add_bot, edit_bot_config, profile_calls, serve, write_global

from botpress_py.sdk import validate_instance

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "config.schema.json").read_text())
QUESTIONS = [{"question": "What do you sell?", "payload": "PRODUCTS"},
             {"question": "Where are you?", "payload": "WHERE"}]
LOCALIZED = [{"locale": "default", "call_to_actions": QUESTIONS},
             {"locale": "fr_FR", "call_to_actions": [{"question": "Vous vendez quoi ?", "payload": "PRODUCTS"}]}]
GREETINGS = [{"locale": "default", "text": "Hi {{user_first_name}}!"}, {"locale": "fr_FR", "text": "Salut !"}]


# -- config shapes -------------------------------------------------------------------------------
def test_greetings_one_text_or_per_locale() -> None:
    assert greeting_field("Hello") == [{"locale": "default", "text": "Hello"}]
    assert greeting_field("") == []
    assert greeting_field(tuple(GREETINGS)) == GREETINGS
    with pytest.raises(ProfileConfigError, match='none with "locale": "default"'):
        greeting_field([{"locale": "fr_FR", "text": "Salut"}])
    with pytest.raises(ProfileConfigError, match="fr_FR more than once"):
        greeting_field([*GREETINGS, {"locale": "fr_FR", "text": "Bonjour"}])


def test_ice_breakers_become_metas_localized_form() -> None:
    assert ice_breakers_field(QUESTIONS) == [{"call_to_actions": QUESTIONS, "locale": "default"}]
    assert ice_breakers_field(LOCALIZED) == [{"call_to_actions": c["call_to_actions"], "locale": c["locale"]}
                                             for c in LOCALIZED]
    assert ice_breakers_field([]) == []
    with pytest.raises(ProfileConfigError, match="mixes"):
        ice_breakers_field([QUESTIONS[0], LOCALIZED[0]])
    with pytest.raises(ProfileConfigError, match="5 questions: Meta shows at most 4"):
        ice_breakers_field(QUESTIONS * 2 + QUESTIONS[:1])
    with pytest.raises(ProfileConfigError, match="default"):
        ice_breakers_field(LOCALIZED[1:])


def test_the_desired_profile_has_every_field_and_says_ice_breakers_hide_get_started() -> None:
    settings = MessengerSettings.from_config({"greeting": GREETINGS, "getStarted": "GO", "iceBreakers": QUESTIONS,
                                              "whitelistedDomains": ["https://shop.example"]})
    wanted = desired_profile(settings)
    assert wanted.fields == {"greeting": GREETINGS, "get_started": {"payload": "GO"},
                             "ice_breakers": [{"call_to_actions": QUESTIONS, "locale": "default"}],
                             "whitelisted_domains": ["https://shop.example"]}
    assert wanted.notes == [] and "instead of the Get Started button" in wanted.info[0]
    last = {**wanted.fields, "persistent_menu": [{"locale": "default"}]}
    assert profile_changes({}, last) == ({}, ["persistent_menu", "ice_breakers", "greeting", "get_started",
                                              "whitelisted_domains"]), "the menu goes before get_started"


def problems(**config: Any) -> list[str]:
    schema = {k: v for k, v in SCHEMA.items() if k != "$schema"}
    return [p.pointer for p in validate_instance(config, schema, "x.json")]


@pytest.mark.parametrize(("config", "pointer"), [
    ({"greeting": [{"locale": "fr_FR", "text": "Salut"}]}, "/greeting"),
    ({"greeting": [{"locale": "default", "text": "x" * 161}]}, "/greeting/0/text"),
    ({"greeting": []}, "/greeting"),
    ({"iceBreakers": QUESTIONS * 2 + QUESTIONS[:1]}, "/iceBreakers"),
    ({"iceBreakers": LOCALIZED[1:]}, "/iceBreakers"),
    ({"iceBreakers": [{"question": "Q?"}]}, "/iceBreakers/0"),
    ({"iceBreakers": [{"locale": "default", "call_to_actions": QUESTIONS * 3}]}, "/iceBreakers/0"),
    ({"whitelistedDomains": ["http://shop.example"]}, "/whitelistedDomains/0"),
    ({"whitelistedDomains": ["https://10.0.0.1"]}, "/whitelistedDomains/0"),
    ({"whitelistedDomains": ["https://localhost:3000"]}, "/whitelistedDomains/0"),
    ({"whitelistedDomains": ["https://shop.example"] * 2}, "/whitelistedDomains"),
    ({"reuseAttachments": "yes"}, "/reuseAttachments"),
    ({"instagram": {"enabled": True, "acountId": "1"}}, "/instagram/acountId"),
    ({"instagram": {"accountId": "my_shop"}}, "/instagram/accountId"),
    ({"instagram": {"iceBreakers": QUESTIONS * 3}}, "/instagram/iceBreakers"),
    ({"instagram": True}, "/instagram"),
])
def test_the_schema_refuses_with_the_pointer(config: dict[str, Any], pointer: str) -> None:
    assert pointer in problems(**config)


def test_the_schema_accepts_every_documented_form() -> None:
    assert problems(greeting="Hi!", iceBreakers=QUESTIONS, whitelistedDomains=["https://shop.example",
                                                                               "https://www.shop.example:8443/app"],
                    reuseAttachments=False, instagram={"enabled": True}) == []
    assert problems(greeting=GREETINGS, iceBreakers=LOCALIZED,
                    instagram={"enabled": True, "accountId": ACCOUNT_A, "iceBreakers": LOCALIZED}) == []


# -- pushes on the real server -------------------------------------------------------------------
def profile_bodies(emulator: GraphEmulator, since: int = 0) -> list[tuple[str, str | None, Any]]:
    return [(c["method"], c["query"].get("platform"), c["json"]) for c in profile_calls(emulator)[since:]]


async def test_profile_fields_are_pushed_once_and_then_only_what_changed(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    emulator.instagram.link(PAGE_A, ACCOUNT_A)
    data = tmp_path / "data"
    write_global(data, emulator)
    add_bot(data, "shop", TOKEN_A, greeting=GREETINGS, getStarted="GET_STARTED", iceBreakers=QUESTIONS,
            whitelistedDomains=["https://shop.example"], instagram={"enabled": True, "iceBreakers": LOCALIZED})
    async with serve(data) as server:
        assert await FakeMeta(http, server).module_status("shop") == {"state": "on"}
    ice_breakers = [{"call_to_actions": QUESTIONS, "locale": "default"}]
    assert sorted(profile_bodies(emulator), key=lambda c: c[1] or "") == [
        ("POST", None, {"greeting": GREETINGS, "get_started": {"payload": "GET_STARTED"},
                        "ice_breakers": ice_breakers, "whitelisted_domains": ["https://shop.example"]}),
        ("POST", "instagram", {"platform": "instagram", "ice_breakers": LOCALIZED}),
    ]
    assert emulator.instagram.profiles[ACCOUNT_A] == {"ice_breakers": LOCALIZED}

    async with serve(data) as server:  # a restart with the same config: not one profile call
        assert await FakeMeta(http, server).module_status("shop") == {"state": "on"}
    assert len(profile_calls(emulator)) == 2

    changed = [QUESTIONS[0], {"question": "Opening hours?", "payload": "HOURS"}]
    edit_bot_config(data, "shop", iceBreakers=changed, whitelistedDomains=None,
                    instagram={"enabled": True, "iceBreakers": []})
    async with serve(data) as server:
        assert await FakeMeta(http, server).module_status("shop") == {"state": "on"}
    assert sorted(profile_bodies(emulator, 2), key=lambda c: (c[1] or "", c[0])) == [
        ("DELETE", None, {"fields": ["whitelisted_domains"]}),
        ("POST", None, {"ice_breakers": [{"call_to_actions": changed, "locale": "default"}]}),
        ("DELETE", "instagram", {"fields": ["ice_breakers"]}),
    ]
    page = emulator.pages[PAGE_A].profile
    assert set(page) == {"greeting", "get_started", "ice_breakers"}
    assert emulator.instagram.profiles[ACCOUNT_A] == {}


async def test_a_profile_setting_meta_would_refuse_is_a_status_error_before_any_call(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data = tmp_path / "data"
    write_global(data, emulator)
    # Two entries for one locale: the schema cannot say it, the channel does.
    add_bot(data, "shop", TOKEN_A, greeting=[*GREETINGS, {"locale": "fr_FR", "text": "Bonjour"}])
    emulator.instagram.link(PAGE_A, ACCOUNT_A)
    add_bot(data, "insta", "EAA-token-page-b", instagram={"enabled": True, "iceBreakers": LOCALIZED + LOCALIZED[1:]})
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        status = await meta.module_status("shop")
        insta = await meta.module_status("insta")
    assert status["state"] == "error"
    assert "greeting gives locale fr_FR more than once" in status["reason"]
    assert insta["state"] == "error" and insta["reason"].startswith(
        "instagram: instagram.iceBreakers gives locale fr_FR more than once: keep one entry per locale (in "
        "data/bots/insta/config/channel-messenger.json)")
    assert profile_calls(emulator) == []
