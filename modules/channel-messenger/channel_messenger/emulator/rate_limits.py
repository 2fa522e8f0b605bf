"""The emulator's Send API rate limit per Page: Meta answers 613 past its calls per second.

Off unless asked (``GraphEmulator(send_rate_limit=(calls, seconds))``): a test of pacing turns it on
to see that the channel never trips it, and a sliding window counts each Page's Send API calls.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class SendRateLimit:
    def __init__(self, limit: tuple[int, float] | None, error: Callable[..., Exception]) -> None:
        self.limit = limit
        self._error = error
        self._calls: dict[str, deque[float]] = {}
        self.refused = 0  # how many sends it refused

    def check(self, page_id: str) -> None:
        if not self.limit:
            return
        calls, seconds = self.limit
        now = time.monotonic()
        window = self._calls.setdefault(page_id, deque())
        while window and window[0] <= now - seconds:
            window.popleft()
        if len(window) >= calls:
            self.refused += 1
            raise self._error(400, 613, "Calls to this api have exceeded the rate limit.")
        window.append(now)
