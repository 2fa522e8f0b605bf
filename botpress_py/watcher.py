"""Watches ``data/`` and remounts a bot whose files changed (docs/configuration.md).

Two ways of finding changes, both comparing the same signatures (names, mtimes, sizes):

- **Polling** (everywhere): a scan stats each known file and each folder; a folder is listed
  again only when its own mtime changed (a file was added, removed or replaced by rename), and
  every ``FULL_SCAN_EVERY`` scans regardless, for filesystems whose folder times are coarse.
  It costs about 4 ms of CPU per hundred bots (10,000 bots: 0.3-0.4 s per scan), so the period
  stretches by itself to keep watching under 1/SCAN_SHARE_LIMIT of a core.
- **inotify hints** (Linux, inotify.py): the kernel names the folders where something changed,
  and a tick scans only those bots, whatever the number of bots: an edit is seen within
  ``watch.interval`` and an idle server spends nothing. The kernel does not see every change
  (a network share edited from another machine, events lost in an overflow), so the full
  polling scan still runs, as a sweep at least every ``SWEEP_MIN_SECONDS`` and stretched to
  stay under 1/SWEEP_SHARE_LIMIT of a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .inotify import IN_CREATE, IN_DELETE_SELF, IN_MOVE_SELF, IN_MOVED_TO, FolderEvents, InotifyUnavailable, WatchLimit
from .logthrottle import LogThrottle

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]
GLOBAL_KEY = "<global module config>"
FULL_SCAN_EVERY = 20
SCAN_SHARE_LIMIT = 25  # a polling scan every >= 25x its own CPU time: at most 4% of a core
SWEEP_SHARE_LIMIT = 50  # with inotify hints: a full sweep every >= 50x its CPU time (2% of a core)
SWEEP_MIN_SECONDS = 30.0  # with inotify hints: what the kernel cannot report is still seen within this
_BOT_FILES = (".json", ".py")


class Unreadable(Exception):
    """A folder that cannot be listed or a file that cannot be stat'ed for another reason than
    being gone (too many open files, no permission, an I/O error, a symlink loop). Unlike a
    missing file it says nothing about what changed: the scan keeps what it knew of that bot."""

    def __init__(self, path: str, error: OSError) -> None:
        super().__init__(f"{path}: {error.strerror or error}")
        self.path = path
        self.error = error


def _gone(error: OSError) -> bool:
    return isinstance(error, (FileNotFoundError, NotADirectoryError))


def _listing(folder: str, patterns: tuple[str, ...]) -> list[str]:
    """File names in ``folder`` that end with ``patterns``, sorted; [] when it does not exist."""
    try:
        with os.scandir(folder) as entries:
            # Skip editor swap files and our own atomic-write temporaries: only finished files count.
            return sorted(e.name for e in entries
                          if not e.name.startswith(".") and e.name.endswith(patterns) and e.is_file())
    except OSError as exc:
        if _gone(exc):
            return []
        raise Unreadable(folder, exc) from None


def _mtime(path: str) -> int | None:
    """The modification time of ``path``; None when it does not exist."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError as exc:
        if _gone(exc):
            return None
        raise Unreadable(path, exc) from None


class _FolderCache:
    """The file names of folders, re-listed only when a folder's mtime changes (or on a full scan)."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int | None, list[str]]] = {}

    def names(self, folder: str, patterns: tuple[str, ...], full: bool) -> list[str]:
        mtime = _mtime(folder)
        known = self._known.get(folder)
        if known is not None and known[0] == mtime and not full:
            return known[1]
        names = _listing(folder, patterns) if mtime is not None else []
        self._known[folder] = (mtime, names)
        return names

    def forget(self, keep: set[str]) -> None:
        for folder in [f for f in self._known if f not in keep]:
            del self._known[folder]


def _signature(folder: str, names: list[str], prefix: str = "") -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            st = os.stat(path)
        except OSError as exc:
            if _gone(exc):
                continue  # removed since the listing: the folder's mtime shows it next scan
            raise Unreadable(path, exc) from None
        out.append((prefix + name, st.st_mtime_ns, st.st_size))
    return out


def bot_signature(bot_dir: Path, cache: _FolderCache | None = None, full: bool = True) -> Signature:
    """The bot's watched files with their mtimes and sizes; raises :class:`Unreadable`."""
    cache = cache or _FolderCache()
    folder, config = str(bot_dir), os.path.join(str(bot_dir), "config")
    files = _signature(folder, cache.names(folder, _BOT_FILES, full))
    files += _signature(config, cache.names(config, _BOT_FILES, full), "config/")
    return tuple(sorted(files))


