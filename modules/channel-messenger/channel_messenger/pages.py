"""Which bot answers for which Facebook Page: one Page → one bot."""

from __future__ import annotations

from dataclasses import dataclass

from botpress_py.sdk import BotContext

from .graph_client import PageGraph
from .settings import MessengerSettings

PAGE_STATE_KEY = "pageId"  # bot.state: the Page this bot was last connected to


@dataclass(slots=True)
class PageBinding:
    """A bot connected to its Page (or, ``dormant``, a disabled bot whose Page's deliveries wait for it)."""

    page_id: str  # "" while a dormant bot's Page is not known yet (its secret still verifies deliveries)
    page_name: str
    bot: BotContext
    settings: MessengerSettings
    graph: PageGraph
    dormant: bool = False

    @property
    def bot_id(self) -> str:
        return self.bot.id

    @property
    def platform(self) -> str:
        """What this binding answers on: "messenger" here; an Instagram account's binding says "instagram"."""
        return "messenger"

    @property
    def facebook_page_id(self) -> str:
        """The Page whose token speaks for the binding (uploads go to ``/{page-id}/message_attachments``)."""
        return self.page_id


class PageAlreadyClaimed(Exception):
    def __init__(self, page_id: str, owner: str, claimant: str) -> None:
        super().__init__(
            f"page {page_id} is already connected to bot '{owner}', so bot '{claimant}' cannot connect to it "
            f"too (one Page answers through one bot): give '{claimant}' the access token of its own Page, "
            f"or disable the channel on '{owner}'"
        )
        self.page_id = page_id
        self.owner = owner
        self.claimant = claimant


class PageRegistry:
    """Page id → binding and bot id → binding, kept consistent with each other.

    A bot that is not mounted keeps a *waiting* binding: when it was unmounted (a reload, a
    disable) its binding is parked, and a bot disabled at start gets a dormant one from its
    config. A waiting binding no longer sends or claims its Page, but its appSecret still
    verifies deliveries and a webhook entry for its Page is still stored for the bot (the core
    keeps such events until the bot mounts again), so neither a reload nor a disabled bot ever
    makes Meta see a refusal.
    """

    def __init__(self) -> None:
        self._by_page: dict[str, PageBinding] = {}
        self._by_bot: dict[str, PageBinding] = {}
        self._waiting: dict[str, PageBinding] = {}  # bot id -> its waiting binding
        self._waiting_pages: dict[str, str] = {}  # page id -> bot id of the waiting binding
        # Bumped on every change, so callers can cache what they derive (the webhook's secrets).
        self.version = 0

    def claim(self, binding: PageBinding) -> None:
        """Connect the binding's bot to its Page; a bot's previous Page (if another) is released."""
        owner = self._by_page.get(binding.page_id)
        if owner is not None and owner.bot_id != binding.bot_id:
            raise PageAlreadyClaimed(binding.page_id, owner.bot_id, binding.bot_id)
        self.release(binding.bot_id)
        waiting = self._waiting_pages.get(binding.page_id)
        if waiting is not None:
            self._drop_waiting(waiting)
        self._by_page[binding.page_id] = binding
        self._by_bot[binding.bot_id] = binding
        self.version += 1

    def release(self, bot_id: str) -> PageBinding | None:
        """Disconnect the bot from its Page (and forget any waiting binding of it)."""
        self._drop_waiting(bot_id)
        binding = self._by_bot.pop(bot_id, None)
        if binding is not None and self._by_page.get(binding.page_id) is binding:
            del self._by_page[binding.page_id]
        self.version += 1
        return binding

    def park(self, bot_id: str) -> PageBinding | None:
        """Disconnect the bot but keep receiving (storing) its Page's events until it mounts again."""
        binding = self.release(bot_id)
        if binding is not None:
            self.wait(binding)
        return binding

    def wait(self, binding: PageBinding) -> None:
        """Keep verifying and routing deliveries to a bot that is not mounted (replaces its waiting binding).

        A Page connected to a mounted bot stays that bot's: the waiting binding then only lends its secret.
        """
        self._drop_waiting(binding.bot_id)
        self._waiting[binding.bot_id] = binding
        if binding.page_id and binding.page_id not in self._by_page:
            previous = self._waiting_pages.get(binding.page_id)
            if previous is not None and previous != binding.bot_id:
                self._waiting.pop(previous, None)  # two disabled bots on one Page: the last one set up wins
            self._waiting_pages[binding.page_id] = binding.bot_id
        self.version += 1

    def _drop_waiting(self, bot_id: str) -> None:
        binding = self._waiting.pop(bot_id, None)
        if binding is not None:
            if self._waiting_pages.get(binding.page_id) == bot_id:
                del self._waiting_pages[binding.page_id]
            self.version += 1

    def parked(self, page_id: str) -> PageBinding | None:
        """The waiting binding of a Page, if a bot that is not mounted waits for its deliveries."""
        bot_id = self._waiting_pages.get(page_id)
        return self._waiting.get(bot_id) if bot_id is not None else None

    def waiting_for(self, bot_id: str) -> PageBinding | None:
        return self._waiting.get(bot_id)

    def by_page(self, page_id: str) -> PageBinding | None:
        return self._by_page.get(page_id)

    def by_bot(self, bot_id: str) -> PageBinding | None:
        return self._by_bot.get(bot_id)

    def bindings(self, bot_id: str | None = None, *, parked: bool = False) -> list[PageBinding]:
        """Every connected binding, or only the given bot's; with ``parked`` the waiting ones too."""
        found = list(self._by_page.values())
        if parked:
            found += list(self._waiting.values())
        return [b for b in found if bot_id is None or b.bot_id == bot_id]

    def clear(self) -> None:
        self._by_page.clear()
        self._by_bot.clear()
        self._waiting.clear()
        self._waiting_pages.clear()
        self.version += 1

    def __len__(self) -> int:
        return len(self._by_page)
