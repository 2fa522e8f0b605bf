"""MessengerChannel: one server's Messenger channel, connecting its mounted bots to their Pages.

It owns the parts and their lifecycle: the Graph pool, the Page registry, the webhook
endpoint, sending (outgoing.py), thread control (handover.py), the messaging window, profile
and contact lookups, and disabled bots' Pages. Mounting a bot connects it to its Page, or
says in the bot's status why not.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from botpress_py.sdk import BotContext, IOEvent, LogThrottle, ServerContext

from .answering import Answering
from .api import MessengerApi
from .attachments import Attachments
from .contacts import Contacts
from .disabled import DisabledBots
from .graph_client import GraphApiError, GraphClient, PageGraph, failure_hint
from .handover import Handover
from .health import ChannelHealth
from .incoming import CHANNEL, apply_incoming_flags
from .instagram import InstagramChannel
from .instagram_settings import INSTAGRAM
from .media import MediaDownloads
from .outgoing import Outgoing
from .pages import PAGE_STATE_KEY, PageAlreadyClaimed, PageBinding, PageRegistry
from .profile import ProfileConfigError, desired_profile, sync_profile
from .settings import MODULE, MessengerSettings
from .takeover import HumanTakeover
from .webhook import WebhookEndpoint
from .window import MessagingWindow

# The core gives on_bot_mount 30 s in all; these keep the Graph calls of a mount well inside it.
MOUNT_ME_TIMEOUT = 10.0
MOUNT_PROFILE_TIMEOUT = 15.0
# The cluster message that a Page is paused after Meta's rate-limit error, and the longest pause believed.
PAGE_PAUSED = "page-paused"
THREADS_CHANGED = "threads-changed"  # a node wrote thread-owner shards: the others read them again
MAX_PAUSE_SECONDS = 3600.0


class MountRefused(Exception):
    """Why a bot cannot be connected to its Page: its status says so, and the bot stays unconnected."""


def _shown(source: str, data_dir: Path) -> str:
    """A config file as the operator knows it (``data/bots/x/config/…``), else as given."""
    try:
        return "data/" + Path(source).relative_to(data_dir).as_posix()
    except ValueError:
        return source


def bot_file(bot_id: str) -> str:
    return f"data/bots/{bot_id}/config/{MODULE}.json"


GLOBAL_FILE = f"data/global/config/{MODULE}.json"


def enabled_source(bot: BotContext) -> str:
    """Where the effective ``enabled`` value comes from, so the status says what to edit."""
    source = bot.config_sources.get("enabled", "schema default")
    if source == "schema default":
        return f'the defaults (set "enabled": true in {bot_file(bot.id)})'
    return _shown(source, bot.data_dir.parents[1])


class MessengerChannel:
    """One server's channel state: the Graph pool, the Page registry and everything built on them."""

    def __init__(self, graph: GraphClient | None = None) -> None:
        self.graph = graph or GraphClient()
        self.registry = PageRegistry()
        self.server: ServerContext | None = None
        self.webhook = WebhookEndpoint(self.registry, self.deliver, self._global_config)
        self.contacts = Contacts(self.registry)
        self.handover = Handover()
        self.attachments = Attachments()  # media URLs uploaded once per Page (attachments.py)
        self.outgoing = Outgoing(self.registry, self.handover, self.attachments)
        self.window = MessagingWindow()
        self.disabled = DisabledBots(self.registry, self._page_graph)
        # The Instagram account linked to each bot's Page: its own webhook object, registry and sends.
        self.instagram = InstagramChannel(self.handover, self.window, self.attachments)
        self.instagram.attach(self.webhook)
        self.media = MediaDownloads()
        self.answering = Answering()
        self.takeover = HumanTakeover(self.handover.owners)
        self._throttle = LogThrottle(60.0)
        # Token and version health, the bots' statuses and the channel's metrics (health.py); one Send API
        # pacer for Messenger and Instagram, which share their Page's budget (pacing.py).
        self.health = ChannelHealth(self.registry, self.outgoing.pacer, self.instagram.status)
        for sender in (self.outgoing, self.instagram.outgoing):
            sender.pacer = self.outgoing.pacer
            sender.health = self.health.tokens
            sender.window = self.window
        self.graph.observer = self.health.observe_graph
        self.graph.batcher.on_batch = self.health.observe_batch
        self.outgoing.on_pause = self.instagram.outgoing.on_pause = self._page_paused
        self._publishing: set[asyncio.Task[None]] = set()

    def _global_config(self) -> dict[str, Any]:
        return self.server.config if self.server is not None else {}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, server: ServerContext) -> None:
        """Server start: the pool, and the any-bot webhook routes."""
        self.server = server
        self.contacts.server = server
        self.attachments.start(server.state)
        self.instagram.cluster_lock = server.cluster_lock
        if getattr(server, "clustered", False):
            # Other nodes change the same thread owners: read them again when old, merge changes under a lock.
            self.handover.owners.shared_lock = server.cluster_lock
            self.handover.owners.publish = self._threads_written
        server.on_cluster_message(THREADS_CHANGED, self._threads_changed_elsewhere)
        # Meta's Send API limits hold per Page for the whole cluster: each node paces its share of the
        # budget, and a rate-limit pause one node meets pauses the Page on every node.
        for sender in (self.outgoing, self.instagram.outgoing):
            sender.rate_share = server.cluster_share
        server.on_cluster_message(PAGE_PAUSED, self._paused_elsewhere)
        await self.graph.start()
        self.webhook.add_routes(server.router)
        self.health.start(server)

    def _page_paused(self, bot_id: str, page_id: str, seconds: float) -> None:
        self.health.paused(bot_id)
        # Unheard, the other nodes meet Meta's limit themselves, and pause then.
        self._tell_nodes(PAGE_PAUSED, {"page": page_id, "seconds": seconds}, f"page {page_id} is paused")

    def _threads_written(self, bot_id: str, numbers: list[int]) -> None:
        # Unheard, the other nodes read the shards again after handover.REFRESH_SECONDS.
        self._tell_nodes(THREADS_CHANGED, {"bot": bot_id, "shards": numbers}, f"bot {bot_id}'s thread owners changed")

    def _threads_changed_elsewhere(self, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("bot"), str) and isinstance(data.get("shards"), list):
            numbers = [n for n in data["shards"] if isinstance(n, int) and not isinstance(n, bool)]
            self.handover.owners.changed_elsewhere(data["bot"], numbers)

    def _tell_nodes(self, topic: str, data: dict[str, Any], what: str) -> None:
        """Tell the other nodes of a cluster, in the background (nothing to tell on a single server)."""
        server = self.server
        if server is None or not server.clustered:
            return

        async def publish() -> None:
            try:
                await server.cluster_publish(topic, data)
            except Exception as exc:
                server.logger.warning("could not tell the other nodes that %s: %s", what, exc)

        task = asyncio.create_task(publish(), name=f"messenger-{topic}")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    def _paused_elsewhere(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        page_id, seconds = data.get("page"), data.get("seconds")
        if isinstance(page_id, str) and isinstance(seconds, int | float) and 0 < seconds <= MAX_PAUSE_SECONDS:
            self.outgoing.pacer.pause(page_id, float(seconds))
            for binding in self.registry.bindings():
                if binding.facebook_page_id == page_id:
                    self.health.paused(binding.bot_id)  # this node's sends for the bot pause too
                    break

    async def stop(self) -> None:
        await self.health.stop()
        await self.outgoing.pacer.close()
        self.registry.clear()
        self.instagram.clear()
        self.disabled.clear()
        await self.attachments.close()
        await self.window.close()
        await self.handover.close()
        await self.media.close()
        await self.graph.close()

    # -- mount ------------------------------------------------------------------------------
    def _page_graph(self, bot: BotContext, settings: MessengerSettings) -> PageGraph:
        return self.graph.page(
            api_url=settings.graph_api_url,
            version=settings.graph_api_version,
            access_token=settings.access_token,
            app_secret=settings.app_secret,
            logger=bot.logger,
            bot_id=bot.id,
            batching=settings.graph_batching,
        )

    async def mount(self, bot: BotContext) -> None:
        """Connect the bot to its Page, or explain in its status why not (never raises for config)."""
        self.disabled.forget(bot.id)
        settings = MessengerSettings.from_config(bot.config)
        if not settings.enabled:
            self._release(bot.id)
            bot.set_status("off", f"enabled is false in {enabled_source(bot)}")
            return
        try:
            binding = await self._claim_page(bot, settings)
            # Remembered so a user erase run without a server (no GET /me) still finds this bot's Page.
            if await bot.state.get(PAGE_STATE_KEY) != binding.page_id:  # a read is cheaper than a write
                await bot.state.set(PAGE_STATE_KEY, binding.page_id)
            # The Page's profile and its Instagram account side by side: the mount's time budget holds both.
            outcomes = await asyncio.gather(self._push_profile(binding),
                                            self.instagram.connect(binding, self._server().state),
                                            return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            reason, instagram = outcomes
        except MountRefused as refused:
            self._release(bot.id)
            bot.logger.error("channel-messenger is not connected for bot '%s': %s", bot.id, refused)
            bot.set_status("error", str(refused))
            return
        except BaseException:
            # Cancelled (the core's mount timeout) or a storage failure: leave no half-connected Page.
            self._release(bot.id)
            raise
        self.webhook.add_routes(bot.router, bot.id)
        MessengerApi(bot.id, server=self._server(), registry=self.registry, handover=self.handover,
                     window=self.window).add_routes(bot)
        self.health.mounted(binding, reason, instagram)  # the status: token, version, then the mount's notes
        bot.logger.info("channel-messenger connected bot '%s' to page %s%s", bot.id, binding.page_id,
                        f" ({binding.page_name})" if binding.page_name else "")

    def _release(self, bot_id: str) -> None:
        self.health.forget(bot_id)
        self.registry.release(bot_id)
        self.instagram.release(bot_id)

    def _server(self) -> ServerContext:
        if self.server is None:
            raise RuntimeError("channel-messenger mounts bots only once its server has started")
        return self.server

    async def _claim_page(self, bot: BotContext, settings: MessengerSettings) -> PageBinding:
        """The bot's Page, found (GET /me unless pageId is set) and claimed; MountRefused says why not."""
        problems = settings.mount_problems(bot_file(bot.id), GLOBAL_FILE)
        try:
            desired_profile(settings)
        except ProfileConfigError as exc:
            problems.append(f"{exc} (in {bot_file(bot.id)} or {GLOBAL_FILE})")
        if problems:
            raise MountRefused("; ".join(problems))
        graph = self._page_graph(bot, settings)
        page_id, page_name = settings.page_id, ""
        if not page_id:
            try:
                me = await asyncio.wait_for(graph.me(), MOUNT_ME_TIMEOUT)
            except GraphApiError as exc:
                remembered = await bot.state.get(PAGE_STATE_KEY)
                if not (exc.is_auth_error and isinstance(remembered, str) and remembered):
                    raise MountRefused(f"could not find the Page of accessToken: {exc}; {failure_hint(exc)}") from None
                # The token was refused, but the bot's Page is known: stay connected so that its events are
                # stored and its replies wait (token_health.py) until the token is replaced.
                binding = PageBinding(page_id=remembered, page_name="", bot=bot, settings=settings, graph=graph)
                self.health.tokens.refused(binding, exc)
                me = {"id": remembered}
            except TimeoutError:
                raise MountRefused(f"could not find the Page of accessToken: the Graph API did not answer within "
                                   f"{MOUNT_ME_TIMEOUT:g} s; check graphApiUrl and the network, then reload the "
                                   "bot") from None
            page_id = str(me.get("id") or "")
            page_name = str(me.get("name") or "")
            if not page_id.isdigit():
                raise MountRefused("GET /me did not return a Page id: is accessToken a Page Access Token?")
        binding = PageBinding(page_id=page_id, page_name=page_name, bot=bot, settings=settings, graph=graph)
        try:
            self.registry.claim(binding)
        except PageAlreadyClaimed as exc:
            raise MountRefused(str(exc)) from None
        return binding

    async def _push_profile(self, binding: PageBinding) -> str | None:
        """Sync the Page's Messenger profile; returns a status reason when it could not be done.

        Raises MountRefused when Meta refuses the token: nothing else would work either.
        """
        bot = binding.bot
        try:
            await asyncio.wait_for(self._sync_profile_once(binding), MOUNT_PROFILE_TIMEOUT)
        except GraphApiError as exc:
            if exc.is_auth_error:
                self.health.tokens.refused(binding, exc)  # connected all the same: replies wait for a new token
            reason = f"Messenger profile not updated ({exc}); it is retried at the next mount"
        except TimeoutError:
            reason = f"Messenger profile not updated (no answer within {MOUNT_PROFILE_TIMEOUT:g} s); " \
                     "it is retried at the next mount"
        else:
            return None
        # Messages still flow without an up-to-date greeting or menu: stay on, but say so.
        bot.logger.warning("%s", reason)
        return reason

    async def _sync_profile_once(self, binding: PageBinding) -> None:
        """The push under a cluster-wide lock: nodes mounting the bot together push once (the others then find
        the stored profile unchanged and push nothing)."""
        server = self._server()
        async with server.cluster_lock(f"profile:{binding.page_id}"):
            await sync_profile(binding.graph, server.state, binding.page_id, binding.settings, binding.bot.logger)

    def unmount(self, bot: BotContext) -> None:
        """Stop sending for the bot's Page; no Graph call (the profile stays as pushed)."""
        binding = self.registry.park(bot.id)
        self.instagram.park(bot.id)
        if binding is not None:
            bot.logger.info("channel-messenger disconnected bot '%s' from page %s", bot.id, binding.page_id)

    async def bot_disabled(self, bot: BotContext) -> None:
        """A configured bot is disabled (at start or at runtime): keep its Page's deliveries (disabled.py)."""
        await self.disabled.disabled(bot)
        await self.instagram.bot_disabled(bot, self.registry.waiting_for(bot.id))

    async def erase_user(self, bot: BotContext, user_id: str, channel: str) -> None:
        """Forget what the channel keeps about the user (the core erased the rest).

        That is the thread owner, the time of the user's last message and the cached profile and
        contact check: ids and times, but about one person, and an erase leaves nothing of them.
        Meta enforces both rules those notes serve, so forgetting them is safe: a send outside the
        messaging window needs a tag again, and one into a thread another app owns is refused
        (2018300) and teaches the channel the owner anew.
        """
        if channel == INSTAGRAM:
            await self.instagram.erase_user(bot, user_id)
            return
        if channel != CHANNEL:
            return
        binding = self.registry.by_bot(bot.id) or self.registry.waiting_for(bot.id)
        pages = {binding.page_id} if binding and binding.page_id else set()
        pages |= {p for p in (str(bot.config.get("pageId") or ""), await bot.state.get(PAGE_STATE_KEY))
                  if isinstance(p, str) and p}
        await self.media.forget_user(bot, user_id)  # a download in flight must not keep a file after the erase
        for page_id in pages:
            await self.handover.owners.set_ours(bot, page_id, user_id)
            await self.window.forget(bot, page_id, user_id)
            self.contacts.forget(bot.id, page_id, user_id)

    # -- incoming ---------------------------------------------------------------------------
    async def deliver(self, binding: PageBinding, events: list[IOEvent]) -> None:
        """Store a webhook's events for the bot (the webhook answers 200 once this returned)."""
        if binding.dormant and binding.settings.disabled_bot_deliveries == "drop":
            return  # the bot is disabled and its operator chose not to keep what arrives meanwhile
        # A waiting binding's context still stores: the core holds the events until the bot is back.
        live = self.server.get_bot(binding.bot_id) if self.server is not None else None
        bot = live or binding.bot
        apply_incoming_flags(binding.settings, events)
        self.media.reserve(bot, binding.settings, events)  # the stored events name their files' URLs
        owners = self.handover.owners
        try:
            # Notes kept beside the events: O(1) per event, written later; never worth losing the events for.
            # A person answering from Meta's inbox; checked without awaiting first (the usual case: nobody).
            our_app = self.takeover.idle_app(bot, binding, events)
            if our_app is None:
                our_app = await self.takeover.apply(bot, binding, events)
            if not owners.unchanged_by(bot, binding.page_id, events):
                await owners.observe(bot, binding.page_id, events, bot.logger, our_app)
            self.window.note(bot, binding.page_id, events)
        except Exception as exc:
            self._throttle.log(bot.logger, logging.WARNING, ("notes", bot.id), "Thread owner or messaging window "
                               "of page %s not updated: %s: %s", binding.page_id, type(exc).__name__, exc)
        stored = await bot.receive(events)
        self.media.prefetch(bot, binding.settings, stored)  # downloads start; the webhook answers now

    async def enrich(self, event: IOEvent, bot: BotContext) -> None:
        """Incoming middleware: the user's profile and cross-Page contact, for bot logic."""
        await self.contacts.enrich(event, bot)

    def settings_of(self, bot: BotContext) -> MessengerSettings:
        binding = self.registry.by_bot(bot.id)
        return binding.settings if binding is not None else MessengerSettings.from_config(bot.config)

    async def before_bot_logic(self, event: IOEvent, bot: BotContext) -> None:
        """Incoming middleware: what replies will need of the event (answering.py), and its downloaded
        attachment (media.py) on ``payload.media``."""
        if event.channel == CHANNEL:
            self.answering.note(event)
            await self.media.attach(event, bot, self.settings_of(bot))

    async def send(self, event: IOEvent, bot: BotContext) -> bool | None:
        """``on_outgoing``: deliver an event of channel "messenger" (outgoing.py) or "instagram" (instagram.py)."""
        if event.channel == INSTAGRAM:
            return await self.instagram.send(event, bot)
        sent = await self.outgoing.send(event, bot)
        mids = event.flags.get("channelMessageId")
        if sent and isinstance(mids, str):
            self.takeover.sent(mids)  # their echoes are the bot's own (takeover.py)
        return sent
