"""Token buckets per key (a visitor, a client address), in bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# Keys kept at most; the least recently used bucket goes first. A forgotten bucket only means
# a full one next time: an attacker rotating keys is held back by the visitor-creation limit.
MAX_BUCKETS = 50_000


class RateLimiter:
    """``allow(key, burst, per_minute)``: at most ``burst`` at once, refilled at ``per_minute``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def allow(self, key: str, burst: int, per_minute: float) -> float:
        """0 when allowed (and counted); otherwise the seconds to wait before the next try."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * per_minute / 60.0)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) * 60.0 / per_minute if per_minute > 0 else 60.0
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)
