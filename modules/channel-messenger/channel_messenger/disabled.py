"""A disabled bot's Page: its deliveries are still verified and acknowledged, never refused.

A bot disabled in bot.config.json is not mounted, yet Meta keeps delivering its Page's
messages. Refusing them (403: no appSecret known to check the signature) makes Meta retry, then
unsubscribe the app from the webhook, for every Page of that app. So the core calls
``on_bot_disabled`` for every configured bot that is disabled, at start and when disabled at
runtime, and the channel keeps a *dormant* binding for it: its appSecret verifies deliveries,
and ``disabledBotDeliveries`` says whether the Page's events are stored for the bot (the core
keeps them until it is enabled, then the bot answers them) or acknowledged and dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from botpress_py.sdk import BotContext

from .graph_client import GraphApiError, PageGraph
from .pages import PAGE_STATE_KEY, PageBinding, PageRegistry
from .settings import MessengerSettings, is_placeholder

PAGE_LOOKUP_TIMEOUT = 10.0  # GET /me for a disabled bot whose Page is not known


class DisabledBots:
    """Dormant bindings of disabled bots, and the background ``GET /me`` of those whose Page is unknown."""

    def __init__(self, registry: PageRegistry,
                 page_graph: Callable[[BotContext, MessengerSettings], PageGraph]) -> None:
        self.registry = registry
        self._page_graph = page_graph
        self._lookups: dict[str, asyncio.Task[None]] = {}  # bot id -> its GET /me

    def clear(self) -> None:
        for task in self._lookups.values():
            task.cancel()
        self._lookups.clear()

    def forget(self, bot_id: str) -> None:
        """The bot mounts (or is disabled again): a lookup under way is no longer wanted."""
        task = self._lookups.pop(bot_id, None)
        if task is not None:
            task.cancel()

    async def disabled(self, bot: BotContext) -> None:
        """Keep the bot's Page served while it is disabled (its config is the one of ``bot``)."""
        self.forget(bot.id)
        settings = MessengerSettings.from_config(bot.config)
        if not settings.enabled or is_placeholder(settings.app_secret):
            # The channel is off for it (no delivery is expected), or nothing could verify one.
            self.registry.release(bot.id)
            return
        page_id = settings.page_id
        if not page_id:
            try:
                remembered = await bot.state.get(PAGE_STATE_KEY)
            except Exception:
                remembered = None  # storage trouble: GET /me below finds it
            page_id = remembered if isinstance(remembered, str) and remembered.isdigit() else ""
        binding = PageBinding(page_id=page_id, page_name="", bot=bot, settings=settings,
                              graph=self._page_graph(bot, settings), dormant=True)
        self.registry.wait(binding)
        if page_id:
            self._told(bot, page_id)
            return
        if is_placeholder(settings.access_token):
            self._unknown(bot, "no accessToken to ask GET /me with")
            return
        task = asyncio.create_task(self._learn_page(binding), name=f"messenger-page-of:{bot.id}")
        self._lookups[bot.id] = task
        task.add_done_callback(lambda done: self._lookups.pop(bot.id, None) if self._lookups.get(bot.id) is done
                               else None)

    @staticmethod
    def _told(bot: BotContext, page_id: str) -> None:
        store = MessengerSettings.from_config(bot.config).disabled_bot_deliveries == "store"
        bot.logger.info("bot '%s' is disabled: deliveries for page %s are %s", bot.id, page_id,
                        "stored and answered once it is enabled" if store else "acknowledged and dropped "
                        "(disabledBotDeliveries: drop)")

    @staticmethod
    def _unknown(bot: BotContext, reason: str) -> None:
        bot.logger.warning("bot '%s' is disabled and its Page is not known (no pageId, never connected, %s): "
                           "deliveries for it are verified and acknowledged but not kept; set pageId in "
                           "data/bots/%s/config/channel-messenger.json to keep them", bot.id, reason, bot.id)

    async def _learn_page(self, binding: PageBinding) -> None:
        bot = binding.bot
        name = ""
        try:
            me = await asyncio.wait_for(binding.graph.me(), PAGE_LOOKUP_TIMEOUT)
        except (GraphApiError, TimeoutError) as exc:
            page_id, reason = "", f"GET /me failed: {exc or 'no answer'}"
        else:
            page_id, name = str(me.get("id") or ""), str(me.get("name") or "")
            reason = "GET /me did not return a Page id"
        if self.registry.waiting_for(bot.id) is not binding:
            return  # mounted, disabled again or removed meanwhile
        if not page_id.isdigit():
            self._unknown(bot, reason)
            return
        self.registry.wait(PageBinding(page_id=page_id, page_name=name, bot=bot, settings=binding.settings,
                                       graph=binding.graph, dormant=True))
        self._told(bot, page_id)
