"""MessengerChannel: connects mounted bots to their Pages, receives webhooks, sends replies."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from aiohttp import web

from botpress_py.sdk import BotContext, DeliveryError, IOEvent, LogThrottle, ServerContext

from .api import MessengerApi, metadata_text
from .contacts import Contacts
from .disabled import DisabledBots
from .graph_client import GraphApiError, GraphClient, PageGraph
from .incoming import CHANNEL
from .pages import PAGE_STATE_KEY, PageAlreadyClaimed, PageBinding, PageRegistry
from .profile import ProfileConfigError, desired_profile, sync_profile
from .rendering import Pause, RenderError, RenderOptions, render_payload
from .settings import MessengerSettings
from .threads import ANOTHER_APP, RELEASED, Owner, ThreadOwners, describe
from .webhook import WebhookEndpoint
from .window import MessagingWindow

MODULE = "channel-messenger"
THREAD_CONTROL_TIMEOUT = 10.0
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
        self.contacts = Contacts(self.registry)
        self.threads = ThreadOwners()
        self.window = MessagingWindow()
        self.disabled = DisabledBots(self.registry, self._page_graph)
        self._throttle = LogThrottle(60.0)

    def _global_config(self) -> dict[str, Any]:
        return self.server.config if self.server is not None else {}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, server: ServerContext) -> None:
        """Server start: fresh state, the pool, and the any-bot webhook routes."""
        self.registry.clear()
        self._last_message_at.clear()
        self._marked_seen.clear()
        self._progress.clear()
        self.contacts.clear()
        self.threads.clear()
        self.window.clear()
        self.disabled.clear()
        self.webhook.reset()
        self._throttle = LogThrottle(60.0)
        self.server = server
        self.contacts.server = server
        await self.graph.start()
        server.router.add_get("/webhook", self.webhook.handle_get)
        server.router.add_post("/webhook", self.webhook.handle_post)

    async def stop(self) -> None:
        self.registry.clear()
        self.disabled.clear()
        await self.window.close()
        await self.threads.close()
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
        self.disabled.forget(bot.id)
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
        # Remembered so a user erase run without a server (no GET /me) still finds this bot's Page.
        if await bot.state.get(PAGE_STATE_KEY) != page_id:  # a read is cheaper than a write transaction
            await bot.state.set(PAGE_STATE_KEY, page_id)
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
        MessengerApi(self, bot.id).add_routes(bot)
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

    async def bot_disabled(self, bot: BotContext) -> None:
        """A configured bot is disabled (at start or at runtime): keep its Page's deliveries (disabled.py)."""
        await self.disabled.disabled(bot)

    async def erase_user(self, bot: BotContext, user_id: str, channel: str) -> None:
        """Forget what the channel keeps about the user (the core erased the rest).

        That is the thread owner, the time of the user's last message and the cached profile and
        contact check: ids and times, but about one person, and an erase leaves nothing of them.
        Meta enforces both rules those notes serve, so forgetting them is safe: a send outside the
        messaging window needs a tag again, and one into a thread another app owns is refused
        (2018300) and teaches the channel the owner anew.
        """
        if channel != CHANNEL:
            return
        binding = self.registry.by_bot(bot.id) or self.registry.waiting_for(bot.id)
        pages = {binding.page_id} if binding and binding.page_id else set()
        pages |= {p for p in (str(bot.config.get("pageId") or ""), await bot.state.get(PAGE_STATE_KEY))
                  if isinstance(p, str) and p}
        for page_id in pages:
            await self.threads.set_ours(bot, page_id, user_id)
            await self.window.forget(bot, page_id, user_id)
            self.contacts.forget(bot.id, page_id, user_id)

    def unmount(self, bot: BotContext) -> None:
        """Stop sending for the bot's Page; no Graph call (the profile stays as pushed)."""
        binding = self.registry.park(bot.id)
        if binding is not None:
            bot.logger.info("channel-messenger disconnected bot '%s' from page %s", bot.id, binding.page_id)

    # -- incoming ---------------------------------------------------------------------------
    async def deliver(self, binding: PageBinding, events: list[IOEvent]) -> None:
        """Store a webhook's events for the bot (the webhook answers 200 once this returned)."""
        if binding.dormant and binding.settings.disabled_bot_deliveries == "drop":
            return  # the bot is disabled and its operator chose not to keep what arrives meanwhile
        # A waiting binding's context still stores: the core holds the events until the bot is back.
        live = self.server.get_bot(binding.bot_id) if self.server is not None else None
        bot = live or binding.bot
        self.apply_incoming_flags(binding, events)
        try:
            # Notes kept beside the events: O(1) per event, written later; never worth losing the events for.
            if not self.threads.unchanged_by(bot, binding.page_id, events):
                await self.threads.observe(bot, binding.page_id, events, bot.logger)
            self.window.note(bot, binding.page_id, events)
        except Exception as exc:
            self._throttle.log(bot.logger, logging.WARNING, ("notes", bot.id), "Thread owner or messaging window "
                               "of page %s not updated: %s: %s", binding.page_id, type(exc).__name__, exc)
        await bot.receive(events)

    def apply_incoming_flags(self, binding: PageBinding, events: list[IOEvent]) -> None:
        """The bot's data-protection and session settings, as flags the core acts on."""
        settings = binding.settings
        for event in events:
            # An echo is the Page's own message (the bot's, or a person's in the Page Inbox).
            if settings.mask_outgoing if event.flags.get("echo") else settings.mask_incoming:
                event.flags["mask"] = True
            if settings.mask_outgoing and not event.silent:
                event.flags["maskReplies"] = True
            if settings.session_timeout_seconds:
                event.flags["sessionTimeout"] = settings.session_timeout_seconds

    async def enrich(self, event: IOEvent, bot: BotContext) -> None:
        """Incoming middleware: the user's profile and cross-Page contact, for bot logic."""
        await self.contacts.enrich(event, bot)

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
        if settings.mask_outgoing:
            event.flags["mask"] = True  # stored masked once sent, whoever queued it
        owner = await self.threads.get(bot, binding.page_id, event.target)
        if owner is not None:
            # Not retried: the bot stays silent while another app answers the user.
            raise DeliveryError(f"not sent: {describe(owner)}; the bot stays silent until thread control comes "
                                "back to it", permanent=True, code="thread_owned_elsewhere")
        if event.payload.get("type") == "handover":
            await self._handover_payload(bot, binding, event)
            return True
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
        if event.flags.get("mask") and rendering.notes:
            # Notes quote bits of the text: with masking on, only say that something was reshaped.
            bot.logger.info("Messenger rendering of event %s: %d limit(s) reshaped the message", event.id,
                            len(rendering.notes))
        else:
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
                    await self._on_send_failure(binding, event, index, exc)
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

    # -- conversation routing (handover) ---------------------------------------------------------
    async def _handover_payload(self, bot: BotContext, binding: PageBinding, event: IOEvent) -> None:
        """A ``handover`` payload from bot logic: pass thread control (to the Page Inbox by default)."""
        target = event.payload.get("target")
        if target is not None and not (str(target) == "inbox" or str(target).isdigit()):
            raise DeliveryError(f"handover target {target!r} is neither \"inbox\" nor an app id", permanent=True)
        try:
            metadata = metadata_text(event.payload.get("metadata"))
        except ValueError as exc:
            raise DeliveryError(f"handover metadata: {exc}", permanent=True) from None
        try:
            await self.thread_control(bot, binding, event.target, "pass", target=target, metadata=metadata,
                                      reason="handover payload", record=False)
        except TimeoutError:
            raise DeliveryError("pass_thread_control: the Graph API did not answer in time") from None

    async def thread_control(self, bot: BotContext, binding: PageBinding, psid: str, action: str, *,
                             target: Any = None, metadata: str | None = None, reason: str,
                             record: bool = True) -> Owner | None:
        """Pass, take, request or release thread control; returns the owner as the channel now knows it.

        Raises GraphApiError (after marking the thread when Meta says another app owns it) or TimeoutError.
        """
        app_id = binding.settings.handover_app_id(target) if action == "pass" else None
        try:
            await asyncio.wait_for(binding.graph.thread_control(action, psid, target_app_id=app_id,
                                                                metadata=metadata), THREAD_CONTROL_TIMEOUT)
        except GraphApiError as exc:
            if exc.thread_owned_elsewhere and action in ("pass", "release") \
                    and await self.threads.get(bot, binding.page_id, psid) is None:
                await self.threads.set_elsewhere(bot, binding.page_id, psid, ANOTHER_APP,
                                                 f"{action} thread control refused: another app owns the thread")
            raise
        owner: Owner | None
        if action == "pass":
            owner = await self.threads.set_elsewhere(bot, binding.page_id, psid, str(app_id),
                                                     f"passed by the bot ({reason})")
        elif action == "release":
            owner = await self.threads.set_elsewhere(bot, binding.page_id, psid, RELEASED,
                                                     f"released by the bot ({reason})")
        elif action == "take":
            await self.threads.set_ours(bot, binding.page_id, psid)
            owner = None
        else:  # request: the owner decides, and passes control back with a webhook event
            owner = await self.threads.get(bot, binding.page_id, psid)
        bot.logger.info("Page %s: %s thread control of a conversation (%s)", binding.page_id, action, reason)
        if record:
            detail: dict[str, Any] = {"by": reason}
            if app_id:
                detail["new_owner_app_id"] = app_id
            if metadata is not None:
                detail["metadata"] = metadata
            note = IOEvent(type="handover", channel=CHANNEL, direction="incoming", botId=bot.id, target=psid,
                           threadId=binding.page_id, payload={"type": "handover", "action": f"{action}_thread_control",
                                                              "detail": detail},
                           preview=f"[{action}_thread_control]", flags={"silent": True, "handoverApi": True})
            note.dedupeKey = f"handover:{note.id}"
            await bot.receive([note])
        return owner

    def _remember_progress(self, event_id: str, done: int) -> None:
        if event_id not in self._progress and len(self._progress) >= _MEMORY_LIMIT:
            self._progress.pop(next(iter(self._progress)))
        self._progress[event_id] = done

    async def _on_send_failure(self, binding: PageBinding, event: IOEvent, index: int, exc: GraphApiError) -> None:
        if exc.permanent:
            self._progress.pop(event.id, None)
        else:
            self._remember_progress(event.id, index)
        if exc.thread_owned_elsewhere:
            await self.threads.set_elsewhere(binding.bot, binding.page_id, event.target, ANOTHER_APP,
                                             "Messenger refused a send: another app owns the thread")
            binding.bot.logger.info("Page %s: another app owns a conversation (send refused with 2018300); the "
                                    "bot stays silent in it until control comes back", binding.page_id)
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
