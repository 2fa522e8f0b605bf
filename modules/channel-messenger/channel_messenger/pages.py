"""Which bot answers for which Facebook Page: one Page → one bot."""

from __future__ import annotations

from dataclasses import dataclass

from botpress_py.sdk import BotContext

from .graph_client import PageGraph
from .settings import MessengerSettings


@dataclass(slots=True)
class PageBinding:
    """A mounted bot connected to its Page."""

    page_id: str
    page_name: str
    bot: BotContext
    settings: MessengerSettings
    graph: PageGraph

    @property
    def bot_id(self) -> str:
        return self.bot.id


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

    An unmounted bot's binding is *parked*: it no longer sends or claims its Page, but a
    webhook entry for that Page is still stored for the bot (the core keeps such events
    until the bot mounts again), so a reload never drops what Meta delivered meanwhile.
    """

    def __init__(self) -> None:
        self._by_page: dict[str, PageBinding] = {}
        self._by_bot: dict[str, PageBinding] = {}
        self._parked: dict[str, PageBinding] = {}
        # Bumped on every change, so callers can cache what they derive (the webhook's secrets).
        self.version = 0

    def claim(self, binding: PageBinding) -> None:
        """Connect the binding's bot to its Page; a bot's previous Page (if another) is released."""
        owner = self._by_page.get(binding.page_id)
        if owner is not None and owner.bot_id != binding.bot_id:
            raise PageAlreadyClaimed(binding.page_id, owner.bot_id, binding.bot_id)
        self.release(binding.bot_id)
        self._drop_parked(binding.page_id)
        self._by_page[binding.page_id] = binding
        self._by_bot[binding.bot_id] = binding
        self.version += 1

    def release(self, bot_id: str) -> PageBinding | None:
        """Disconnect the bot from its Page (and forget any parked binding of it)."""
        for page_id, parked in list(self._parked.items()):
            if parked.bot_id == bot_id:
                del self._parked[page_id]
        binding = self._by_bot.pop(bot_id, None)
        if binding is not None and self._by_page.get(binding.page_id) is binding:
            del self._by_page[binding.page_id]
        self.version += 1
        return binding

    def park(self, bot_id: str) -> PageBinding | None:
        """Disconnect the bot but keep receiving (storing) its Page's events until it mounts again."""
        binding = self.release(bot_id)
        if binding is not None:
            self._parked[binding.page_id] = binding
            self.version += 1
        return binding

    def _drop_parked(self, page_id: str) -> None:
        if self._parked.pop(page_id, None) is not None:
            self.version += 1

    def parked(self, page_id: str) -> PageBinding | None:
        return self._parked.get(page_id)

    def by_page(self, page_id: str) -> PageBinding | None:
        return self._by_page.get(page_id)

    def by_bot(self, bot_id: str) -> PageBinding | None:
        return self._by_bot.get(bot_id)

    def bindings(self, bot_id: str | None = None, *, parked: bool = False) -> list[PageBinding]:
        """Every connected binding, or only the given bot's; with ``parked`` the parked ones too."""
        found = list(self._by_page.values())
        if parked:
            found += list(self._parked.values())
        return [b for b in found if bot_id is None or b.bot_id == bot_id]

    def clear(self) -> None:
        self._by_page.clear()
        self._by_bot.clear()
        self._parked.clear()
        self.version += 1

    def __len__(self) -> int:
        return len(self._by_page)
