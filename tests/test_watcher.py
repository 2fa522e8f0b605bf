"""The data/ watcher: which edits it sees, and that a big data folder does not cost it a core."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.testing import make_bot, run_server, wait_for, write_json
from botpress_py.watcher import FULL_SCAN_EVERY, GLOBAL_KEY, SCAN_SHARE_LIMIT, DataWatcher


async def _noop(*_: object) -> None:
    return None


def watcher(data_dir: Path) -> DataWatcher:
    return DataWatcher(data_dir, 0.5, on_bot_changed=_noop, on_global_changed=_noop)


def touch_in_place(path: Path, text: str) -> None:
    """An editor that writes into the same file (the folder's mtime does not change)."""
    folder_mtime = os.stat(path.parent).st_mtime_ns
    with path.open("r+", encoding="utf-8") as f:
        f.truncate(0)
        f.write(text)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later mtime, whatever the clock
    assert os.stat(path.parent).st_mtime_ns == folder_mtime


def test_every_kind_of_edit_changes_the_snapshot(data_dir: Path) -> None:
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "a"}})
    make_bot(data_dir, "beta")
    write_json(data_dir / "global" / "config" / "echo.json", {"greeting": "g"})
    w = watcher(data_dir)
    first = w.snapshot()
    assert set(first) == {GLOBAL_KEY, "alpha", "beta"}
    assert [name for name, _, _ in first["alpha"]] == ["bot.config.json", "config/echo.json"]
    assert w.snapshot() == first  # nothing changed

    touch_in_place(data_dir / "bots" / "alpha" / "config" / "echo.json", '{"greeting": "edited in place"}')
    edited = w.snapshot()
    assert edited["alpha"] != first["alpha"] and edited["beta"] == first["beta"]

    write_json(data_dir / "bots" / "beta" / "config" / "echo.json", {"greeting": "new file"})
    added = w.snapshot()
    assert "config/echo.json" in [name for name, _, _ in added["beta"]]

    (data_dir / "bots" / "alpha" / "bot.config.json").unlink()
    make_bot(data_dir, "gamma")
    changed = w.snapshot()
    assert "alpha" not in changed and "gamma" in changed

    touch_in_place(data_dir / "global" / "config" / "echo.json", '{"greeting": "g2"}')
    assert w.snapshot()[GLOBAL_KEY] != changed[GLOBAL_KEY]


def test_a_new_file_is_found_by_the_full_scan_even_when_the_folder_time_does_not_move(data_dir: Path) -> None:
    """Filesystems with coarse folder times (or a copy that keeps them): the periodic full scan."""
    make_bot(data_dir, "alpha", module_configs={"echo": {}})
    w = watcher(data_dir)
    before = w.snapshot()
    config = data_dir / "bots" / "alpha" / "config"
    stat = os.stat(config)
    write_json(config / "late.json", {"x": 1})
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the folder looks untouched
    seen = [w.snapshot()["alpha"] for _ in range(FULL_SCAN_EVERY)]
    assert seen[0] == before["alpha"]  # the cached listing does not know the file yet
    assert any("config/late.json" in [name for name, _, _ in s] for s in seen)


async def test_scanning_a_big_data_folder_stretches_the_period(data_dir: Path) -> None:
    for i in range(50):
        make_bot(data_dir, f"bot-{i:03d}")
    w = watcher(data_dir)
    await w.scan_once()
    assert w.last_scan_cpu > 0
    assert w.next_pause() == max(0.5, w.last_scan_cpu * SCAN_SHARE_LIMIT)
    w.last_scan_cpu = 0.2  # what thousands of bots on a slow disk take
    assert w.next_pause() == 0.2 * SCAN_SHARE_LIMIT  # at most 1/SCAN_SHARE_LIMIT of a core
    w.last_scan_cpu = 0.001
    assert w.next_pause() == 0.5  # never faster than watch.interval


