"""Messenger Profile (greeting, Get Started button, persistent menu, ice breakers, whitelisted domains)
pushed only when it changed; Instagram's ice breakers the same way.

Meta allows about 10 profile calls per 10 minutes per Page, and a server may restart or
remount a bot many times in that window. So the last profile pushed successfully is kept in
the module's durable state, per Page id, and a mount sends only the difference: a POST with
the fields whose value changed, a DELETE for the fields pushed before and now removed. The
state is written only after Meta accepted the call, so a failed push is retried next mount.
The Instagram account's profile (its ice breakers, ``platform=instagram``) is kept apart, per
account id, and pushed the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from botpress_py.sdk import KeyValueStore

from .graph_client import PageGraph
from .instagram_settings import INSTAGRAM, InstagramSettings
from .profile_fields import ProfileConfigError, greeting_field, ice_breakers_field
from .settings import MessengerSettings

# Deleting in this order keeps Meta's rule "a persistent menu needs get_started" true at each step,
# and a menu's webview buttons never outlive the domains they open.
PROFILE_FIELDS = ("persistent_menu", "ice_breakers", "greeting", "get_started", "whitelisted_domains")

__all__ = ["PROFILE_FIELDS", "DesiredProfile", "ProfileConfigError", "desired_instagram_profile", "desired_profile",
           "persistent_menu", "profile_changes", "push_changes", "state_key", "sync_instagram_profile",
           "sync_profile"]


def state_key(page_id: str, platform: str | None = None) -> str:
    """Where the profile last pushed is kept: per Page, or per Instagram account (``platform``)."""
    return f"profile:{page_id}" if platform is None else f"profile:{platform}:{page_id}"


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
    notes: list[str] = field(default_factory=list)  # why something asked for is not pushed (a warning)
    info: list[str] = field(default_factory=list)  # how Meta will show what is pushed


def desired_profile(settings: MessengerSettings) -> DesiredProfile:
    """The profile the config asks for (raises ProfileConfigError for a setting that cannot be pushed)."""
    fields: dict[str, Any] = {}
    notes: list[str] = []
    info: list[str] = []
    greeting = greeting_field(settings.greeting)
    if greeting:
        fields["greeting"] = greeting
    if settings.get_started:
        fields["get_started"] = {"payload": settings.get_started}
    ice_breakers = ice_breakers_field(settings.ice_breakers)
    if ice_breakers:
        fields["ice_breakers"] = ice_breakers
        if settings.get_started:
            # Meta's precedence: API ice breakers, then the Get Started button. get_started still
            # enables the persistent menu, so it is pushed all the same.
            info.append("iceBreakers are shown instead of the Get Started button (Meta shows ice breakers first); "
                        "getStarted still enables the persistent menu")
    if settings.whitelisted_domains:
        fields["whitelisted_domains"] = list(settings.whitelisted_domains)
    menu = persistent_menu(settings.persistent_menu)
    if menu:
        if "get_started" in fields:
            fields["persistent_menu"] = menu
        else:
            notes.append(
                "persistentMenu was not pushed: Messenger shows a persistent menu only when a Get Started "
                'button exists, so set "getStarted" (e.g. "GET_STARTED") as well'
            )
    return DesiredProfile(fields, notes, info)


def desired_instagram_profile(settings: InstagramSettings) -> dict[str, Any]:
    """The Instagram account's profile fields: its ice breakers (raises ProfileConfigError)."""
    ice_breakers = ice_breakers_field(settings.ice_breakers, "instagram.iceBreakers")
    return {"ice_breakers": ice_breakers} if ice_breakers else {}


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
    for note in desired.info:
        logger.info("Messenger profile of page %s: %s", page_id, note)
    await push_changes(graph, state, state_key(page_id), desired.fields, logger, f"Messenger profile of page {page_id}")


async def sync_instagram_profile(graph: PageGraph, state: KeyValueStore, account_id: str,
                                 settings: InstagramSettings, logger: logging.Logger) -> None:
    """The Instagram account's ice breakers, pushed with the Page's token only when they changed."""
    await push_changes(graph, state, state_key(account_id, INSTAGRAM), desired_instagram_profile(settings), logger,
                       f"Instagram profile of account {account_id}", platform=INSTAGRAM)


async def push_changes(graph: PageGraph, state: KeyValueStore, key: str, desired: dict[str, Any],
                       logger: logging.Logger, what: str, *, platform: str | None = None) -> None:
    """POST what changed and DELETE what was removed since the push remembered under ``key``."""
    stored = await state.get(key)
    last: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
    to_set, to_delete = profile_changes(desired, last)
    if not to_set and not to_delete:
        # DEBUG: every mount of every bot says it (10,000 bots: 10,000 lines at each start); a push is INFO.
        logger.debug("%s unchanged: nothing pushed", what)
        return
    if to_delete:
        await graph.delete_profile(to_delete, platform=platform)
        for name in to_delete:
            last.pop(name, None)
        await state.set(key, last)
        logger.info("%s: removed %s", what, ", ".join(to_delete))
    if to_set:
        await graph.set_profile(to_set, platform=platform)
        last.update(to_set)
        await state.set(key, last)
        logger.info("%s: pushed %s", what, ", ".join(to_set))
