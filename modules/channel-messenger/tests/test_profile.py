"""The Messenger profile the config asks for, and the minimal change set against the last push."""

from __future__ import annotations

import pytest
from channel_messenger.profile import ProfileConfigError, desired_profile, persistent_menu, profile_changes
from channel_messenger.settings import MessengerSettings

MENU_ITEMS = [
    {"type": "postback", "title": "Help", "payload": "HELP"},
    {"type": "web_url", "title": "Website", "url": "https://example.com"},
]


def settings(**config: object) -> MessengerSettings:
    return MessengerSettings.from_config(config)


def test_full_profile_exact() -> None:
    wanted = desired_profile(settings(greeting="Hi {{user_first_name}}!", getStarted="GET_STARTED",
                                      persistentMenu=MENU_ITEMS))
    assert wanted.fields == {
        "greeting": [{"locale": "default", "text": "Hi {{user_first_name}}!"}],
        "get_started": {"payload": "GET_STARTED"},
        "persistent_menu": [{"locale": "default", "composer_input_disabled": False, "call_to_actions": MENU_ITEMS}],
    }
    assert wanted.notes == []


def test_empty_config_wants_nothing() -> None:
    assert desired_profile(settings()).fields == {}


def test_menu_without_get_started_is_skipped_with_a_reason() -> None:
    wanted = desired_profile(settings(persistentMenu=MENU_ITEMS))
    assert "persistent_menu" not in wanted.fields
    assert len(wanted.notes) == 1 and "getStarted" in wanted.notes[0]


def test_per_locale_menus_are_used_as_given() -> None:
    menus = [{"locale": "default", "call_to_actions": MENU_ITEMS},
             {"locale": "fr_FR", "composer_input_disabled": True, "call_to_actions": MENU_ITEMS[:1]}]
    assert persistent_menu(menus) == [
        {"locale": "default", "composer_input_disabled": False, "call_to_actions": MENU_ITEMS},
        {"locale": "fr_FR", "composer_input_disabled": True, "call_to_actions": MENU_ITEMS[:1]},
    ]


def test_mixed_or_defaultless_menus_are_config_errors() -> None:
    with pytest.raises(ProfileConfigError, match="mixes"):
        persistent_menu([MENU_ITEMS[0], {"locale": "default", "call_to_actions": MENU_ITEMS}])
    with pytest.raises(ProfileConfigError, match="default"):
        persistent_menu([{"locale": "fr_FR", "call_to_actions": MENU_ITEMS}])


def test_changes_only_what_differs() -> None:
    last = {"greeting": [{"locale": "default", "text": "Hi"}], "get_started": {"payload": "GO"}}
    desired = {"greeting": [{"locale": "default", "text": "Hello"}], "get_started": {"payload": "GO"}}
    assert profile_changes(desired, last) == ({"greeting": [{"locale": "default", "text": "Hello"}]}, [])
    assert profile_changes(desired, desired) == ({}, [])


def test_removed_fields_are_deleted_menu_before_get_started() -> None:
    last = {"greeting": [{"locale": "default", "text": "Hi"}], "get_started": {"payload": "GO"},
            "persistent_menu": [{"locale": "default"}]}
    assert profile_changes({}, last) == ({}, ["persistent_menu", "greeting", "get_started"])
    assert profile_changes({"get_started": {"payload": "GO"}}, last) == ({}, ["persistent_menu", "greeting"])


def test_settings_placeholders_and_problems() -> None:
    problems = settings(accessToken="", appSecret="<APP_SECRET>").mount_problems("bot.json", "global.json")
    assert len(problems) == 2
    assert "accessToken is missing" in problems[0] and "bot.json" in problems[0]
    assert "appSecret is empty or still a placeholder" in problems[1] and "global.json" in problems[1]
    assert settings(accessToken="EAAB123", appSecret="9f8e7d6c5b4a").mount_problems("b", "g") == []
    for placeholder in ("changeme", "YOUR_APP_SECRET", "xxxx", "${APP_SECRET}", "  "):
        assert settings(accessToken="EAAB", appSecret=placeholder).mount_problems("b", "g"), placeholder


def test_settings_parse_durations_and_actions() -> None:
    s = settings(chatUserAuthDuration="30m", disabledActions=["mark_seen", "bogus"], messageDelay=250,
                 graphApiUrl="http://localhost:5000/")
    assert s.chat_user_auth_seconds == 1800
    assert s.disabled_actions == frozenset({"mark_seen"}) and not s.allows("mark_seen") and s.allows("typing_on")
    assert s.message_delay_ms == 250 and s.graph_api_url == "http://localhost:5000"
