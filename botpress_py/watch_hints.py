"""Which paths under the watched folders changed, as the kernel reports it (inotify on Linux).

Read through watchfiles, a well-kept binding of Rust's notify crate (the one uvicorn's reloader
uses), rather than our own system calls: it follows folders created after the start by itself,
buffers what happens between its creation and the first read, and runs on its own thread, so the
event loop only hears of a batch of changed paths (at most one every ``DEBOUNCE_MS``).

The watcher (watcher.py) takes these as hints only: a path reported makes it scan that bot (or
the global config) at its next tick, and its slow full sweep still runs for what the kernel
cannot report (a network share edited from another machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from watchfiles._rust_notify import RustNotify  # documented as watchfiles' Rust backend

log = logging.getLogger(__name__)

# Changes within this many ms are handed over together (a bot folder copied in: one hand-off).
DEBOUNCE_MS = 100
# How often the notify thread looks for the end of a burst and for a stop (no Python work when idle).
STEP_MS = 50
# A watch() call returns after this long without a change: the thread's chance to see it was closed.
IDLE_RETURN_MS = 1000


class HintsUnavailable(Exception):
    """The kernel cannot report changes here (a folder missing, no watch left, no inotify)."""


class KernelHints:
    """Reports batches of changed paths to the event loop: anywhere below ``recursive`` folders, and
    the entries right inside ``shallow`` ones (data/ itself: a data/global created after the start,
    without hearing of every write of the database in data/storage).

    ``start`` puts the watches in place (call it before taking the snapshot the hints are compared
    with: a change made meanwhile is buffered, not lost); ``run`` then hands each batch to
    ``on_paths`` on the loop's thread, and a failure of a notify thread to ``on_failure``.
    """

    def __init__(self, recursive: list[str], shallow: list[str]) -> None:
        self.recursive = recursive
        self.shallow = shallow
        self._notifiers: list[RustNotify] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        try:
            for folders, recursive in ((self.recursive, True), (self.shallow, False)):
                if folders:
                    self._notifiers.append(RustNotify(folders, False, False, 300, recursive, True))
        except FileNotFoundError as exc:
            self.close()
            raise HintsUnavailable(f"{exc}") from None
        except OSError as exc:  # e.g. fs.inotify.max_user_watches reached, or no inotify instance left
            self.close()
            raise HintsUnavailable(f"the kernel refuses more watches ({exc})") from None
        except RuntimeError as exc:  # notify's own errors come as RuntimeError
            self.close()
            raise HintsUnavailable(str(exc)) from None

    def run(self, loop: asyncio.AbstractEventLoop, on_paths: Callable[[set[str]], None],
            on_failure: Callable[[str], None]) -> None:
        if not self._notifiers:
            raise HintsUnavailable("start() was not called")
        for notify in self._notifiers:
            thread = threading.Thread(target=self._read, args=(notify, loop, on_paths, on_failure),
                                      name="data-watcher-hints", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read(self, notify: RustNotify, loop: asyncio.AbstractEventLoop, on_paths: Callable[[set[str]], None],
              on_failure: Callable[[str], None]) -> None:
        stop = self._stop
        try:
            while not stop.is_set():
                changes = notify.watch(DEBOUNCE_MS, STEP_MS, IDLE_RETURN_MS, stop)
                if isinstance(changes, set) and changes and not stop.is_set():
                    paths = {path for _, path in changes}
                    with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody to tell
                        loop.call_soon_threadsafe(on_paths, paths)
        except Exception as exc:  # the watches are gone: the watcher polls instead
            if not stop.is_set():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(on_failure, f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                notify.close()

    def close(self) -> None:
        """Stop reporting. Each thread notices within STEP_MS and releases its watches itself."""
        self._stop.set()
        if not self._threads:
            for notify in self._notifiers:
                with contextlib.suppress(Exception):
                    notify.close()
        self._notifiers = []
