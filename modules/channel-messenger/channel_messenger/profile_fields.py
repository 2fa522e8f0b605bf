"""Config values turned into Messenger profile fields: per-locale greetings and ice breakers.

Meta's shapes (Messenger Profile API reference, 2024-2026 editions):

- ``greeting``: ``[{"locale": "default", "text": "…"}, {"locale": "fr_FR", "text": "…"}]``, text at
  most 160 characters, a ``default`` locale required;
- ``ice_breakers`` (the localized form Meta asks for since 2022; the flat form is deprecated):
  ``[{"locale": "default", "call_to_actions": [{"question", "payload"}, …]}, …]``, at most 4
  questions per locale, a ``default`` locale required. The same shape serves Instagram (with
  ``platform=instagram``).

The config accepts the short form too (one greeting text; a flat list of questions), which is the
``default`` locale alone. The schema checks most of this; what it cannot say (a locale given twice,
the two forms mixed) raises ``ProfileConfigError`` here, and the bot's status says what to fix.
"""

from __future__ import annotations

from typing import Any

MAX_ICE_BREAKERS = 4
DEFAULT_LOCALE = "default"


class ProfileConfigError(ValueError):
    """A profile setting that cannot become a Messenger profile field (the message says how to fix it)."""


def _check_locales(items: list[dict[str, Any]], key: str) -> None:
    locales = [item.get("locale") for item in items]
    if DEFAULT_LOCALE not in locales:
        raise ProfileConfigError(f'{key} has per-locale entries but none with "locale": "default"')
    repeated = sorted({str(x) for x in locales if locales.count(x) > 1})
    if repeated:
        raise ProfileConfigError(f"{key} gives locale {', '.join(repeated)} more than once: keep one entry per locale")


def greeting_field(value: str | tuple[Any, ...] | list[Any]) -> list[dict[str, Any]]:
    """The ``greeting`` field ([] when there is no greeting)."""
    if isinstance(value, str):
        return [{"locale": DEFAULT_LOCALE, "text": value}] if value else []
    items = [dict(item) for item in value if isinstance(item, dict)]
    if not items:
        return []
    _check_locales(items, "greeting")
    return [{"locale": item["locale"], "text": item["text"]} for item in items]


def ice_breakers_field(value: tuple[Any, ...] | list[Any], key: str = "iceBreakers") -> list[dict[str, Any]]:
    """The ``ice_breakers`` field, always in the per-locale form ([] when there are none)."""
    items = [dict(item) for item in value if isinstance(item, dict)]
    if not items:
        return []
    per_locale = [item for item in items if "locale" in item]
    if per_locale and len(per_locale) != len(items):
        raise ProfileConfigError(f"{key} mixes {{question, payload}} items and per-locale lists: use one form (a "
                                 "list of questions, or a list of {locale, call_to_actions})")
    if not per_locale:
        if len(items) > MAX_ICE_BREAKERS:
            raise ProfileConfigError(f"{key} has {len(items)} questions: Meta shows at most {MAX_ICE_BREAKERS}")
        return [{"call_to_actions": [_question(item) for item in items], "locale": DEFAULT_LOCALE}]
    _check_locales(per_locale, key)
    for item in per_locale:
        actions = item.get("call_to_actions") or []
        if len(actions) > MAX_ICE_BREAKERS:
            raise ProfileConfigError(f"{key} locale {item.get('locale')} has {len(actions)} questions: Meta shows "
                                     f"at most {MAX_ICE_BREAKERS}")
    return [{"call_to_actions": [_question(a) for a in item.get("call_to_actions") or []], "locale": item["locale"]}
            for item in per_locale]


def _question(item: dict[str, Any]) -> dict[str, str]:
    return {"question": str(item.get("question", "")), "payload": str(item.get("payload", ""))}
