"""Messenger Profile (greeting, Get Started button, persistent menu) pushed only when it changed.

Meta allows about 10 profile calls per 10 minutes per Page, and a server may restart or
remount a bot many times in that window. So the last profile pushed successfully is kept in
the module's durable state, per Page id, and a mount sends only the difference: a POST with
the fields whose value changed, a DELETE for the fields pushed before and now removed. The
state is written only after Meta accepted the call, so a failed push is retried next mount.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from botpress_py.sdk import KeyValueStore

from .graph_client import PageGraph
from .settings import MessengerSettings

# Deleting in this order keeps Meta's rule "a persistent menu needs get_started" true at each step.
PROFILE_FIELDS = ("persistent_menu", "greeting", "get_started")


def state_key(page_id: str) -> str:
    return f"profile:{page_id}"


class ProfileConfigError(ValueError):
    """persistentMenu cannot be turned into a Messenger persistent menu."""


def persistent_menu(items: tuple[Any, ...] | list[Any]) -> list[dict[str, Any]]:
    """The ``persistent_menu`` value: config items are call_to_actions, or whole per-locale menus."""
    items = list(items)
    if not items:
        return []
    locale_menus = [i for i in items if isinstance(i, dict) and "locale" in i]
    if locale_menus and len(locale_menus) != len(items):
        raise ProfileConfigError(
            "persistentMenu mixes call_to_actions items and per-locale menus: use one form "
            "(a list of {type, title, ...} items, or a list of {locale, call_to_actions} menus)"
        )
    if not locale_menus:
        return [{"locale": "default", "composer_input_disabled": False, "call_to_actions": items}]
    if not any(m.get("locale") == "default" for m in locale_menus):
        raise ProfileConfigError('persistentMenu has per-locale menus but none with "locale": "default"')
    return [{"composer_input_disabled": False, **menu} for menu in locale_menus]


@dataclass(slots=True)
class DesiredProfile:
    fields: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def desired_profile(settings: MessengerSettings) -> DesiredProfile:
    """The profile the config asks for (raises ProfileConfigError for an unusable persistentMenu)."""
    fields: dict[str, Any] = {}
    notes: list[str] = []
    if settings.greeting:
        fields["greeting"] = [{"locale": "default", "text": settings.greeting}]
    if settings.get_started:
        fields["get_started"] = {"payload": settings.get_started}
    menu = persistent_menu(settings.persistent_menu)
    if menu:
        if "get_started" in fields:
            fields["persistent_menu"] = menu
        else:
            notes.append(
                "persistentMenu was not pushed: Messenger shows a persistent menu only when a Get Started "
                'button exists, so set "getStarted" (e.g. "GET_STARTED") as well'
            )
    return DesiredProfile(fields, notes)


def profile_changes(desired: dict[str, Any], last: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(fields to POST because they are new or changed, fields to DELETE because they were removed)."""
    to_set = {k: v for k, v in desired.items() if last.get(k) != v}
    to_delete = [k for k in PROFILE_FIELDS if k in last and k not in desired]
    to_delete += sorted(k for k in last if k not in desired and k not in PROFILE_FIELDS)
    return to_set, to_delete


async def sync_profile(
    graph: PageGraph,
    state: KeyValueStore,
    page_id: str,
    settings: MessengerSettings,
    logger: logging.Logger,
) -> None:
    """Bring the Page's Messenger profile to what the config asks for, with as few calls as possible.

    Raises GraphApiError when Meta refuses a call; what succeeded before it is remembered.
    """
    desired = desired_profile(settings)
    for note in desired.notes:
        logger.warning("Messenger profile of page %s: %s", page_id, note)
    key = state_key(page_id)
    stored = await state.get(key)
    last: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
    to_set, to_delete = profile_changes(desired.fields, last)
    if not to_set and not to_delete:
        logger.info("Messenger profile of page %s unchanged: nothing pushed", page_id)
        return
    if to_delete:
        await graph.delete_profile(to_delete)
        for name in to_delete:
            last.pop(name, None)
        await state.set(key, last)
        logger.info("Messenger profile of page %s: removed %s", page_id, ", ".join(to_delete))
    if to_set:
        await graph.set_profile(to_set)
        last.update(to_set)
        await state.set(key, last)
        logger.info("Messenger profile of page %s: pushed %s", page_id, ", ".join(to_set))
