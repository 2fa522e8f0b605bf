"""Watches ``data/`` and remounts a bot whose files changed (docs/configuration.md).

Two ways of finding changes, both comparing the same signatures (names, mtimes, sizes):

- **Polling** (everywhere): a scan stats each known file and each folder; a folder is listed
  again only when its own mtime changed (a file was added, removed or replaced by rename), and
  every ``FULL_SCAN_EVERY`` scans regardless, for filesystems whose folder times are coarse.
  It costs about 4 ms of CPU per hundred bots (10,000 bots: 0.3-0.4 s per scan), so the period
  stretches by itself to keep watching under 1/SCAN_SHARE_LIMIT of a core.
- **Kernel hints** (inotify on Linux, read through watchfiles: watch_hints.py): the kernel names
  the paths where something changed, and a tick scans only those bots, whatever the number of
  bots: an edit is seen within ``watch.interval`` and an idle server spends nothing. The kernel
  does not see every change (a network share edited from another machine, events lost in an
  overflow), so the full polling scan still runs, as a sweep at least every ``SWEEP_MIN_SECONDS`` and stretched to
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

from .logthrottle import LogThrottle
from .watch_hints import HintsUnavailable, KernelHints

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
        # Kernel hints (None: polling only). What the kernel named since the last tick:
        self._hints: KernelHints | None = None
        self._want_inotify = inotify  # False: polling only (as where the kernel has no inotify)
        self._dirty: set[str] = set()  # bot folders
        self._global_dirty = False
        self._all_dirty = False  # events were lost, or data/bots itself moved: look at everything
        self._rewatch = False  # data/bots or data/global appeared or went: the kernel's watches are put anew
        self._last_sweep = 0.0  # time.monotonic() of the last full scan
        self.last_sweep_cpu = 0.0

    @property
    def uses_inotify(self) -> bool:
        return self._hints is not None

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
        """Watch from now on: the first snapshot (and the kernel's watches, put in place before it so
        that nothing falls between) is taken off the event loop, and awaited: an edit made once the
        server serves is compared with it."""
        loop = asyncio.get_running_loop()
        self._seen = await loop.run_in_executor(None, self._first_snapshot)
        if self._hints is not None:
            self._hints.run(loop, self._note_paths, self._hints_failed)
        self._task = asyncio.create_task(self._run(), name="data-watcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._hints is not None:
            self._hints.close()
            self._hints = None

    # -- kernel hints ------------------------------------------------------------------------------
    def _first_snapshot(self) -> dict[str, Signature]:
        if self._want_inotify:
            self._start_hints()
        started = time.thread_time()
        snapshot = self.snapshot()
        self.last_sweep_cpu = time.thread_time() - started
        self._last_sweep = time.monotonic()
        return snapshot

    def _roots(self) -> tuple[str, str]:
        """data/bots and data/global (not data/global/config: it may not exist yet, and its creation counts)."""
        return str(self.bots_dir), str(self.global_config_dir.parent)

    def _start_hints(self) -> None:
        """The kernel's watches on the folders that exist now (off the event loop: 2 per bot)."""
        hints = KernelHints([root for root in self._roots() if os.path.isdir(root)], [str(self.bots_dir.parent)])
        try:
            hints.start()
            self._hints = hints
        except HintsUnavailable as exc:
            self._hints = None
            log.warning("file watcher: the kernel cannot report changes here (%s); polling data/ instead, "
                        "which costs CPU in proportion to the number of bots", exc)

    def _hints_failed(self, reason: str) -> None:
        if self._hints is None:
            return
        log.warning("file watcher: reading the kernel's change reports failed (%s); polling data/ instead", reason)
        self._hints.close()
        self._hints = None
        self._all_dirty = True

    def _note_paths(self, paths: set[str]) -> None:
        """Changed paths the kernel reported: which bots (or the global config) to look at next tick."""
        hints = self._hints
        if hints is None:
            return
        bots_dir, global_dir = str(self.bots_dir), str(self.global_config_dir)
        roots = self._roots()
        for path in paths:
            if path in roots:
                # data/bots or data/global created, removed or moved: watch what exists now, then look at all.
                if (path in hints.recursive) != os.path.isdir(path):
                    self._rewatch = True
                self._all_dirty = True
            elif path.startswith(bots_dir + os.sep):
                name = path[len(bots_dir) + 1:].split(os.sep, 1)[0]
                if name and not name.startswith("."):
                    self._dirty.add(name)
            elif path == global_dir or path.startswith(global_dir + os.sep):
                self._global_dirty = True
            # else: data/'s other entries (storage, secrets), data/global's own files: not followed here

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
        if self._rewatch and self._hints is not None:
            # Before the full scan below, so that nothing changed in between goes unreported.
            self._rewatch = False
            self._hints.close()
            await loop.run_in_executor(None, self._start_hints)
            if self._hints is not None:
                self._hints.run(loop, self._note_paths, self._hints_failed)
        if self._hints is None or self._all_dirty or self._sweep_due():
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
                # A sweep beside the kernel's hints is rare and there for what the kernel missed: it lists every folder.
                current = self.snapshot(full=self._hints is not None)
            else:
                self._scans += 1
                current = self._hinted_snapshot(bots, global_changed)
            seen = self._seen
            keys = (set(current) | set(seen)) if bots is None else (bots | {GLOBAL_KEY})
            return current, sorted(k for k in keys if current.get(k) != seen.get(k))
        finally:
            spent = time.thread_time() - started
            if bots is None and self._hints is not None:
                self.last_sweep_cpu, self._last_sweep, self.last_scan_cpu = spent, time.monotonic(), 0.0
            else:
                self.last_scan_cpu = spent

    async def _changed(self, bot_id: str) -> None:
        log.info("files of bot %s changed: remounting", bot_id)
        try:
            await self._on_bot_changed(bot_id)
        except Exception:
            log.exception("remount of bot %s after a file change failed", bot_id)
