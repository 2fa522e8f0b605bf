"""MessengerChannel: connects mounted bots to their Pages, receives webhooks, sends replies."""

from __future__ import annotations

import asyncio
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from aiohttp import web

from botpress_py.sdk import BotContext, DeliveryError, IOEvent, ServerContext

from .graph_client import GraphApiError, GraphClient, PageGraph
from .incoming import CHANNEL
from .pages import PageAlreadyClaimed, PageBinding, PageRegistry
from .profile import ProfileConfigError, desired_profile, sync_profile
from .rendering import Pause, RenderError, RenderOptions, render_payload
from .settings import MessengerSettings
from .webhook import WebhookEndpoint

MODULE = "channel-messenger"
PROFILE_FIELDS = "first_name,last_name,profile_pic,locale,timezone"
PROFILE_FETCH_TIMEOUT = 2.0  # seconds: the webhook's 200 waits for it, and Meta wants an answer in 5 s
PROFILE_RETRY_AFTER_FAILURE = 300.0
# The core gives on_bot_mount 30 s in all; these keep the Graph calls of a mount well inside it.
MOUNT_ME_TIMEOUT = 10.0
MOUNT_PROFILE_TIMEOUT = 15.0
_MEMORY_LIMIT = 10_000  # bound on the small in-memory maps below


def _bot_file(bot_id: str) -> str:
    return f"data/bots/{bot_id}/config/{MODULE}.json"


GLOBAL_FILE = f"data/global/config/{MODULE}.json"


def _has_key(path: Path, key: str) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and key in data


def enabled_source(bot: BotContext) -> str:
    """Where the effective ``enabled`` value comes from, so the status says what to edit."""
    if _has_key(bot.data_dir / "config" / f"{MODULE}.json", "enabled"):
        return _bot_file(bot.id)
    if "BP_MODULE_CHANNEL_MESSENGER_ENABLED" in os.environ:
        return "env BP_MODULE_CHANNEL_MESSENGER_ENABLED"
    if _has_key(bot.data_dir.parent.parent / "global" / "config" / f"{MODULE}.json", "enabled"):
        return GLOBAL_FILE
    return f'the defaults (set "enabled": true in {_bot_file(bot.id)})'


def _graph_failure_hint(error: GraphApiError) -> str:
    if error.is_auth_error:
        return ("the access token is invalid, expired or revoked: generate a new Page Access Token in Meta App > "
                "Messenger > Access Tokens and put it in accessToken")
    if error.code is None and error.status is None:
        return "the Graph API could not be reached: check the network and graphApiUrl; reload the bot to retry"
    return "reload the bot to retry once the cause is fixed"


