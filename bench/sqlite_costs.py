"""What a durable inbox write costs on this machine, and why (for docs/benchmarks.md).

    taskset -c 0 python -m bench.sqlite_costs

Uses the server's own SQLite schema (every migration) and a realistic stored event. Prints:

1. One event per transaction: the transaction run inline on the event loop's thread (as the
   server once did for small transactions, until a stalled disk was seen to freeze the loop)
   against the same transaction handed to a thread and back (as every transaction is now).
2. Fifty events per transaction (a busy webhook's group commit), with keys that arrive in
   random order as Meta's do (message ids, user ids): CPU per event and WAL written per commit,
   for the schema as shipped, with the per-user index it had before migration 4, and without
   the dedupe index, to show what each index keyed in random order costs.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from botpress_py.storage.migrations import SQLITE_MIGRATIONS

EVENT = ('{"type":"text","channel":"messenger","direction":"incoming","botId":"bench","target":"1000000000000001",'
         '"threadId":"100000000000000","payload":{"text":"hello","mid":"m_abc_1000000000000001","type":"text"},'
         '"preview":"hello","id":"0123456789abcdef0123456789abcdef","createdOn":1764450000000,'
         '"incomingEventId":null,"dedupeKey":"m_abc_1000000000000001","flags":{},"user":{}}')
INSERT = ("INSERT INTO inbox (event_id, bot_id, channel, thread_id, user_id, dedupe_key, event, created_at)"
          " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING event_id")
PREFILL = 60_000  # rows already in the inbox: a few minutes of a busy Page
MEASURED = 30_000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _database(change: tuple[str, ...] = ()) -> tuple[sqlite3.Connection, Path]:
    path = Path(tempfile.mkdtemp(prefix="bp-sqlite-costs-")) / "core.sqlite"
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")  # as the server: checkpoints on their own thread
    for migration in SQLITE_MIGRATIONS:
        for statement in migration.statements:
            db.execute(statement)
    for statement in change:
        db.execute(statement)
    return db, path


def _writer(db: sqlite3.Connection, rng: random.Random, tag: str) -> Callable[[int, int], None]:
    def write(first: int, count: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        for i in range(first, first + count):
            db.execute(INSERT, (f"{tag}{i:020d}", "bench", "messenger", "100000000000000",
                                str(rng.randrange(10**15)), f"m_{rng.random()}", EVENT, i)).fetchall()
        db.execute("COMMIT")

    return write


async def one_per_transaction() -> None:
    db, _ = _database()
    write = _writer(db, random.Random(1), "one")
    pool = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    count = 3000
    for offset, (label, run) in enumerate((("inline on the event loop's thread", None),
                                            ("handed to a thread and back", pool))):
        cpu, wall = _cpu(), time.perf_counter()
        for i in range(offset * count, (offset + 1) * count):  # bounded
            if run is None:
                write(i, 1)
            else:
                await loop.run_in_executor(run, write, i, 1)
        print(f"  1 event per transaction, {label:36s} {(_cpu() - cpu) / count * 1e6:6.0f} us CPU "
              f"{(time.perf_counter() - wall) / count * 1e6:6.0f} us wall")
    pool.shutdown()
    db.close()


def fifty_per_transaction() -> None:
    cases = (("with a per-user index (schema v3)", ("CREATE INDEX inbox_by_user ON inbox (bot_id, channel, user_id)",)),
             ("schema as shipped (v4)", ()),
             ("v4 without the dedupe index", ("DROP INDEX inbox_dedupe",)))
    for label, change in cases:
        db, path = _database(change)
        rng = random.Random(2)
        write = _writer(db, rng, "fifty")
        for first in range(0, PREFILL, 50):  # bounded
            write(first, 50)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = Path(str(path) + "-wal")
        cpu, before = _cpu(), wal.stat().st_size if wal.exists() else 0
        for first in range(PREFILL, PREFILL + MEASURED, 50):  # bounded
            write(first, 50)
        used = _cpu() - cpu
        written = (wal.stat().st_size - before) / (MEASURED / 50)
        print(f"  50 events per transaction, {label:40s} {used / MEASURED * 1e6:6.1f} us CPU per event, "
              f"{written / 1024:5.0f} KB of WAL per commit")
        db.close()
        for leftover in path.parent.iterdir():
            leftover.unlink()
        path.parent.rmdir()


def main() -> None:
    print(f"SQLite {sqlite3.sqlite_version}, pid {os.getpid()}, cores allowed {sorted(os.sched_getaffinity(0))}")
    asyncio.run(one_per_transaction())
    fifty_per_transaction()


if __name__ == "__main__":
    main()
