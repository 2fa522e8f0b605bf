"""bot.config.json ``details``: how a bot presents itself (avatar, links), checked like every key."""

from __future__ import annotations

from pathlib import Path

from botpress_py.bots import BOT_CONFIG_SCHEMA
from botpress_py.jsonfiles import validate_instance


def problems(details: object) -> list[str]:
    return [f"{p.pointer}: {p.message}" for p in validate_instance({"details": details}, BOT_CONFIG_SCHEMA,
                                                                  str(Path("bot.config.json")))]


def test_details_accepts_the_botpress_v12_keys() -> None:
    assert problems({"avatarUrl": "https://example.com/a.png", "coverPictureUrl": "/assets/modules/x/c.png",
                     "website": "https://example.com", "phoneNumber": "+1 555", "emailAddress": "a@example.com",
                     "termsConditions": "https://example.com/t", "privacyPolicy": "https://example.com/p"}) == []
    assert problems({}) == []


def test_details_refuses_unknown_keys_and_wrong_types_with_their_pointer() -> None:
    [unknown] = problems({"avatarURL": "x"})
    assert unknown.startswith("/details/avatarURL: unknown key")
    assert any(p.startswith("/details/website") for p in problems({"website": 42}))
    assert any(p.startswith("/details") for p in problems("https://example.com"))