class MessengerChannel:
    """The module's single state: the Graph pool, the Page registry and the webhook endpoint."""

    def __init__(self, graph: GraphClient | None = None) -> None:
        self.graph = graph or GraphClient()
        self.registry = PageRegistry()
        self.server: ServerContext | None = None
        self.webhook = WebhookEndpoint(self.registry, self.deliver, self._global_config)
        self._last_message_at: dict[tuple[str, str], float] = {}
        self._marked_seen: OrderedDict[str, None] = OrderedDict()
        self._progress: dict[str, int] = {}
        self._user_profiles: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def _global_config(self) -> dict[str, Any]:
        return self.server.config if self.server is not None else {}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, server: ServerContext) -> None:
        """Server start: fresh state, the pool, and the any-bot webhook routes."""
        self.registry.clear()
        self._last_message_at.clear()
        self._marked_seen.clear()
        self._progress.clear()
        self._user_profiles.clear()
        self.server = server
        await self.graph.start()
        server.router.add_get("/webhook", self.webhook.handle_get)
        server.router.add_post("/webhook", self.webhook.handle_post)

    async def stop(self) -> None:
        self.registry.clear()
        await self.graph.close()

    def status(self) -> dict[str, Any]:
        """Connected Pages, for diagnostics."""
        return {
            "pages": {
                b.page_id: {"bot": b.bot_id, "name": b.page_name} for b in self.registry.bindings()
            }
        }

    # -- mount ------------------------------------------------------------------------------
    def _fail(self, bot: BotContext, reason: str) -> None:
        bot.logger.error("channel-messenger is not connected for bot '%s': %s", bot.id, reason)
        bot.set_status("error", reason)

    def _page_graph(self, bot: BotContext, settings: MessengerSettings) -> PageGraph:
        return self.graph.page(
            api_url=settings.graph_api_url,
            version=settings.graph_api_version,
            access_token=settings.access_token,
            app_secret=settings.app_secret,
            logger=bot.logger,
        )

    async def mount(self, bot: BotContext) -> None:
        """Connect the bot to its Page, or explain in its status why not (never raises for config)."""
        settings = MessengerSettings.from_config(bot.config)
        if not settings.enabled:
            self.registry.release(bot.id)
            bot.set_status("off", f"enabled is false in {enabled_source(bot)}")
            return
        problems = settings.mount_problems(_bot_file(bot.id), GLOBAL_FILE)
        try:
            desired_profile(settings)
        except ProfileConfigError as exc:
            problems.append(f"{exc} (in {_bot_file(bot.id)} or {GLOBAL_FILE})")
        if problems:
            self.registry.release(bot.id)
            self._fail(bot, "; ".join(problems))
            return

        graph = self._page_graph(bot, settings)
        page_id, page_name = settings.page_id, ""
        if not page_id:
            try:
                me = await asyncio.wait_for(graph.me(), MOUNT_ME_TIMEOUT)
            except GraphApiError as exc:
                self.registry.release(bot.id)
                self._fail(bot, f"could not find the Page of accessToken: {exc}; {_graph_failure_hint(exc)}")
                return
            except TimeoutError:
                self.registry.release(bot.id)
                self._fail(bot, f"could not find the Page of accessToken: the Graph API did not answer within "
                                f"{MOUNT_ME_TIMEOUT:g} s; check graphApiUrl and the network, then reload the bot")
                return
            page_id = str(me.get("id") or "")
            page_name = str(me.get("name") or "")
            if not page_id.isdigit():
                self.registry.release(bot.id)
                self._fail(bot, "GET /me did not return a Page id: is accessToken a Page Access Token?")
                return

        binding = PageBinding(page_id=page_id, page_name=page_name, bot=bot, settings=settings, graph=graph)
        try:
            self.registry.claim(binding)
        except PageAlreadyClaimed as exc:
            self.registry.release(bot.id)
            self._fail(bot, str(exc))
            return
        try:
            reason = await self._push_profile(binding)
        except BaseException:
            # Cancelled (the core's mount timeout) or a storage failure: leave no half-connected Page.
            self.registry.release(bot.id)
            raise
        if self.registry.by_bot(bot.id) is not binding:
            return  # the profile push found the token refused and said so

        bot.router.add_get("/webhook", route_handler(self, "GET", bot.id))
        bot.router.add_post("/webhook", route_handler(self, "POST", bot.id))
        bot.set_status("on", reason)
        bot.logger.info("channel-messenger connected bot '%s' to page %s%s", bot.id, page_id,
                        f" ({page_name})" if page_name else "")

    async def _push_profile(self, binding: PageBinding) -> str | None:
        """Sync the Page's Messenger profile; returns a status reason when it could not be done."""
        if self.server is None:
            return None
        bot = binding.bot
        try:
            await asyncio.wait_for(
                sync_profile(binding.graph, self.server.state, binding.page_id, binding.settings, bot.logger),
                MOUNT_PROFILE_TIMEOUT,
            )
        except GraphApiError as exc:
            if exc.is_auth_error:
                self.registry.release(bot.id)
                self._fail(bot, f"Messenger profile push refused: {exc}; {_graph_failure_hint(exc)}")
                return None
            reason = f"Messenger profile not updated ({exc}); it is retried at the next mount"
        except TimeoutError:
            reason = f"Messenger profile not updated (no answer within {MOUNT_PROFILE_TIMEOUT:g} s); " \
                     "it is retried at the next mount"
        else:
            return None
        # Messages still flow without an up-to-date greeting or menu: stay on, but say so.
        bot.logger.warning("%s", reason)
        return reason

    def unmount(self, bot: BotContext) -> None:
        """Stop sending for the bot's Page; no Graph call (the profile stays as pushed)."""
        binding = self.registry.park(bot.id)
        if binding is not None:
            bot.logger.info("channel-messenger disconnected bot '%s' from page %s", bot.id, binding.page_id)

    # -- incoming ---------------------------------------------------------------------------
    async def deliver(self, binding: PageBinding, events: list[IOEvent]) -> None:
        """Store a webhook's events for the bot (the webhook answers 200 once this returned)."""
        # A parked binding's context still stores: the core holds the events until the bot is back.
        live = self.server.get_bot(binding.bot_id) if self.server is not None else None
        bot = live or binding.bot
        if binding.settings.request_profile and self.registry.by_bot(binding.bot_id) is binding:
            await self._attach_profiles(binding, events)
        await bot.receive(events)

    async def _attach_profiles(self, binding: PageBinding, events: list[IOEvent]) -> None:
        users = sorted({e.target for e in events if not e.silent and e.target.isdigit()})
        if not users:
            return
        results = await asyncio.gather(*(self._user_profile(binding, psid) for psid in users))
        profiles = dict(zip(users, results, strict=True))
        for event in events:
            profile = profiles.get(event.target)
            if profile:
                event.user = dict(profile)

    async def _user_profile(self, binding: PageBinding, psid: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        key = (binding.page_id, psid)
        cached = self._user_profiles.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        try:
            profile = await asyncio.wait_for(binding.graph.user_profile(psid, PROFILE_FIELDS),
                                             PROFILE_FETCH_TIMEOUT)
            profile = {k: v for k, v in profile.items() if k != "id"}
            ttl = float(binding.settings.chat_user_auth_seconds)
        except (GraphApiError, TimeoutError) as exc:
            binding.bot.logger.info("Profile of a user of page %s not fetched: %s", binding.page_id,
                                    exc or "timeout")
            profile, ttl = {}, PROFILE_RETRY_AFTER_FAILURE
        if len(self._user_profiles) >= _MEMORY_LIMIT:
            self._user_profiles.clear()
        self._user_profiles[key] = (loop.time() + ttl, profile)
        return profile

    # -- outgoing ---------------------------------------------------------------------------
    async def send(self, event: IOEvent, bot: BotContext) -> bool | None:
        """Deliver an outgoing event of channel "messenger"; None for other channels."""
        if event.channel != CHANNEL:
            return None
        binding = self.registry.by_bot(bot.id)
        if binding is None:
            raise DeliveryError(
                f"channel-messenger is not connected for bot '{bot.id}' (see its status in GET /status)",
                permanent=True,
            )
        if not event.target:
            raise DeliveryError("outgoing Messenger event has no target (user PSID)", permanent=True)
        settings = binding.settings
        tag = event.flags.get("tag")
        try:
            rendering = render_payload(
                event.payload,
                event.target,
                messaging_type="RESPONSE" if event.incomingEventId else "UPDATE",
                tag=tag if isinstance(tag, str) and tag else None,
                options=RenderOptions(
                    external_url=bot.external_url,
                    typing_indicators=settings.typing_indicators,
                    disabled_actions=settings.disabled_actions,
                ),
            )
        except RenderError as exc:
            raise DeliveryError(f"cannot send this {event.type} payload on Messenger: {exc}", permanent=True) from None
        for note in rendering.notes:
            bot.logger.info("Messenger rendering of event %s: %s", event.id, note)

        if rendering.steps and event.incomingEventId and settings.allows("mark_seen"):
            await self._mark_seen(binding, event)
        start = self._progress.get(event.id, 0)
        message_ids: list[str] = []
        for index, step in enumerate(rendering.steps):
            if index < start:
                continue  # sent before a transient failure: a retry resumes after it
            if isinstance(step, Pause):
                await asyncio.sleep(step.ms / 1000)
            elif "sender_action" in step:
                await self._send_action(binding, step)
            else:
                await self._pace(binding, event.target)
                try:
                    answer = await binding.graph.send(step)
                except GraphApiError as exc:
                    self._on_send_failure(binding, event, index, exc)
                    raise
                self._last_message_at[(binding.page_id, event.target)] = asyncio.get_running_loop().time()
                if answer.get("message_id"):
                    message_ids.append(str(answer["message_id"]))
            self._remember_progress(event.id, index + 1)
        self._progress.pop(event.id, None)
        if message_ids:
            # The core records it with the sent event (Messenger's mid, e.g. to match reply_to).
            event.flags["channelMessageId"] = ",".join(message_ids)
        return True

    def _remember_progress(self, event_id: str, done: int) -> None:
        if event_id not in self._progress and len(self._progress) >= _MEMORY_LIMIT:
            self._progress.pop(next(iter(self._progress)))
        self._progress[event_id] = done

    def _on_send_failure(self, binding: PageBinding, event: IOEvent, index: int, exc: GraphApiError) -> None:
        if exc.permanent:
            self._progress.pop(event.id, None)
        else:
            self._remember_progress(event.id, index)
        if exc.is_auth_error:
            binding.bot.set_status(
                "error", f"Graph API refused the access token while sending: {exc}; {_graph_failure_hint(exc)}"
            )

    async def _send_action(self, binding: PageBinding, body: dict[str, Any]) -> None:
        """Sender actions are cosmetic: only a bad token stops the reply for them."""
        try:
            await binding.graph.send(body)
        except GraphApiError as exc:
            if exc.is_auth_error:
                binding.bot.set_status(
                    "error", f"Graph API refused the access token: {exc}; {_graph_failure_hint(exc)}"
                )
                raise
            binding.bot.logger.info("Sender action %s not shown: %s", body.get("sender_action"), exc)

    async def _mark_seen(self, binding: PageBinding, event: IOEvent) -> None:
        incoming_id = event.incomingEventId or ""
        if incoming_id in self._marked_seen:
            return
        self._marked_seen[incoming_id] = None
        if len(self._marked_seen) > _MEMORY_LIMIT:
            self._marked_seen.popitem(last=False)
        await self._send_action(binding, {"recipient": {"id": event.target}, "sender_action": "mark_seen"})

    async def _pace(self, binding: PageBinding, psid: str) -> None:
        """Keep messageDelay between two messages to the same user, across replies."""
        delay = binding.settings.message_delay_ms / 1000
        if delay <= 0:
            return
        key = (binding.page_id, psid)
        last = self._last_message_at.get(key)
        if last is not None:
            wait = last + delay - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
        if len(self._last_message_at) >= _MEMORY_LIMIT:
            self._last_message_at.clear()


def route_handler(channel: MessengerChannel, method: str, bot_id: str | None) -> Any:
    """The webhook handler of one bot's own route (only that bot's Page is served there)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if method == "GET":
            return await channel.webhook.handle_get(request, bot_id)
        return await channel.webhook.handle_post(request, bot_id)

    return handler
