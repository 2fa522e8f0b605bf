"""Key-value reads asked together share one hand-off to SQLite's reader thread (kv_reads.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from botpress_py.storage import SQLiteStorage
from botpress_py.storage.kv_reads import Key, KvReadBatcher


@pytest.fixture
async def storage(tmp_path: Path) -> Any:
    store = SQLiteStorage(tmp_path / "core.sqlite")
    await store.open()
    yield store
    await store.close()


async def test_concurrent_reads_are_answered_right_and_share_hand_offs(storage: SQLiteStorage) -> None:
    await storage.kv_set_many("ns", {f"k{i}": {"value": i} for i in range(0, 300, 2)})
    hand_offs: list[int] = []
    read_many = storage._kv_reads._read_many

    async def counting(keys: list[Key]) -> list[Any]:
        hand_offs.append(len(keys))
        return await read_many(keys)

    storage._kv_reads = KvReadBatcher(counting)
    results = await asyncio.gather(*(storage.kv_get("ns", f"k{i}") for i in range(300)),
                                   storage.kv_get("ns", "k2"))  # the same key twice in a batch
    assert results[:300] == [{"value": i} if i % 2 == 0 else None for i in range(300)]
    assert results[300] == {"value": 2}
    assert sum(hand_offs) == 300 and len(hand_offs) < 10  # not one hand-off per read
    assert await storage.kv_get("ns", "k4") == {"value": 4}  # a lone read still goes at once
    await storage.kv_set("ns", "k4", "new")
    assert await storage.kv_get("ns", "k4") == "new"  # a read after a write sees it


async def test_a_read_that_fails_fails_only_its_caller(storage: SQLiteStorage) -> None:
    await storage.kv_set_many("ns", {"good": 1, "bad": 2})
    # A row no JSON decoder reads (written around the storage's own encoder).
    await storage._write(lambda db: db.execute("UPDATE kv SET value = '{broken' WHERE key = 'bad'"))
    results = await asyncio.gather(storage.kv_get("ns", "good"), storage.kv_get("ns", "bad"),
                                   storage.kv_get("ns", "missing"), return_exceptions=True)
    assert results[0] == 1 and results[2] is None
    assert isinstance(results[1], ValueError)


async def test_a_cancelled_reader_does_not_disturb_the_others(storage: SQLiteStorage) -> None:
    await storage.kv_set("ns", "k", "v")
    first = asyncio.ensure_future(storage.kv_get("ns", "k"))
    second = asyncio.ensure_future(storage.kv_get("ns", "k"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "v"
    assert first.cancelled()
