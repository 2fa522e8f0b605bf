"""Sending: an outgoing event rendered to Send API calls, paced, and resumed where it stopped.

One standard payload may take several Send API calls (a long text split in parts, choices
that continue on extra cards, typing indicators and pauses between). A transient failure in
the middle makes the core retry the event: the parts already sent are remembered, so the
retry resumes after them instead of sending them twice. ``messageDelay`` keeps a minimum gap
between two messages to the same user, across replies.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from botpress_py.sdk import BotContext, DeliveryError, IOEvent, now_ms

from .actions import page_action, send_page_action
from .attachments import Attachments
from .comments import as_private_reply, private_reply
from .graph_client import GraphApiError
from .handover import Handover
from .incoming import CHANNEL
from .owner_text import describe
from .pacing import BULK, DEFAULT_PAUSE_SECONDS, NOTIFY, REPLY, SendPacer
from .pages import PageBinding, PageRegistry
from .rendering import Pause, RenderError, Rendering, RenderOptions, render_payload
from .token_health import TokenHealth
from .window import STANDARD_WINDOW_MS, MessagingWindow

MEMORY_LIMIT = 10_000  # bound on each of the small in-memory maps below
MEDIA_TYPES = frozenset({"audio", "video"})  # Meta's lower Send API limit (10/s per Page) applies to them


def priority_of(event: IOEvent) -> int:
    """Replies to what a user wrote first, then proactive messages (notify), then broadcasts (flag ``bulk``)."""
    if event.flags.get("bulk"):
        return BULK
    return REPLY if event.incomingEventId else NOTIFY


def is_media(step: dict[str, Any]) -> bool:
    attachment = (step.get("message") or {}).get("attachment") if isinstance(step.get("message"), dict) else None
    return isinstance(attachment, dict) and attachment.get("type") in MEDIA_TYPES


class Outgoing:
    """``on_outgoing`` for channel "messenger": the sends of every connected Page.

    A subclass sends another channel of the same Send API (instagram.py): it names its ``channel``
    and ``platform``, and gives its own ``render`` (and registry of bindings).
    """

    channel = CHANNEL
    platform = "Messenger"  # in errors: "cannot send this … payload on Messenger"
    connection = "channel-messenger"  # in errors: "channel-messenger is not connected for bot …"

    def __init__(self, registry: PageRegistry, handover: Handover, attachments: Attachments | None = None) -> None:
        self.registry = registry
        self.handover = handover
        self.attachments = attachments
        self._last_message_at: dict[tuple[str, str], float] = {}  # (page, psid) -> loop time of the last send
        self._marked_seen: OrderedDict[str, None] = OrderedDict()  # incoming event ids already marked seen
        self._progress: dict[str, int] = {}  # event id -> steps sent before a transient failure
        self.pacer = SendPacer()  # the channel shares one between Messenger and Instagram (same Page budget)
        self.health: TokenHealth | None = None  # set by the channel
        self.window: MessagingWindow | None = None  # set by the channel: replies past it fail before the call
        # Told of each pause (bot id, Page id, seconds): the channel counts it and tells the other nodes.
        self.on_pause: Callable[[str, str, float], None] = lambda bot_id, page_id, seconds: None
        # This node's part of each Page's budget (ServerContext.cluster_share: 1.0 on a single server).
        self.rate_share: Callable[[], float] = lambda: 1.0

    async def send(self, event: IOEvent, bot: BotContext) -> bool | None:
        """Deliver an outgoing event of this channel ("messenger"); None for other channels.

        A refused token holds the event (token_health.py); a throttled Page pauses its queue and the
        event is retried after Meta's hint (pacing.py).
        """
        if event.channel != self.channel:
            return None
        binding = self.registry.by_bot(bot.id)
        if binding is None:
            raise DeliveryError(
                f"{self.connection} is not connected for bot '{bot.id}' (see its status in GET /status)",
                permanent=True,
            )
        if self.health is not None:
            self.health.check(binding)
        self._check_window(event, bot, binding)
        try:
            sent = await self._deliver(event, bot, binding)
        except GraphApiError as exc:
            if exc.is_auth_error and self.health is not None:
                self.health.refused(binding, exc)
                raise self.health.hold(binding) from None
            if exc.is_rate_limit:
                pause = exc.retry_after or DEFAULT_PAUSE_SECONDS
                self.pacer.pause(binding.facebook_page_id, pause)
                self.on_pause(bot.id, binding.facebook_page_id, pause)
                bot.logger.warning("Meta throttles page %s (%s): its sends pause for %.0f s", binding.page_id, exc,
                                   pause)
                raise GraphApiError(str(exc), permanent=False, status=exc.status, code=exc.code, subcode=exc.subcode,
                                    retry_after=pause) from None
            raise
        if self.health is not None:
            self.health.accepted(binding)
        return sent

    async def _deliver(self, event: IOEvent, bot: BotContext, binding: PageBinding) -> bool:
        if not event.target:
            raise DeliveryError("outgoing Messenger event has no target (user PSID)", permanent=True)
        settings = binding.settings
        if settings.mask_outgoing:
            event.flags["mask"] = True  # stored masked once sent, whoever queued it
        owner = await self.handover.owners.get(bot, binding.page_id, event.target)
        if owner is not None:
            # Not retried: the bot stays silent while another app answers the user.
            raise DeliveryError(f"not sent: {describe(owner)}; the bot stays silent until thread control comes "
                                "back to it", permanent=True, code="thread_owned_elsewhere")
        if event.payload.get("type") == "handover":
            await self.handover.payload(bot, binding, event)
            return True
        action = page_action(event.payload)  # a reaction, a public reply to a comment (actions.py)
        if action is not None:
            await send_page_action(binding, event, *action)
            return True
        comment = private_reply(event)  # an answer to a comment: Meta's one private reply (comments.py)
        tag = event.flags.get("tag")
        try:
            rendering = self.render(
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
            raise DeliveryError(f"cannot send this {event.type} payload on {self.platform}: {exc}",
                                permanent=True) from None
        if comment is not None:
            rendering = as_private_reply(rendering, comment, now_ms())
        if event.flags.get("mask") and rendering.notes:
            # Notes quote bits of the text: with masking on, only say that something was reshaped.
            bot.logger.info("%s rendering of event %s: %d limit(s) reshaped the message", self.platform, event.id,
                            len(rendering.notes))
        else:
            for note in rendering.notes:
                bot.logger.info("%s rendering of event %s: %s", self.platform, event.id, note)

        priority = priority_of(event)
        if rendering.steps and event.incomingEventId and comment is None and settings.allows("mark_seen"):
            await self._turn(binding, priority)
            await self._mark_seen(binding, event)
        start = self._progress.get(event.id, 0)
        message_ids: list[str] = []
        for index, step in enumerate(rendering.steps):
            if index < start:
                continue  # sent before a transient failure: a retry resumes after it
            if isinstance(step, Pause):
                await asyncio.sleep(step.ms / 1000)
            elif "sender_action" in step:
                await self._turn(binding, priority)
                await self._send_action(binding, step)
            else:
                await self._pace(binding, event.target)
                await self._turn(binding, priority, media=is_media(step))
                try:
                    answer = await self._send_message(binding, step)
                except GraphApiError as exc:
                    await self._on_send_failure(binding, event, index, exc)
                    raise
                self._last_message_at[(binding.page_id, event.target)] = asyncio.get_running_loop().time()
                if answer.get("message_id"):
                    message_ids.append(str(answer["message_id"]))
                if comment is not None and answer.get("recipient_id"):
                    event.flags["privateReplyRecipient"] = str(answer["recipient_id"])  # the author's PSID
            self._remember_progress(event.id, index + 1)
        self._progress.pop(event.id, None)
        if message_ids:
            # The core records it with the sent event (Messenger's mid, e.g. to match reply_to).
            event.flags["channelMessageId"] = ",".join(message_ids)
        return True

    @staticmethod
    def render(payload: dict[str, Any], recipient: str, **options: Any) -> Rendering:
        """The Send API steps of one standard payload (rendering.py)."""
        return render_payload(payload, recipient, **options)

    async def _send_message(self, binding: PageBinding, step: dict[str, Any]) -> dict[str, Any]:
        """One message; a media URL goes by its stored attachment_id when there is one (attachments.py)."""
        if self.attachments is None:
            return await binding.graph.send(step)
        return await self.attachments.send(binding, step)

    def _check_window(self, event: IOEvent, bot: BotContext, binding: PageBinding) -> None:
        """A reply that waited (a refused token, an outage) past the user's 24-hour window fails with the reason,
        instead of a Send API call Meta refuses. Only what this process saw counts: no storage read per send."""
        if self.window is None or not event.incomingEventId or event.flags.get("tag"):
            return
        last = self.window.seen(bot.id, binding.page_id, event.target)
        if last is not None and now_ms() - last > STANDARD_WINDOW_MS:
            raise DeliveryError(f"not sent: the user's last message is {(now_ms() - last) // 3_600_000} h old, past "
                                "Meta's 24-hour messaging window (the reply waited too long to be sent)",
                                permanent=True, code="outside_window")

    async def _turn(self, binding: PageBinding, priority: int, *, media: bool = False) -> None:
        """Wait for the Page's turn to call the Send API (pacing.py)."""
        if not binding.settings.send_rate_limit:
            return  # pacing off (sendRateLimit 0): a Graph API that is not Meta's
        # In a cluster each node sends for its share of the Page's conversations: its share of the budget.
        rate = max(1.0, binding.settings.send_rate_limit * self.rate_share())
        await self.pacer.acquire(binding.facebook_page_id, priority, rate=rate, media=media)

    def _remember_progress(self, event_id: str, done: int) -> None:
        if event_id not in self._progress and len(self._progress) >= MEMORY_LIMIT:
            self._progress.pop(next(iter(self._progress)))
        self._progress[event_id] = done

    async def _on_send_failure(self, binding: PageBinding, event: IOEvent, index: int, exc: GraphApiError) -> None:
        if exc.permanent and not exc.is_auth_error:
            self._progress.pop(event.id, None)
        else:
            self._remember_progress(event.id, index)  # a held send resumes after what was sent too
        if exc.thread_owned_elsewhere:
            await self.handover.send_refused(binding, event.target)

    async def _send_action(self, binding: PageBinding, body: dict[str, Any]) -> None:
        """Sender actions are cosmetic: only a bad token stops the reply for them."""
        try:
            await binding.graph.send(body)
        except GraphApiError as exc:
            if exc.is_auth_error or exc.is_rate_limit:
                raise  # send() holds the reply, or pauses the Page
            binding.bot.logger.info("Sender action %s not shown: %s", body.get("sender_action"), exc)

    async def _mark_seen(self, binding: PageBinding, event: IOEvent) -> None:
        incoming_id = event.incomingEventId or ""
        if incoming_id in self._marked_seen:
            return
        self._marked_seen[incoming_id] = None
        if len(self._marked_seen) > MEMORY_LIMIT:
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
        if len(self._last_message_at) >= MEMORY_LIMIT:
            self._last_message_at.clear()
