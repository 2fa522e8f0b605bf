"""Log lines that repeat under load (a bad signature per request, an accept error per poll) are
written at most once per interval per key, with the count of the ones held back.

A flood of identical warnings tells the operator nothing new and can fill a disk (1 GB of
"too many open files" in one run): the first line says what happened, the next one, an
interval later, says how often it kept happening.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

# Keys remembered at once (one per distinct kind of repeated line); the oldest is forgotten first.
_MAX_KEYS = 1_000


class LogThrottle:
    """``throttle.log(logger, level, key, msg, *args)``: the first line of ``key`` goes out; repeats
    within ``interval`` seconds are counted, and the next line after the interval says how many."""

    def __init__(self, interval: float = 60.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()  # the SQLite threads log too
        # key -> (time the last line went out, lines held back since)
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def log(self, logger: logging.Logger, level: int, key: Hashable, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Write the line unless ``key`` was written less than ``interval`` ago; True when written."""
        if not logger.isEnabledFor(level):
            return False
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            held = last[1] if last is not None else 0
            self._seen[key] = (now, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > _MAX_KEYS:
                self._seen.popitem(last=False)
        if held:
            msg = f"{msg} (repeated {held} more times in the last {self.interval:g}s)"
        logger.log(level, msg, *args, **kwargs)
        return True