@contextlib.contextmanager
def no_free_file_descriptors() -> Iterator[None]:
    """A real "too many open files": opening anything fails with EMFILE (stat still works)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_folders_that_cannot_be_listed_keep_their_last_state(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="botpress_py")
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "a"}})
    make_bot(data_dir, "beta")
    write_json(data_dir / "global" / "config" / "echo.json", {"greeting": "g"})
    w = watcher(data_dir)
    known = w.snapshot()
    with no_free_file_descriptors():
        scans = [w.snapshot(known) for _ in range(FULL_SCAN_EVERY)]  # a full scan lists every folder
    assert all(scan == known for scan in scans)  # neither empty nor changed
    warnings = [r for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING  # throttled
    assert "Too many open files" in warnings[0].getMessage()
    write_json(data_dir / "bots" / "beta" / "config" / "echo.json", {"greeting": "b"})
    assert w.snapshot(known)["beta"] != known["beta"]  # readable again: changes are seen


def test_a_symlink_loop_in_a_bot_folder_keeps_the_bot_unchanged(data_dir: Path) -> None:
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "a"}})
    w = watcher(data_dir)
    known = w.snapshot()
    os.symlink("loop.json", data_dir / "bots" / "alpha" / "config" / "loop.json")  # ELOOP, even for root
    assert [w.snapshot(known) for _ in range(FULL_SCAN_EVERY)] == [known] * FULL_SCAN_EVERY


async def test_server_does_not_remount_a_bot_whose_folder_cannot_be_read(data_dir: Path, env: dict, echo: Any,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="botpress_py")
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "a"}})
    async with run_server(data_dir, env, modules=["echo"], watch={"enabled": True, "interval": "50ms"}) as srv, \
            aiohttp.ClientSession() as s:
        mounts = echo.CALLS.count(("on_bot_mount", "alpha"))
        scans = srv.watcher.scans
        os.symlink("loop.json", data_dir / "bots" / "alpha" / "config" / "loop.json")
        await wait_for(lambda: srv.watcher.scans > scans + FULL_SCAN_EVERY, timeout=10)  # a full scan too
        assert not any("remounting" in r.getMessage() for r in caplog.records)
        assert echo.CALLS.count(("on_bot_mount", "alpha")) == mounts  # not remounted
        async with s.get(f"{srv.url}/status") as r:
            alpha = (await r.json())["bots"]["alpha"]
        assert alpha["state"] == "mounted" and "error" not in alpha  # no false "reload refused"
        assert len([r for r in caplog.records if "cannot read" in r.getMessage()]) == 1


class Recorder:
    """What a watcher asked to remount."""

    def __init__(self) -> None:
        self.bots: list[str] = []
        self.global_changes = 0

    async def bot_changed(self, bot_id: str) -> None:
        self.bots.append(bot_id)

    async def global_changed(self) -> None:
        self.global_changes += 1


@contextlib.asynccontextmanager
async def hinted_watcher(data_dir: Path) -> AsyncIterator[tuple[DataWatcher, Recorder]]:
    """A started watcher on the kernel's change reports (the test is skipped where there are none)."""
    seen = Recorder()
    w = DataWatcher(data_dir, 0.05, seen.bot_changed, seen.global_changed)
    await w.start()
    try:
        if not w.uses_inotify:
            pytest.skip("no inotify here: polling is tested above")
        yield w, seen
    finally:
        await w.stop()


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
async def test_an_in_place_edit_among_many_bots_remounts_that_bot_only(data_dir: Path, inotify: bool) -> None:
    for i in range(300):
        make_bot(data_dir, f"bot-{i:03d}", module_configs={"echo": {"greeting": "a"}})
    seen = Recorder()
    w = DataWatcher(data_dir, 0.05, seen.bot_changed, seen.global_changed, inotify=inotify)
    await w.start()
    try:
        assert w.uses_inotify is (inotify and os.uname().sysname == "Linux")
        touch_in_place(data_dir / "bots" / "bot-123" / "config" / "echo.json", '{"greeting": "edited in place"}')
        await wait_for(lambda: seen.bots, timeout=20)
        assert seen.bots == ["bot-123"]
        # A bot created after the start is watched too: its own in-place edit is seen.
        make_bot(data_dir, "late", module_configs={"echo": {"greeting": "a"}})
        await wait_for(lambda: "late" in seen.bots, timeout=20)
        touch_in_place(data_dir / "bots" / "late" / "config" / "echo.json", '{"greeting": "b"}')
        await wait_for(lambda: seen.bots.count("late") == 2, timeout=20)
        write_json(data_dir / "global" / "config" / "echo.json", {"greeting": "g"})
        await wait_for(lambda: seen.global_changes == 1, timeout=20)
        assert seen.bots.count("bot-123") == 1 and len(seen.bots) == 3
    finally:
        await w.stop()


