"""Who the user is: Messenger profiles (requestProfile, updateContactProfiles, storeProfiles) and one
contact across the operator's Pages (mergeContactProfiles).

Runs as incoming middleware, after the event is stored and before bot logic: a Graph call
never delays the webhook's answer, and with ``storeProfiles: false`` the fetched profile
reaches bot logic without being written anywhere (not even in the stored event).

Everything here is best effort: a hidden profile (``{}``), a missing permission, a timeout
or an outage leaves the event as it is, is logged once per Page and cause (at info), and never
changes the module's status.

Linking never creates a user on another bot: the same person's id on another Page is linked
only when that Page's bot already has that user stored. A person who never wrote to that bot,
or whose data was erased there, is not brought back there by writing to this one.

What is cached in memory is stamped with when it was fetched, not with an expiry, so a lower
``chatUserAuthDuration`` applies at once to users fetched before the edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from botpress_py.sdk import BotContext, IOEvent, LogThrottle, ServerContext, now_ms

from .graph_client import GraphApiError
from .incoming import CHANNEL
from .pages import PageBinding, PageRegistry
from .validation import optional_id

PROFILE_FIELDS = ("first_name", "last_name", "profile_pic", "locale", "timezone", "gender")
BASIC_FIELDS = ("first_name", "last_name", "profile_pic")  # what a Page reads without extra permissions
GRAPH_TIMEOUT = 2.0  # seconds per lookup: bot logic waits for it
RETRY_AFTER_FAILURE_MS = 300_000
_MEMORY_LIMIT = 10_000

Key = tuple[str, str, str]  # (bot id, page id, psid)
Fetched = tuple[int, dict[str, Any] | None, bool]  # (when fetched or stored, ms; profile; the fetch failed)


class Contacts:
    """Profile and contact lookups with their caches (memory; storage through ``bot.users``)."""

    def __init__(self, registry: PageRegistry) -> None:
        self.registry = registry
        self.server: ServerContext | None = None
        self._profiles: dict[Key, Fetched] = {}
        self._merged: dict[Key, tuple[int, bool]] = {}  # key -> (when checked, ms; the check failed)
        self._basic_only: set[str] = set()  # Pages refused the extra profile fields
        self._every_field: set[str] = set()  # Pages known to read every profile field
        # Per Page, set once its first profile fetch is answered: first-time users arriving together
        # wait for that answer (which fields the Page may read) instead of each being refused once.
        self._probes: dict[str, asyncio.Event] = {}
        self._told: set[tuple[str, str, Any]] = set()  # (page, what, cause) already logged
        self._throttle = LogThrottle(60.0)

    def forget(self, bot_id: str, page_id: str, psid: str) -> None:
        """Drop what is cached about a user (data erase)."""
        self._profiles.pop((bot_id, page_id, psid), None)
        self._merged.pop((bot_id, page_id, psid), None)

    def _log_once(self, logger: logging.Logger, page_id: str, what: str, cause: Any, message: str,
                  *args: Any) -> None:
        """At info the first time for a Page and cause (a refusal repeats for every new user), then at debug."""
        told = (page_id, what, cause)
        level = logging.INFO if told not in self._told else logging.DEBUG
        if len(self._told) >= _MEMORY_LIMIT:
            self._told.clear()
        self._told.add(told)
        logger.log(level, message, *args)

    @staticmethod
    def _bounded(cache: dict[Key, Any], key: Key) -> None:
        if key not in cache and len(cache) >= _MEMORY_LIMIT:
            cache.clear()

    # -- the middleware ----------------------------------------------------------------------
    async def enrich(self, event: IOEvent, bot: BotContext) -> None:
        """Fill ``event.user`` for bot logic: ``profile`` (requestProfile) and the contact (merge)."""
        binding = self.registry.by_bot(bot.id)
        if event.channel != CHANNEL or binding is None or not event.target.isdigit():
            return
        settings = binding.settings
        if not (settings.wants_profiles or settings.merge_contact_profiles):
            return
        try:
            async def merge() -> bool:
                return settings.merge_contact_profiles and await self.merge(binding, bot, event.target)

            async def fetch() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
                if not settings.wants_profiles:
                    return None, None
                return await self.profile(binding, bot, event.target)

            linked, (profile, fresh) = await asyncio.gather(merge(), fetch())
            if settings.request_profile and profile is not None:
                event.user["profile"] = profile
            if linked:
                stored = await bot.users.get(event.target, CHANNEL)
                if stored is not None:
                    event.user["contactId"] = stored["contactId"]
                    event.user["linked"] = stored["linked"]
            if fresh and settings.update_contact_profiles and settings.store_profiles:
                await self._update_linked(bot, event.target, fresh)
        except Exception as exc:  # never stop the event for a lookup
            self._throttle.log(bot.logger, logging.WARNING, ("enrich", binding.page_id, type(exc).__name__),
                               "Messenger profile or contact of a user of page %s not handled: %s: %s",
                               binding.page_id, type(exc).__name__, exc)

    # -- profiles ----------------------------------------------------------------------------
    async def profile(self, binding: PageBinding, bot: BotContext,
                      psid: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(profile to show, fields fetched just now or None): from memory, storage, or Graph."""
        key = (bot.id, binding.page_id, psid)
        now = now_ms()
        settings = binding.settings
        refresh_ms = settings.chat_user_auth_seconds * 1000
        cached = self._profiles.get(key)
        if cached is not None and cached[0] + (RETRY_AFTER_FAILURE_MS if cached[2] else refresh_ms) > now:
            return cached[1], None
        stored_profile: dict[str, Any] | None = None
        if settings.store_profiles:
            stored = await bot.users.get(psid, CHANNEL)
            if stored is not None and isinstance(stored.get("profile"), dict):
                stored_profile = stored["profile"]
                if now - int(stored["updatedOn"]) < refresh_ms:
                    self._bounded(self._profiles, key)
                    self._profiles[key] = (int(stored["updatedOn"]), stored_profile, False)
                    return stored_profile, None
        fetched = await self._fetch(binding, bot, psid)
        if fetched is None:  # not reachable now: what we had, and another try in a few minutes
            self._bounded(self._profiles, key)
            self._profiles[key] = (now, stored_profile, True)
            return stored_profile, None
        # Messenger's fields are replaced as a whole (one the user hid since is dropped); other keys stay.
        kept = {k: v for k, v in (stored_profile or {}).items() if k not in PROFILE_FIELDS}
        profile = {**kept, **fetched}
        if settings.store_profiles:
            await bot.users.save(psid, CHANNEL, profile)
        self._bounded(self._profiles, key)
        self._profiles[key] = (now, profile, False)
        return profile, fetched

    async def _fetch(self, binding: PageBinding, bot: BotContext, psid: str) -> dict[str, Any] | None:
        """The user's profile fields ({} when hidden or unreadable); None after a transient failure."""
        page = binding.page_id
        if page in self._basic_only or page in self._every_field:
            return await self._fetch_fields(binding, bot, psid)
        probe = self._probes.get(page)
        if probe is None:
            probe = self._probes[page] = asyncio.Event()
            try:
                return await self._fetch_fields(binding, bot, psid)
            finally:
                probe.set()  # whatever it learned (even nothing, after a timeout), the others go on
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GRAPH_TIMEOUT):
                await probe.wait()
        return await self._fetch_fields(binding, bot, psid)

    async def _fetch_fields(self, binding: PageBinding, bot: BotContext, psid: str) -> dict[str, Any] | None:
        page = binding.page_id
        fields = BASIC_FIELDS if page in self._basic_only else PROFILE_FIELDS
        try:
            async with asyncio.timeout(GRAPH_TIMEOUT):
                try:
                    answer = await binding.graph.user_profile(psid, ",".join(fields))
                except GraphApiError as exc:
                    if not exc.is_permission_error or fields == BASIC_FIELDS:
                        raise
                    self._basic_only.add(page)
                    self._log_once(bot.logger, page, "fields", exc.code,
                                   "Page %s may not read every profile field (%s): only %s are fetched from now "
                                   "on; grant the pages_user_* permissions for the others", page, exc,
                                   ", ".join(BASIC_FIELDS))
                    answer = await binding.graph.user_profile(psid, ",".join(BASIC_FIELDS))
                else:
                    if fields == PROFILE_FIELDS:
                        self._every_field.add(page)
        except TimeoutError:
            self._log_once(bot.logger, page, "timeout", None, "Profile of a user of page %s not fetched: no answer "
                           "within %g s", page, GRAPH_TIMEOUT)
            return None
        except GraphApiError as exc:
            if exc.permanent:
                # Hidden, deleted or not readable by this Page: nothing to show, and nothing to retry soon.
                self._log_once(bot.logger, page, "refused", exc.code, "Profile of a user of page %s not readable: %s",
                               page, exc)
                return {}
            self._log_once(bot.logger, page, "failed", exc.code, "Profile of a user of page %s not fetched: %s",
                           page, exc)
            return None
        profile = {k: v for k, v in answer.items() if k in PROFILE_FIELDS}
        if not profile:
            self._log_once(bot.logger, page, "hidden", None, "A user of page %s shows no profile (hidden by the user "
                           "or by missing permissions)", page)
        return profile

    async def _update_linked(self, bot: BotContext, psid: str, fetched: dict[str, Any]) -> None:
        """updateContactProfiles: the same person's users on the other bots get the fresh fields."""
        stored = await bot.users.get(psid, CHANNEL)
        for other in (stored or {}).get("linked") or []:
            if other.get("channel") != CHANNEL:
                continue
            other_binding = self.registry.by_bot(str(other.get("botId")))
            other_bot = self.server.get_bot(other_binding.bot_id) if self.server and other_binding else None
            if other_bot is None or other_binding is None or not other_binding.settings.store_profiles:
                continue  # that bot is not mounted, or keeps no profiles
            theirs = await other_bot.users.get(str(other["id"]), CHANNEL)
            if theirs is None:
                continue  # erased there meanwhile: a profile copy must not bring the user back
            base = theirs.get("profile") if isinstance(theirs.get("profile"), dict) else {}
            kept = {k: v for k, v in base.items() if k not in PROFILE_FIELDS}
            await other_bot.users.save(str(other["id"]), CHANNEL, {**kept, **fetched})

    # -- one contact across Pages -----------------------------------------------------------------
    async def merge(self, binding: PageBinding, bot: BotContext, psid: str) -> bool:
        """Link the user with the same person's users on the other connected Pages; True when linked."""
        key = (bot.id, binding.page_id, psid)
        now = now_ms()
        checked = self._merged.get(key)
        if checked is not None and checked[0] + (
                RETRY_AFTER_FAILURE_MS if checked[1] else binding.settings.chat_user_auth_seconds * 1000) > now:
            return False
        page = binding.page_id
        self._bounded(self._merged, key)
        self._merged[key] = (now, True)  # until it worked: no retry storm
        # The user wrote to this bot: stored here (ids only, no profile), the other Pages' bots can link them.
        await self._ensure_user(bot, psid)
        try:
            ids = await asyncio.wait_for(binding.graph.ids_for_pages(psid), GRAPH_TIMEOUT * 2)
        except (GraphApiError, TimeoutError) as exc:
            hint = " (are the Pages in one business, and does the token have pages_messaging?)" \
                if isinstance(exc, GraphApiError) and exc.permanent else ""
            cause = exc.code if isinstance(exc, GraphApiError) else "timeout"
            self._log_once(bot.logger, page, "ids", cause, "Ids on other Pages of a user of page %s not found: %s%s",
                           page, exc or "timeout", hint)
            return False
        self._merged[key] = (now, False)
        others: list[tuple[str, str, str]] = []
        for other_page, other_psid in ids:
            other = self.registry.by_page(other_page) or self.registry.parked(other_page)
            if other_page == page or other is None or other.bot_id == bot.id or optional_id(other_psid) is None:
                continue
            # Linking never creates a user on another bot: one who never wrote to it, or was erased there,
            # stays unknown to it until they write to it themselves.
            other_bot = (self.server.get_bot(other.bot_id) if self.server else None) or other.bot
            if await other_bot.users.get(other_psid, CHANNEL) is not None:
                others.append((other.bot_id, CHANNEL, other_psid))
        if not others:
            return False
        contact = await bot.users.link(psid, CHANNEL, others)
        bot.logger.info("Messenger user of page %s linked with %d user(s) of other pages as contact %s",
                        page, len(others), contact)
        return True

    @staticmethod
    async def _ensure_user(bot: BotContext, psid: str) -> None:
        # The core shows a contact on users that exist; a row without profile holds no personal data.
        if await bot.users.get(psid, CHANNEL) is None:
            await bot.users.save(psid, CHANNEL, None)