class DataWatcher:
    def __init__(
        self,
        data_dir: Path,
        interval: float,
        on_bot_changed: Callable[[str], Awaitable[object]],
        on_global_changed: Callable[[], Awaitable[object]],
        throttle: LogThrottle | None = None,
        *,
        inotify: bool = True,
    ) -> None:
        self.bots_dir = data_dir / "bots"
        self.global_config_dir = data_dir / "global" / "config"
        self.interval = interval
        self._on_bot_changed = on_bot_changed
        self._on_global_changed = on_global_changed
        self._seen: dict[str, Signature] = {}
        self._throttle = throttle or LogThrottle()
        self._task: asyncio.Task[None] | None = None
        self._folders = _FolderCache()
        self._bots_mtime: int | None = None
        self._bot_folders: list[str] | None = None
        self._scans = 0
        self.last_scan_cpu = 0.0  # seconds of CPU the last scan took
        # inotify hints (None: polling only). What the kernel named since the last tick:
        self._events: FolderEvents | None = None
        self._want_inotify = inotify  # False: polling only (as where the kernel has no inotify)
        self._dirty: set[str] = set()  # bot folders
        self._global_dirty = False
        self._all_dirty = False  # events were lost, or data/bots itself moved: look at everything
        self._last_sweep = 0.0  # time.monotonic() of the last full scan
        self.last_sweep_cpu = 0.0

    @property
    def uses_inotify(self) -> bool:
        return self._events is not None

    def snapshot(self, known: dict[str, Signature] | None = None, *, full: bool = False) -> dict[str, Signature]:
        """Every bot's signature and the global config's. What cannot be read this time keeps its
        signature in ``known`` (by default the last one acted on; one throttled warning), so it never
        looks removed or changed. ``full``: list every folder again (else every FULL_SCAN_EVERY scans)."""
        self._scans += 1
        full = full or self._scans % FULL_SCAN_EVERY == 0
        cache, previous = self._folders, self._seen if known is None else known
        sigs: dict[str, Signature] = {}
        global_dir = str(self.global_config_dir)
        try:
            sigs[GLOBAL_KEY] = tuple(_signature(global_dir, cache.names(global_dir, (".json",), full)))
        except Unreadable as exc:
            self._keep(sigs, previous, GLOBAL_KEY, exc)
        visited = {global_dir}
        for name in self._list_bot_folders(full, previous):
            folder = os.path.join(str(self.bots_dir), name)
            visited.update((folder, os.path.join(folder, "config")))
            try:
                signature = bot_signature(Path(folder), cache, full)
            except Unreadable as exc:
                self._keep(sigs, previous, name, exc)
                continue
            if any(entry[0] == "bot.config.json" for entry in signature):
                sigs[name] = signature
        cache.forget(visited)
        return sigs

    def _list_bot_folders(self, full: bool, previous: dict[str, Signature]) -> list[str]:
        bots_dir = str(self.bots_dir)
        try:
            bots_mtime = _mtime(bots_dir)
            if full or bots_mtime != self._bots_mtime or self._bot_folders is None:
                try:
                    with os.scandir(bots_dir) as entries:
                        folders = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
                except OSError as exc:
                    if not _gone(exc):
                        raise Unreadable(bots_dir, exc) from None
                    folders = []
                self._bot_folders, self._bots_mtime = folders, bots_mtime
        except Unreadable as exc:
            self._warn_unreadable(exc)
            if self._bot_folders is None:
                return sorted(k for k in previous if k != GLOBAL_KEY)
        return self._bot_folders or []

    def _keep(self, sigs: dict[str, Signature], previous: dict[str, Signature], key: str, exc: Unreadable) -> None:
        self._warn_unreadable(exc)
        if key in previous:
            sigs[key] = previous[key]

    def _warn_unreadable(self, exc: Unreadable) -> None:
        self._throttle.log(log, logging.WARNING, ("unreadable", exc.error.errno),
                           "cannot read %s (%s): ignored for this scan, its last known state is kept",
                           exc.path, exc.error.strerror or exc.error)

    @property
    def scans(self) -> int:
        """Scans made so far."""
        return self._scans

    def mark_seen(self, bot_id: str) -> None:
        """Record a bot's files as handled (after the server itself wrote one of them)."""
        try:
            self._seen[bot_id] = bot_signature(self.bots_dir / bot_id, self._folders, full=True)
        except Unreadable as exc:
            self._warn_unreadable(exc)  # the next scan that can read them compares them

    async def start(self) -> None:
        """Watch from now on: the first snapshot (and the inotify watches, put in place before it so
        that nothing falls between) is taken off the event loop, and awaited: an edit made once the
        server serves is compared with it."""
        loop = asyncio.get_running_loop()
        self._seen = await loop.run_in_executor(None, self._first_snapshot)
        if self._events is not None:
            loop.add_reader(self._events.fd, self._read_events)
        self._task = asyncio.create_task(self._run(), name="data-watcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._events is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._events.fd)
            self._events.close()
            self._events = None

    # -- inotify hints -----------------------------------------------------------------------------
    def _first_snapshot(self) -> dict[str, Signature]:
        try:
            self._events = FolderEvents() if self._want_inotify else None
        except InotifyUnavailable as exc:
            log.info("file watcher: polling data/ (%s)", exc)
        if self._events is not None:
            try:
                for folder in (str(self.bots_dir), str(self.global_config_dir), str(self.global_config_dir.parent),
                               str(self.bots_dir.parent)):
                    self._events.add(folder)
                with contextlib.suppress(OSError):
                    with os.scandir(self.bots_dir) as entries:
                        for entry in entries:
                            if entry.is_dir() and not entry.name.startswith("."):
                                self._watch_bot(entry.name)
            except WatchLimit as exc:
                log.warning("file watcher: %s; polling data/ instead, which costs CPU in proportion to the "
                            "number of bots", exc)
                self._events.close()
                self._events = None
        started = time.thread_time()
        snapshot = self.snapshot()
        self.last_sweep_cpu = time.thread_time() - started
        self._last_sweep = time.monotonic()
        return snapshot

    def _watch_bot(self, name: str) -> None:
        assert self._events is not None
        folder = os.path.join(str(self.bots_dir), name)
        if self._events.add(folder):
            self._events.add(os.path.join(folder, "config"))

    def _read_events(self) -> None:
        events = self._events
        if events is None:
            return
        try:
            events.read(self._note)
        except WatchLimit as exc:
            log.warning("file watcher: %s; polling data/ instead", exc)
            self._fall_back_to_polling()
        except OSError as exc:
            log.warning("file watcher: reading inotify events failed (%s); polling data/ instead", exc)
            self._fall_back_to_polling()

    def _fall_back_to_polling(self) -> None:
        if self._events is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._events.fd)
            self._events.close()
            self._events = None
        self._all_dirty = True

    def _note(self, folder: str | None, name: str, mask: int) -> None:
        """One inotify event: which bot (or the global config) to look at next tick."""
        bots_dir = str(self.bots_dir)
        if folder is None:  # the kernel's queue overflowed: events were lost
            self._all_dirty = True
        elif folder == bots_dir:
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                self._all_dirty = True
            elif name and not name.startswith("."):
                self._dirty.add(name)
                if mask & (IN_CREATE | IN_MOVED_TO) and self._events is not None:
                    self._watch_bot(name)  # a new bot folder: watched before it is scanned
        elif folder.startswith(bots_dir + os.sep):
            bot, _, below = folder[len(bots_dir) + 1:].partition(os.sep)
            self._dirty.add(bot)
            if not below and name == "config" and mask & (IN_CREATE | IN_MOVED_TO) and self._events is not None:
                self._events.add(os.path.join(folder, "config"))
        else:  # data/global/config, or a folder above it or above data/bots (created, moved)
            self._global_dirty = True
            if self._events is not None:
                for above in (str(self.global_config_dir), bots_dir):
                    if not self._events.watching(above) and self._events.add(above):
                        self._all_dirty = True  # appeared since: whatever it holds is new

    def _sweep_due(self) -> bool:
        """With inotify hints: whether the full scan (what the kernel cannot report) is due."""
        period = max(SWEEP_MIN_SECONDS, self.last_sweep_cpu * SWEEP_SHARE_LIMIT)
        return time.monotonic() - self._last_sweep >= period

    def _hinted_snapshot(self, bots: set[str], global_changed: bool) -> dict[str, Signature]:
        """The last signatures, with those of ``bots`` (and the global config) taken again."""
        sigs = dict(self._seen)
        cache = self._folders
        if global_changed:
            global_dir = str(self.global_config_dir)
            try:
                sigs[GLOBAL_KEY] = tuple(_signature(global_dir, cache.names(global_dir, (".json",), True)))
            except Unreadable as exc:
                self._keep(sigs, self._seen, GLOBAL_KEY, exc)
        for name in bots:
            folder = os.path.join(str(self.bots_dir), name)
            try:
                signature = bot_signature(Path(folder), cache, full=True)
            except Unreadable as exc:
                self._keep(sigs, self._seen, name, exc)
                continue
            if any(entry[0] == "bot.config.json" for entry in signature):
                sigs[name] = signature
            else:
                sigs.pop(name, None)
        return sigs

    async def _run(self) -> None:
        pause = self.interval
        while True:
            await asyncio.sleep(pause)  # the polling period
            try:
                await self.scan_once()
            except Exception:
                log.exception("watching %s failed; will retry", self.bots_dir)
            pause = self.next_pause()

    def next_pause(self) -> float:
        """``interval``, stretched when a scan is costly (thousands of bots): watching never takes
        more than 1/SCAN_SHARE_LIMIT of a core."""
        return max(self.interval, self.last_scan_cpu * SCAN_SHARE_LIMIT)

    async def scan_once(self) -> None:
        loop = asyncio.get_running_loop()
        if self._events is None or self._all_dirty or self._sweep_due():
            self._all_dirty = False
            self._dirty.clear()
            self._global_dirty = False
            current, changed = await loop.run_in_executor(None, self._timed_scan, None, False)
        elif self._dirty or self._global_dirty:
            bots, global_changed = self._dirty, self._global_dirty
            self._dirty, self._global_dirty = set(), False
            current, changed = await loop.run_in_executor(None, self._timed_scan, bots, global_changed)
        else:
            self._scans += 1  # nothing reported: nothing to look at
            self.last_scan_cpu = 0.0
            return
        self._seen = current
        if GLOBAL_KEY in changed:
            log.info("global module config changed: remounting every bot")
            await self._on_global_changed()
            return
        # Each bot remounts on its own task: a slow mount of one never delays another.
        await asyncio.gather(*(self._changed(bot_id) for bot_id in changed))

    def _timed_scan(self, bots: set[str] | None, global_changed: bool) -> tuple[dict[str, Signature], list[str]]:
        """A scan and its comparison with the last one, off the event loop and timed together: what
        the period stretches by (next_pause) is all the CPU watching costs. ``bots`` None: a full scan."""
        started = time.thread_time()
        try:
            if bots is None:
                # A sweep beside inotify is rare and there for what the kernel missed: it lists every folder.
                current = self.snapshot(full=self._events is not None)
            else:
                self._scans += 1
                current = self._hinted_snapshot(bots, global_changed)
            seen = self._seen
            keys = (set(current) | set(seen)) if bots is None else (bots | {GLOBAL_KEY})
            return current, sorted(k for k in keys if current.get(k) != seen.get(k))
        finally:
            spent = time.thread_time() - started
            if bots is None and self._events is not None:
                self.last_sweep_cpu, self._last_sweep, self.last_scan_cpu = spent, time.monotonic(), 0.0
            else:
                self.last_scan_cpu = spent

    async def _changed(self, bot_id: str) -> None:
        log.info("files of bot %s changed: remounting", bot_id)
        try:
            await self._on_bot_changed(bot_id)
        except Exception:
            log.exception("remount of bot %s after a file change failed", bot_id)