async def test_with_inotify_a_removed_bot_and_a_replaced_folder_are_seen(data_dir: Path) -> None:
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "a"}})
    make_bot(data_dir, "beta")
    seen = Recorder()
    w = DataWatcher(data_dir, 0.05, seen.bot_changed, seen.global_changed)
    await w.start()
    try:
        (data_dir / "bots" / "beta" / "bot.config.json").unlink()
        await wait_for(lambda: "beta" in seen.bots, timeout=20)
        # The whole folder replaced (deleted, then written again): its new files are watched.
        folder = data_dir / "bots" / "alpha"
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        folder.rmdir()
        await wait_for(lambda: "alpha" in seen.bots, timeout=20)
        make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "back"}})
        await wait_for(lambda: seen.bots.count("alpha") == 2, timeout=20)
        touch_in_place(folder / "config" / "echo.json", '{"greeting": "edited"}')
        await wait_for(lambda: seen.bots.count("alpha") == 3, timeout=20)
    finally:
        await w.stop()


async def test_data_bots_removed_and_created_again_is_watched_anew(data_dir: Path) -> None:
    """The kernel's watches go with a removed folder: the watcher puts them on the new one, so an
    in-place edit there is still reported (the full sweep, every 30 s or more, is not what finds it)."""
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "a"}})
    async with hinted_watcher(data_dir) as (w, seen):
        shutil.rmtree(data_dir / "bots")
        await wait_for(lambda: "alpha" in seen.bots, timeout=20)
        make_bot(data_dir, "beta", module_configs={"echo": {"greeting": "a"}})
        await wait_for(lambda: "beta" in seen.bots, timeout=20)
        touch_in_place(data_dir / "bots" / "beta" / "config" / "echo.json", '{"greeting": "edited"}')
        await wait_for(lambda: seen.bots.count("beta") == 2, timeout=20)
        assert w.uses_inotify


async def test_a_sweep_finds_what_the_kernel_did_not_report(data_dir: Path) -> None:
    """A change inotify cannot see (here: an edit that left no event, as on a network share edited
    elsewhere) is found by the full sweep."""
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "a"}})
    async with hinted_watcher(data_dir) as (w, seen):
        # The kernel stops reporting: as for an edit it cannot see (a network share edited elsewhere).
        hints = w._hints
        assert hints is not None
        hints.close()
        touch_in_place(data_dir / "bots" / "alpha" / "config" / "echo.json", '{"greeting": "unreported"}')
        scans = w.scans
        await wait_for(lambda: w.scans > scans + 3, timeout=20)
        assert seen.bots == []  # no hint: not looked at yet
        w.last_sweep_cpu, w._last_sweep = 0.0, 0.0  # the sweep is due
        await wait_for(lambda: seen.bots == ["alpha"], timeout=20)


async def test_a_server_with_2000_bots_still_notices_an_edit(data_dir: Path, env: dict, echo: Any) -> None:
    for i in range(2000):
        make_bot(data_dir, f"bot-{i:04d}", module_configs={"echo": {"greeting": "a"}})
    async with run_server(data_dir, env, modules=["echo"], watch={"enabled": True, "interval": "50ms"}) as srv, \
            aiohttp.ClientSession() as s:
        async with s.get(f"{srv.url}/status") as r:
            bots = (await r.json())["bots"]
        assert len(bots) == 2000 and all(b["state"] == "mounted" for b in bots.values())
        assert srv.registry is not None
        mounts = echo.CALLS.count(("on_bot_mount", "bot-1999"))
        touch_in_place(data_dir / "bots" / "bot-1999" / "config" / "echo.json", '{"greeting": "edited"}')
        await wait_for(lambda: echo.CALLS.count(("on_bot_mount", "bot-1999")) == mounts + 1, timeout=30)
        async with s.get(f"{srv.url}/api/v1/bots/bot-1999/mod/echo/hello") as r:
            assert (await r.json())["greeting"] == "edited"
        assert echo.CALLS.count(("on_bot_mount", "bot-0000")) == 1  # the others were left alone
