"""What the admin page costs the server (for docs/benchmarks.md and docs/admin.md).

    taskset -c 0 python -m bench.admin_costs

Prints:

1. The live feed's cost per event the pipeline handles, with no live view open (the usual
   case: one check), and with 1 and 10 open (a summary encoded once, queued per view), against
   the bare loop that would call it.
2. One page of the conversation list (50 conversations, most recent first) on SQLite, for a
   bot with 1,000, 10,000 and 100,000 conversations among 2 bots, first page and a page deep
   into the list: the list sorts a bot's conversations read through the primary key (no index
   that every message would have to update).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from botpress_py.event_feed import EventFeed
from botpress_py.events import IOEvent
from botpress_py.storage import SQLiteStorage

EVENTS = 200_000
SIZES = (1_000, 10_000, 100_000)
PAGES = 20


def _event(i: int) -> IOEvent:
    return IOEvent(type="text", channel="messenger", direction="incoming", botId=f"bot-{i % 4}",
                   target=f"{1000000000000000 + i}", threadId="100000000000000",
                   payload={"type": "text", "text": "hello"}, preview="hello there, how are you?")


def feed_costs() -> None:
    events = [_event(i) for i in range(1000)]
    print("| Live views open | ns per published event | events dropped |")
    print("|---|---|---|")
    start = time.perf_counter_ns()
    for i in range(EVENTS):
        _ = events[i % 1000]
    loop_ns = (time.perf_counter_ns() - start) / EVENTS
    for listeners in (0, 1, 10):
        feed = EventFeed(max_listeners=10)
        subscribed = [feed.subscribe(None) for _ in range(listeners)]
        start = time.perf_counter_ns()
        for i in range(EVENTS):
            feed.publish(events[i % 1000], "received")
            if i % 500 == 0:
                for listener in subscribed:  # a reader that keeps up
                    while not listener.queue.empty():
                        listener.queue.get_nowait()
        per_event = (time.perf_counter_ns() - start) / EVENTS - loop_ns
        print(f"| {listeners} | {per_event:.0f} | {sum(listener.dropped for listener in subscribed)} |")


async def list_costs() -> None:
    print()
    print("| Conversations of the bot | first page (ms) | page 100 (ms) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        storage = SQLiteStorage(Path(tmp) / "core.sqlite")
        await storage.open()
        try:
            stored = 0
            rng = random.Random(1)
            for size in SIZES:
                await _fill(storage, stored, size, rng)
                stored = size
                first = await _timed(storage, None)
                deep = None
                after = None
                for _ in range(100):  # walk to page 100 (or the end), timing the last one
                    page = await storage.conversations("bot-0", limit=50, after=after)
                    if not page:
                        break
                    last = page[-1]
                    after = (last["lastEventAt"], last["channel"], last["userId"], last["threadId"] or "")
                deep = await _timed(storage, after)
                print(f"| {size:,} | {first:.1f} | {deep:.1f} |")
        finally:
            await storage.close()


async def _fill(storage: SQLiteStorage, start: int, end: int, rng: random.Random) -> None:
    """Conversations start..end of bot-0 (and as many of bot-1), one message each, through SQL
    directly (the server's message path would take minutes for 200,000)."""
    def fill(db: object) -> None:
        rows = []
        for i in range(start, end):
            for bot in ("bot-0", "bot-1"):
                at = 1_764_000_000_000 + rng.randrange(30 * 86_400_000)
                rows.append((bot, "messenger", f"user-{i}", "page", at, at))
        db.executemany("INSERT INTO conversations (bot_id, channel, user_id, thread_id, created_at, last_event_at)"  # type: ignore[attr-defined]
                       " VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO messages (event_id, bot_id, channel, thread_id, user_id, direction, type, event,"  # type: ignore[attr-defined]
                       " preview, created_at) VALUES (?, ?, ?, ?, ?, 'incoming', 'text', '{}', 'hello', ?)",
                       [(f"{r[0]}-{r[2]}", r[0], r[1], r[3], r[2], r[4]) for r in rows])

    await storage._write(fill)


async def _timed(storage: SQLiteStorage, after: tuple[int, str, str, str] | None) -> float:
    best = float("inf")
    for _ in range(PAGES):
        start = time.perf_counter()
        await storage.conversations("bot-0", limit=51, after=after)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    feed_costs()
    asyncio.run(list_costs())


if __name__ == "__main__":
    main()
