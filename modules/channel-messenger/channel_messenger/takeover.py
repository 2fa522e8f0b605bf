"""A person answers from Meta's own inbox: the bot pauses for that user (human takeover).

Under conversation routing a Page's people answer in Meta Business Suite's inbox (the Page Inbox, app
263902037430900) without taking thread control first, so the bot would talk over them. Each message
the Page sends comes back as an echo (webhook field ``message_echoes``) naming the app that sent it
(``app_id``). An echo that is not the bot's own is a person (or another app) answering:

- the echo is recorded in history as it always was, flagged ``humanAgent``;
- the bot is paused for that user for ``humanTakeoverPause`` after the person's last message (each new
  one extends it): the user's messages meanwhile are stored and recorded, flagged ``silent`` and
  ``paused``, and reach no bot logic; replies already queued are not sent (their failure says why);
- the pause ends by itself, or at once when the thread is passed back to the bot (``pass_thread_control``
  to its app, as the Page Inbox does when a person marks the conversation done), or through the handover
  API (``take``).

Which echoes are the bot's own: those of its app, ``appId`` in its config, else learnt from an echo of a
message the channel sent itself (its mid is the Send API's answer), kept in ``bot.state``. Until it is
known, only the Page Inbox's echoes count as a person (an echo of another app could be the bot's own).
The pause is a thread owner with an end time (handover.py), so it survives restarts like handovers do.
"""

from __future__ import annotations

from collections import OrderedDict

from botpress_py.sdk import BotContext, IOEvent

from .handover import ThreadOwners
from .incoming import USER_EVENT_TYPES
from .pages import PageBinding
from .settings import PAGE_INBOX_APP_ID

APP_ID_KEY = "appId"  # bot.state: the bot's own app, learnt from an echo of its own message
MAX_SENT = 10_000
# What a paused user does that bot logic must not answer meanwhile (messages and all that reaches bot logic).
PAUSED_TYPES = USER_EVENT_TYPES | {"edit", "delete", "message"}


class HumanTakeover:
    def __init__(self, owners: ThreadOwners) -> None:
        self.owners = owners
        self._sent: OrderedDict[str, None] = OrderedDict()  # mids of messages this channel sent, recent ones
        self._apps: dict[str, str] = {}  # bot id -> its own app id ("" when not known yet)

    def sent(self, message_ids: str) -> None:
        """Mids the Send API gave for a delivered event (comma-separated): their echoes are the bot's own."""
        for mid in message_ids.split(","):
            if mid:
                self._sent[mid] = None
        while len(self._sent) > MAX_SENT:
            self._sent.popitem(last=False)

    async def our_app(self, bot: BotContext, binding: PageBinding) -> str:
        """The bot's own app id: configured, else learnt (memory, then ``bot.state``), else ""."""
        configured = binding.settings.events.app_id
        if configured:
            return configured
        if bot.id not in self._apps:
            stored = await bot.state.get(APP_ID_KEY)
            self._apps[bot.id] = stored if isinstance(stored, str) and stored.isdigit() else ""
        return self._apps[bot.id]

    async def _learn(self, bot: BotContext, app_id: str) -> None:
        if self._apps.get(bot.id) != app_id:
            self._apps[bot.id] = app_id
            await bot.state.set(APP_ID_KEY, app_id)
            bot.logger.info("channel-messenger: the bot's own app is %s (learnt from an echo of its message); "
                            "echoes of other apps are people answering", app_id)

    def _idle(self, bot: BotContext, page_id: str, events: list[IOEvent]) -> bool:
        """True when ``apply`` would change nothing (checked without awaiting: the webhook's hot path)."""
        for event in events:
            if event.flags.get("echo"):
                return False
            if event.type in PAUSED_TYPES and self.owners.known(bot, page_id, event.target) is not False:
                return False
        return True

    def idle_app(self, bot: BotContext, binding: PageBinding, events: list[IOEvent]) -> str | None:
        """What ``apply`` returns when it would change nothing (no await: the webhook's hot path), else None."""
        if self._idle(bot, binding.page_id, events):
            return binding.settings.events.app_id or self._apps.get(bot.id, "")
        return None

    async def apply(self, bot: BotContext, binding: PageBinding, events: list[IOEvent]) -> str:
        """Pause for users a person answered; silence the paused users' events. Returns the bot's app id
        ("" when unknown), which the thread owners use to read conversation routing's handover events."""
        idle = self.idle_app(bot, binding, events)
        if idle is not None:
            return idle
        ours = await self.our_app(bot, binding)
        pause_ms = binding.settings.events.human_takeover_pause_ms
        for event in events:
            if event.flags.get("echo"):
                app = event.flags.get("appId")
                mid = event.payload.get("mid")
                if isinstance(mid, str) and mid in self._sent:
                    if isinstance(app, str) and app and not binding.settings.events.app_id:
                        await self._learn(bot, app)
                        ours = app
                    continue
                if not isinstance(app, str) or not app or app == ours:
                    continue
                if app != PAGE_INBOX_APP_ID and not ours:
                    continue  # maybe the bot's own echo: only the Page Inbox is surely a person
                event.flags["humanAgent"] = True
                if pause_ms > 0:
                    who = "the Page Inbox" if app == PAGE_INBOX_APP_ID else f"app {app}"
                    if await self.owners.pause(bot, binding.page_id, event.target, app,
                                               self.owners.clock() + pause_ms, f"a person answered from {who}"):
                        bot.logger.info("Page %s: a person answered a user from %s; the bot is paused for that "
                                        "user (humanTakeoverPause)", binding.page_id, who)
            elif event.type in PAUSED_TYPES and not event.flags.get("standby"):
                owner = await self.owners.get(bot, binding.page_id, event.target)
                if owner is not None and owner.get("until"):
                    event.flags["silent"] = True
                    event.flags["paused"] = True
        return ours
