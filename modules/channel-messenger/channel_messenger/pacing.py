"""Rate-aware sending: each Page's Send API calls paced under Meta's limits, replies to users first.

Meta allows 300 Send API calls per second per Page for text, links, reactions and stickers, and 10
per second for audio or video (https://developers.facebook.com/documentation/business-messaging/
messenger-platform/overview/rate-limiting). Each Page gets a token bucket refilled at its budget
(``sendRateLimit`` calls/s, a parameter so that a cluster can divide a Page's budget among its nodes)
holding at most a tenth of a second of calls, so no one-second window grants more than 1.1 times
the budget (the default 250 leaves room for that and for calls arriving bunched at Meta). An audio
or video message costs ``budget / MEDIA_PER_SECOND`` tokens.

Calls that wait are served by priority, then in arrival order: ``REPLY`` (an answer to what a user
just wrote), ``NOTIFY`` (proactive messages), ``BULK`` (broadcasts flagged ``bulk``), so a broadcast
queued by the thousand never delays a conversation. A rate-limit error (codes 4, 32, 613, 80006 or
HTTP 429) pauses the Page's queue for Meta's hint (``Retry-After`` or the Business Use Case header's
``estimated_time_to_regain_access``), else ``DEFAULT_PAUSE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

from botpress_py.sdk import DeliveryError

REPLY, NOTIFY, BULK = 0, 1, 2
PRIORITY_NAMES = {REPLY: "reply", NOTIFY: "notify", BULK: "bulk"}
DEFAULT_RATE = 250.0  # calls/s per Page: under Meta's 300 with room for the 1.1 burst and clock skew
MEDIA_PER_SECOND = 10.0
DEFAULT_PAUSE_SECONDS = 30.0
# A call that would wait longer than this for a paused Page is handed back to the core's retry schedule
# instead: a send in hand holds its bot (a reload waits for it), a pending one in the outbox does not.
MAX_WAIT_IN_CALL = 10.0


@dataclass
class _Page:
    rate: float
    tokens: float
    refilled_at: float
    paused_until: float = 0.0
    waiting: list[tuple[int, int, float, asyncio.Future[None]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate / 10)


class SendPacer:
    """The Send API queues of a server's Pages."""

    def __init__(self) -> None:
        self._pages: dict[str, _Page] = {}
        self._order = itertools.count()
        self.pauses = 0  # for the metrics

    def _page(self, page_id: str, rate: float) -> _Page:
        loop = asyncio.get_running_loop()
        page = self._pages.get(page_id)
        if page is None:
            page = self._pages[page_id] = _Page(rate, max(1.0, rate / 10), loop.time())
        elif page.rate != rate:
            page.rate = rate  # a reload changed sendRateLimit
        return page

    async def acquire(self, page_id: str, priority: int, *, rate: float = DEFAULT_RATE, media: bool = False) -> None:
        """Wait for this Page's turn to make one Send API call (raises DeliveryError when the Page is paused long)."""
        page = self._page(page_id, rate)
        loop = asyncio.get_running_loop()
        paused_for = page.paused_until - loop.time()
        if paused_for > MAX_WAIT_IN_CALL:
            raise DeliveryError(f"page {page_id} is paused for {paused_for:.0f} s after Meta's rate-limit error",
                                retry_after=paused_for)
        cost = max(1.0, rate / MEDIA_PER_SECOND) if media else 1.0
        turn: asyncio.Future[None] = loop.create_future()
        heapq.heappush(page.waiting, (priority, next(self._order), cost, turn))
        if page.task is None or page.task.done():
            page.task = asyncio.create_task(self._serve(page), name=f"messenger-pacer:{page_id}")
        try:
            await turn
        except asyncio.CancelledError:
            turn.cancel()
            raise

    def pause(self, page_id: str, seconds: float) -> None:
        """Meta said the Page sends too much: nothing is sent for it for ``seconds``."""
        # A Page this node has not sent for yet is paused too (another node of a cluster was throttled).
        page = self._pages.get(page_id) or self._page(page_id, DEFAULT_RATE)
        until = asyncio.get_running_loop().time() + seconds
        if until > page.paused_until:
            page.paused_until = until
            self.pauses += 1

    def depth(self) -> dict[tuple[str, str], int]:
        """Calls waiting now, per (Page, priority name)."""
        found: dict[tuple[str, str], int] = {}
        for page_id, page in self._pages.items():
            for priority, _, _, turn in page.waiting:
                if not turn.done():
                    key = (page_id, PRIORITY_NAMES[priority])
                    found[key] = found.get(key, 0) + 1
        return found

    async def _serve(self, page: _Page) -> None:
        """Hand out turns while calls wait: the pause, then the bucket, then the best waiter."""
        loop = asyncio.get_running_loop()
        while page.waiting:
            now = loop.time()
            if page.paused_until - now > MAX_WAIT_IN_CALL:
                self._hand_back(page, page.paused_until - now)  # a long pause: waiting is the outbox's job
                break
            if page.paused_until > now:
                await asyncio.sleep(page.paused_until - now)  # the pause itself: nothing else to wait for
                continue
            page.tokens = min(page.capacity, page.tokens + (now - page.refilled_at) * page.rate)
            page.refilled_at = now
            while page.waiting and page.waiting[0][3].done():
                heapq.heappop(page.waiting)  # its caller gave up (cancelled)
            if not page.waiting:
                break
            cost = min(page.waiting[0][2], page.capacity)
            if page.tokens < cost:
                await asyncio.sleep((cost - page.tokens) / page.rate)  # the budget's pace
                continue
            _, _, _, turn = heapq.heappop(page.waiting)
            page.tokens -= cost
            turn.set_result(None)

    @staticmethod
    def _hand_back(page: _Page, seconds: float) -> None:
        """Every waiting call fails as transient with the pause's end as its retry time."""
        while page.waiting:
            _, _, _, turn = heapq.heappop(page.waiting)
            if not turn.done():
                turn.set_exception(DeliveryError(f"the Page is paused for {seconds:.0f} s after Meta's rate-limit "
                                                 "error", retry_after=seconds))

    async def close(self) -> None:
        for page in self._pages.values():
            if page.task is not None:
                page.task.cancel()
            for _, _, _, turn in page.waiting:
                turn.cancel()
        self._pages.clear()
