"""Instagram messaging on the Messenger channel: the Instagram professional account linked to a bot's Page.

Meta's Instagram Messaging (Messenger Platform flavour, with a Facebook Page linked to the
account; Meta's pages of 2025-2026) works like Messenger with other ids:

- deliveries come to the same webhook, signed with the same app secret, as ``object:
  "instagram"`` whose ``entry[].id`` is the Instagram account id; each messaging event has
  ``sender.id`` the user's Instagram-scoped id (IGSID) and ``recipient.id`` the account;
- replies go through the Send API with the *Page's* access token (``POST /me/messages``), to the
  IGSID, within Instagram's own limits (instagram_rendering.py);
- the account is found from the Page when the config does not give it:
  ``GET /{page-id}?fields=instagram_business_account``;
- its ice breakers are the Messenger profile's, with ``platform=instagram`` (profile.py).

An Instagram account is served by one bot, like a Page: the account's binding is an
``InstagramBinding`` in its own ``PageRegistry`` (keyed by account id), so thread owners, the
messaging window, dedupe, masking and disabled-bot deliveries work as for a Page, keyed by the
account. Events carry channel ``"instagram"``; ``threadId`` is the account id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from botpress_py.sdk import BotContext, IOEvent, KeyValueStore

from .attachments import Attachments
from .graph_client import GraphApiError, failure_hint
from .handover import Handover
from .incoming import map_messaging_event
from .instagram_rendering import render_instagram_payload
from .instagram_settings import INSTAGRAM
from .outgoing import Outgoing
from .pages import PageAlreadyClaimed, PageBinding, PageRegistry
from .profile import ProfileConfigError, desired_instagram_profile, sync_instagram_profile
from .rendering import Rendering
from .settings import MODULE, MessengerSettings, is_placeholder
from .webhook import EntryKind, WebhookEndpoint
from .window import MessagingWindow

ACCOUNT_STATE_KEY = "instagramAccountId"  # bot.state: the account this bot was last connected to
LOOKUP_TIMEOUT = 6.0  # GET /{page}?fields=instagram_business_account at mount
PROFILE_TIMEOUT = 8.0  # the ice breakers push at mount (beside Messenger's profile push)


@dataclass(slots=True)
class InstagramBinding(PageBinding):
    """A bot's Instagram account. ``page_id`` is the *account* id (what webhook entries, thread owners and the
    messaging window are keyed by); ``linked_page_id`` the Facebook Page whose token it speaks with."""

    linked_page_id: str = ""

    @property
    def platform(self) -> str:
        return INSTAGRAM

    @property
    def facebook_page_id(self) -> str:
        return self.linked_page_id


@dataclass(frozen=True, slots=True)
class Connection:
    """How connecting a bot's Instagram account went: ``problem`` makes the channel's status ``error`` (Messenger
    keeps working), ``note`` is said with status ``on``."""

    problem: str | None = None
    note: str | None = None


def map_instagram_event(raw: Any, account_id: str, *, standby: bool = False,
                        received_ms: int | None = None) -> list[IOEvent]:
    """One messaging event of an Instagram entry → IOEvents of channel "instagram" (the same checks as
    Messenger's: ``Malformed`` when it cannot be read)."""
    events = map_messaging_event(raw, account_id, standby=standby, received_ms=received_ms)
    for event in events:
        event.channel = INSTAGRAM
    return events


def _bot_file(bot_id: str) -> str:
    return f"data/bots/{bot_id}/config/{MODULE}.json"


class InstagramOutgoing(Outgoing):
    """``on_outgoing`` for channel "instagram": the Send API with the Page's token, Instagram's rendering."""

    channel = INSTAGRAM
    platform = "Instagram"
    connection = "Instagram (channel-messenger)"

    @staticmethod
    def render(payload: dict[str, Any], recipient: str, **options: Any) -> Rendering:
        return render_instagram_payload(payload, recipient, **options)


class InstagramChannel:
    """The Instagram accounts of one server's bots: connecting them at mount, their webhook entries, sending."""

    def __init__(self, handover: Handover, window: MessagingWindow, attachments: Attachments) -> None:
        self.accounts = PageRegistry()  # account id -> InstagramBinding (one account, one bot)
        self.handover = handover
        self.window = window
        self.outgoing = InstagramOutgoing(self.accounts, handover, attachments)
        self.cluster_lock: Callable[[str], AbstractAsyncContextManager[Any]] | None = None  # server.cluster_lock

    def attach(self, webhook: WebhookEndpoint) -> None:
        """Deliveries of ``object: "instagram"`` on the channel's webhook, routed by account id."""
        accounts = self.accounts
        webhook.add_object(INSTAGRAM, EntryKind(lambda account: accounts.by_page(account) or accounts.parked(account),
                                                map_instagram_event, "Instagram account"))

    def clear(self) -> None:
        self.accounts.clear()

    def release(self, bot_id: str) -> None:
        self.accounts.release(bot_id)

    def park(self, bot_id: str) -> None:
        """The bot unmounts: its account's deliveries are stored for it until it mounts again."""
        self.accounts.park(bot_id)

    # -- mount -----------------------------------------------------------------------------------
    async def connect(self, page: PageBinding, state: KeyValueStore) -> Connection:
        """Connect the bot's Instagram account (config ``instagram``) beside its Page; never raises for config."""
        bot, settings = page.bot, page.settings
        if not settings.instagram.enabled:
            self.accounts.release(bot.id)
            return Connection()
        try:
            desired_instagram_profile(settings.instagram)  # a setting Meta would refuse: say so before any call
        except ProfileConfigError as exc:
            return self._refused(bot, f"{exc} (in {_bot_file(bot.id)})")
        account = settings.instagram.account_id
        if not account:
            try:
                account = await asyncio.wait_for(page.graph.instagram_account(page.page_id), LOOKUP_TIMEOUT) or ""
            except GraphApiError as exc:
                return self._refused(bot, f"the Instagram account linked to page {page.page_id} could not be found "
                                          f"({exc}); {failure_hint(exc)}, or set instagram.accountId in "
                                          f"{_bot_file(bot.id)}")
            except TimeoutError:
                return self._refused(bot, f"the Instagram account linked to page {page.page_id} could not be found "
                                          f"(no answer within {LOOKUP_TIMEOUT:g} s); set instagram.accountId in "
                                          f"{_bot_file(bot.id)} or reload the bot")
            if not account:
                return self._refused(bot, f"page {page.page_id} has no Instagram professional account linked "
                                          "(GET /{page-id}?fields=instagram_business_account answered none): link the "
                                          "account to the Page in the Page's settings (Linked accounts), or set "
                                          f"instagram.accountId in {_bot_file(bot.id)}")
        binding = InstagramBinding(page_id=account, page_name="", bot=bot, settings=settings, graph=page.graph,
                                   linked_page_id=page.page_id)
        try:
            self.accounts.claim(binding)
        except PageAlreadyClaimed as exc:
            return self._refused(bot, f"Instagram account {account} is already connected to bot '{exc.owner}', so bot "
                                      f"'{exc.claimant}' cannot connect to it too (one Instagram account answers "
                                      f"through one bot): turn instagram off in {_bot_file(exc.claimant)} or in "
                                      f"{_bot_file(exc.owner)}")
        if await bot.state.get(ACCOUNT_STATE_KEY) != account:
            await bot.state.set(ACCOUNT_STATE_KEY, account)  # for a disabled bot's deliveries and erases
        bot.logger.info("channel-messenger connected bot '%s' to Instagram account %s (page %s)", bot.id, account,
                        page.page_id)
        return Connection(note=await self._push_profile(binding, state))

    def _refused(self, bot: BotContext, why: str) -> Connection:
        self.accounts.release(bot.id)
        bot.logger.error("Instagram is not connected for bot '%s': %s", bot.id, why)
        return Connection(problem=f"instagram: {why}")

    async def _push_profile(self, binding: InstagramBinding, state: KeyValueStore) -> str | None:
        """The account's ice breakers, when they changed; a status note when they could not be pushed."""

        async def once() -> None:
            # Under the server's cluster lock when there is one: nodes mounting the bot together push once.
            lock = self.cluster_lock(f"instagram-profile:{binding.page_id}") if self.cluster_lock else None
            async with lock or contextlib.nullcontext():
                await sync_instagram_profile(binding.graph, state, binding.page_id, binding.settings.instagram,
                                             binding.bot.logger)

        try:
            await asyncio.wait_for(once(), PROFILE_TIMEOUT)
        except GraphApiError as exc:
            reason = f"Instagram ice breakers not updated ({exc}); they are retried at the next mount"
        except TimeoutError:
            reason = f"Instagram ice breakers not updated (no answer within {PROFILE_TIMEOUT:g} s); they are " \
                     "retried at the next mount"
        else:
            return None
        binding.bot.logger.warning("%s", reason)
        return reason

    @staticmethod
    def status(messenger_note: str | None, connection: Connection) -> tuple[str, str | None]:
        """The channel's status once the Page and the Instagram account were dealt with."""
        notes = [n for n in (messenger_note, connection.note) if n]
        if connection.problem:
            return "error", "; ".join([connection.problem, "Messenger is connected", *notes])
        return "on", "; ".join(notes) or None

    # -- a disabled bot --------------------------------------------------------------------------
    async def bot_disabled(self, bot: BotContext, page: PageBinding | None) -> None:
        """Keep the account's deliveries verified, acknowledged and (disabledBotDeliveries) stored while the bot
        is disabled. ``page`` is the bot's waiting Page binding (None: nothing can verify a delivery)."""
        self.accounts.release(bot.id)
        settings = MessengerSettings.from_config(bot.config)
        if page is None or not settings.instagram.enabled or is_placeholder(settings.app_secret):
            return
        account = settings.instagram.account_id
        if not account:
            try:
                remembered = await bot.state.get(ACCOUNT_STATE_KEY)
            except Exception:
                remembered = None
            account = remembered if isinstance(remembered, str) and remembered.isdigit() else ""
        if not account:
            bot.logger.warning("bot '%s' is disabled and its Instagram account is not known (no instagram.accountId, "
                               "never connected): its deliveries are verified and acknowledged but not kept; set "
                               "instagram.accountId in %s to keep them", bot.id, _bot_file(bot.id))
            return
        self.accounts.wait(InstagramBinding(page_id=account, page_name="", bot=bot, settings=page.settings,
                                            graph=page.graph, dormant=True, linked_page_id=page.page_id))

    # -- erase -----------------------------------------------------------------------------------
    async def erase_user(self, bot: BotContext, user_id: str) -> None:
        """Forget the channel's own notes about an Instagram user (thread owner, last message time)."""
        binding = self.accounts.by_bot(bot.id) or self.accounts.waiting_for(bot.id)
        accounts = {binding.page_id} if binding and binding.page_id else set()
        config_account = MessengerSettings.from_config(bot.config).instagram.account_id
        accounts |= {a for a in (config_account, await bot.state.get(ACCOUNT_STATE_KEY)) if isinstance(a, str) and a}
        for account in accounts:
            await self.handover.owners.set_ours(bot, account, user_id)
            await self.window.forget(bot, account, user_id)

    async def send(self, event: IOEvent, bot: BotContext) -> bool | None:
        return await self.outgoing.send(event, bot)
