"""Web chat round trips: visitors say hello over REST and wait for both replies on their WebSocket.

    python -m bench.webchat_roundtrip [--visitors 1,50] [--messages 5]

Prints, per number of concurrent visitors, round trips per second and the p50/p95 time from
POST /messages to the second reply pushed on the socket. One server process, SQLite, the
shipped welcome-bot (rate limits off). Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "modules" / "channel-web" / "tests"))

from webchat_testkit import WebChat, shipped_data, start_web_server  # noqa: E402


async def visitor(http: aiohttp.ClientSession, url: str, messages: int, latencies: list[float]) -> None:
    chat = await WebChat(http, url, "welcome-bot").start()
    async with chat.socket() as ws:
        while json.loads((await ws.receive(timeout=30)).data)["type"] != "ready":
            pass
        for _ in range(messages):
            started = time.perf_counter()
            await chat.say("hello")
            replies = 0
            while replies < 2:
                if json.loads((await ws.receive(timeout=30)).data)["type"] == "message":
                    replies += 1
            latencies.append((time.perf_counter() - started) * 1000)


async def main(visitor_counts: list[int], messages: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bp-webchat-bench-"))
    try:
        data = shipped_data(folder)
        (data / "bots/welcome-bot/config/channel-web.json").write_text(json.dumps({"rateLimit": {"enabled": False}}))
        # No pool limit: every visitor holds a socket open while it posts (the default pool is 100).
        connector = aiohttp.TCPConnector(limit=0)
        async with start_web_server(data) as server, aiohttp.ClientSession(connector=connector) as http:
            print("| visitors | round trips | per second | p50 ms | p95 ms |\n|---|---|---|---|---|")
            for count in visitor_counts:
                latencies: list[float] = []
                started = time.perf_counter()
                await asyncio.gather(*(visitor(http, server.url, messages, latencies) for _ in range(count)))
                elapsed = time.perf_counter() - started
                latencies.sort()
                p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
                print(f"| {count} | {len(latencies)} | {len(latencies) / elapsed:.0f} | "
                      f"{statistics.median(latencies):.1f} | {p95:.1f} |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", default="1,50", help="comma-separated concurrent visitor counts")
    parser.add_argument("--messages", type=int, default=5, help="hellos per visitor")
    args = parser.parse_args()
    asyncio.run(main([int(v) for v in args.visitors.split(",")], args.messages))
