"""Watches ``data/`` and remounts a bot whose files changed (DESIGN.md section 6).

Polling with ``os.scandir`` rather than inotify: it behaves the same on every filesystem
(bind mounts, network shares, editors that replace files), needs no dependency, and a scan
of a thousand bot folders costs a few milliseconds per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]
GLOBAL_KEY = "<global module config>"


def _files_signature(folder: Path, patterns: tuple[str, ...] = (".json", ".py")) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return out
    for entry in entries:
        # Skip editor swap files and our own atomic-write temporaries: only finished files count.
        if entry.name.startswith(".") or not entry.name.endswith(patterns):
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        if entry.is_file():
            out.append((entry.name, st.st_mtime_ns, st.st_size))
    return out


def bot_signature(bot_dir: Path) -> Signature:
    files = _files_signature(bot_dir) + [(f"config/{n}", m, s) for n, m, s in _files_signature(bot_dir / "config")]
    return tuple(sorted(files))


class DataWatcher:
    def __init__(
        self,
        data_dir: Path,
        interval: float,
        on_bot_changed: Callable[[str], Awaitable[object]],
        on_global_changed: Callable[[], Awaitable[object]],
    ) -> None:
        self.bots_dir = data_dir / "bots"
        self.global_config_dir = data_dir / "global" / "config"
        self.interval = interval
        self._on_bot_changed = on_bot_changed
        self._on_global_changed = on_global_changed
        self._seen: dict[str, Signature] = {}
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> dict[str, Signature]:
        sigs = {GLOBAL_KEY: tuple(sorted(_files_signature(self.global_config_dir, (".json",))))}
        try:
            folders = [e for e in os.scandir(self.bots_dir) if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            folders = []
        for folder in folders:
            if os.path.exists(os.path.join(folder.path, "bot.config.json")):
                sigs[folder.name] = bot_signature(Path(folder.path))
        return sigs

    def mark_seen(self, bot_id: str) -> None:
        """Record a bot's files as handled (after the server itself wrote one of them)."""
        self._seen[bot_id] = bot_signature(self.bots_dir / bot_id)

    def start(self) -> None:
        self._seen = self.snapshot()
        self._task = asyncio.create_task(self._run(), name="data-watcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # the polling period
            try:
                await self.scan_once()
            except Exception:
                log.exception("watching %s failed; will retry", self.bots_dir)

    async def scan_once(self) -> None:
        current = await asyncio.get_running_loop().run_in_executor(None, self.snapshot)
        changed = [k for k in set(current) | set(self._seen) if current.get(k) != self._seen.get(k)]
        self._seen = current
        if GLOBAL_KEY in changed:
            log.info("global module config changed: remounting every bot")
            await self._on_global_changed()
            return
        # Each bot remounts on its own task: a slow mount of one never delays another.
        await asyncio.gather(*(self._changed(bot_id) for bot_id in sorted(changed)))

    async def _changed(self, bot_id: str) -> None:
        log.info("files of bot %s changed: remounting", bot_id)
        try:
            await self._on_bot_changed(bot_id)
        except Exception:
            log.exception("remount of bot %s after a file change failed", bot_id)
