"""The data/ watcher: which edits it sees, and that a big data folder does not cost it a core."""

from __future__ import annotations

import os
from pathlib import Path

from botpress_py.testing import make_bot, write_json
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
