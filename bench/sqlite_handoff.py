"""What a thread hand-off costs next to the SQL it carries (for the profile notes).

    taskset -c 0 python -m bench.sqlite_handoff

Runs on one core, like the server: the event loop and the SQLite thread share it. Prints the
CPU per operation for a bare aiosqlite round trip, a BEGIN/INSERT/COMMIT transaction through
aiosqlite (three round trips), the same transaction through sqlite3 directly, and the same
transaction as one ``run_in_executor`` call.
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import aiosqlite
except ImportError:  # no longer a dependency of botpress-py: those rows are skipped
    aiosqlite = None  # type: ignore[assignment]

COUNT = 3000
ROW = "x" * 200


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(name: str, step: Callable[[int], Awaitable[None]]) -> None:
    cpu, wall = _cpu(), time.perf_counter()
    for i in range(COUNT):  # bounded: COUNT operations
        await step(i)
    print(f"{name:58s} {(time.perf_counter() - wall) / COUNT * 1e6:7.0f} us wall "
          f"{(_cpu() - cpu) / COUNT * 1e6:7.0f} us CPU", flush=True)


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
    return conn


def _transaction(conn: sqlite3.Connection, i: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i, ROW))
    conn.execute("COMMIT")


async def _aiosqlite_rows(path: Path) -> None:
    assert aiosqlite is not None
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")

    async def select_one(i: int) -> None:
        await db.execute("SELECT 1")

    async def via_aiosqlite(i: int) -> None:
        await db.execute("BEGIN IMMEDIATE")
        await db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i, ROW))
        await db.execute("COMMIT")

    await _measure("aiosqlite round trip (SELECT 1)", select_one)
    await _measure("BEGIN/INSERT/COMMIT through aiosqlite (3 round trips)", via_aiosqlite)
    await db.close()


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bp-handoff-") as folder:
        base = Path(folder)
        if aiosqlite is not None:
            await _aiosqlite_rows(base / "a.sqlite")
        else:
            print("aiosqlite is not installed: its rows are skipped (pip install aiosqlite)")

        direct = _open(base / "b.sqlite")

        async def inline(i: int) -> None:
            _transaction(direct, i)

        await _measure("the same transaction with sqlite3, inline", inline)
        direct.close()

        executor = ThreadPoolExecutor(max_workers=1)
        loop = asyncio.get_running_loop()
        threaded = await loop.run_in_executor(executor, _open, base / "c.sqlite")

        async def one_handoff(i: int) -> None:
            await loop.run_in_executor(executor, _transaction, threaded, i)

        await _measure("the same transaction as one run_in_executor call", one_handoff)
        await loop.run_in_executor(executor, threaded.close)
        executor.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
