"""Media users send (issue 15): what keeping their files costs the webhook, how fast files are downloaded into
media storage, and how fast they are served back.

    python -m bench.media [--files 200] [--size 262144] [--deliveries 300]
    DATABASE_URL=postgresql://root@127.0.0.1:5432/test python -m bench.media   # the same on PostgreSQL

Everything runs in this process on 127.0.0.1: the server (real, on a free port), the Graph emulator, and a
stand-in for Meta's CDN serving ``--size``-byte images. Prints three Markdown tables:

1. webhook acknowledgement latency of one-attachment deliveries, downloads on and off (the 200 must not
   wait for the download: both columns should match);
2. ``--files`` attachments posted at once: time until every file is stored, files/s and MB/s;
3. the stored files served back at their stable URLs: requests/s and MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "modules" / "channel-messenger"))

from channel_messenger.emulator import GraphEmulator  # noqa: E402

from botpress_py.testing import make_bot, run_server, wait_for, write_json  # noqa: E402

PAGE, TOKEN, SECRET = "1001", "EAA-bench-token", "bench-app-secret"


async def cdn(size: int) -> tuple[web.AppRunner, str]:
    body = b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


def attachment(psid: str, url: str, mid: str) -> dict[str, Any]:
    return {"sender": {"id": psid}, "recipient": {"id": PAGE}, "timestamp": int(time.time() * 1000),
            "message": {"mid": mid, "attachments": [{"type": "image", "payload": {"url": url}}]}}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def ack_latencies(emulator: GraphEmulator, server_url: str, cdn_url: str, count: int, tag: str) -> list[float]:
    spent = []
    for n in range(count):
        started = time.perf_counter()
        status, _ = await emulator.post_webhook(server_url, PAGE, [attachment(f"{tag}{n % 50}",
                                                                              f"{cdn_url}/{tag}{n}.png",
                                                                              f"m_{tag}_{n}")])
        spent.append((time.perf_counter() - started) * 1000)
        assert status == 200
    return spent


async def run(files: int, size: int, deliveries: int) -> None:
    backend = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    runner, cdn_url = await cdn(size)
    rows: dict[str, list[float]] = {}
    try:
        for downloads in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                data = Path(folder) / "data"
                async with GraphEmulator({PAGE: {"token": TOKEN}}, app_secret=SECRET) as emulator:
                    write_json(data / "global" / "config" / "channel-messenger.json",
                               {"appSecret": SECRET, "verifyToken": "v", "graphApiUrl": emulator.url})
                    make_bot(data, "bench", module_configs={"channel-messenger": {
                        "enabled": True, "accessToken": TOKEN, "pageId": PAGE, "downloadMedia": downloads}})
                    env = {k: v for k, v in os.environ.items() if k == "DATABASE_URL"}
                    if env:
                        env["BP_DATABASE_SCHEMA"] = f"bench_media_{os.getpid()}_{int(downloads)}"
                    async with run_server(data, env, modules=["channel-messenger"]) as server:
                        rows[f"downloads {'on' if downloads else 'off'}"] = await ack_latencies(
                            emulator, server.url, cdn_url, deliveries, "a")
                        if downloads:
                            await burst(server, emulator, cdn_url, files, size, backend)
    finally:
        await runner.cleanup()
    print(f"\n### Webhook acknowledgement, one-attachment deliveries ({backend}, {deliveries} sequential)\n")
    print("| | p50 ms | p99 ms | mean ms |\n|---|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {percentile(values, 0.5):.2f} | {percentile(values, 0.99):.2f} | "
              f"{statistics.fmean(values):.2f} |")


async def burst(server: Any, emulator: GraphEmulator, cdn_url: str, files: int, size: int, backend: str) -> None:
    storage = server.storage
    started = time.perf_counter()
    events = [attachment(f"b{n}", f"{cdn_url}/b{n}.png", f"m_b_{n}") for n in range(files)]
    for start in range(0, files, 50):
        status, _ = await emulator.post_webhook(server.url, PAGE, events[start:start + 50])
        assert status == 200
    acked = time.perf_counter() - started

    count = "SELECT count(*) FROM media WHERE user_id LIKE 'b%'"  # this burst's users only

    async def all_stored() -> bool:
        if backend == "SQLite":
            return int((await storage._fetchall(count))[0][0]) >= files
        return int(await storage._fetchval(count)) >= files

    await wait_for(all_stored, timeout=600, interval=0.05)
    spent = time.perf_counter() - started
    print(f"\n### Downloads into media storage ({backend}): {files} images of {size} bytes posted at once\n")
    print("| acknowledged in s | all stored in s | files/s | MB/s |\n|---|---|---|---|")
    print(f"| {acked:.2f} | {spent:.2f} | {files / spent:.1f} | {files * size / spent / 1e6:.1f} |")

    pick = "SELECT media_id, size FROM media WHERE user_id LIKE 'b%' LIMIT 50"
    picked = await storage._fetchall(pick) if backend == "SQLite" else await storage._fetch(pick)
    ids = [row[0] for row in picked]
    assert all(int(row[1]) == size for row in picked), "every file stored whole"
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        served = 0

        async def fetch(media_id: str) -> None:
            nonlocal served
            async with http.get(f"{server.url}/api/v1/bots/bench/media/{media_id}") as response:
                body = await response.read()  # read first: "served += len(await ...)" would lose updates
                assert response.status == 200
                served += len(body)

        for _ in range(4):
            await asyncio.gather(*(fetch(media_id) for media_id in ids))
        spent = time.perf_counter() - started
    print(f"\n### Serving stored media ({backend}): {4 * len(ids)} GETs, 50 at a time\n")
    print("| requests/s | MB/s |\n|---|---|")
    print(f"| {4 * len(ids) / spent:.0f} | {served / spent / 1e6:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size", type=int, default=262_144)
    parser.add_argument("--deliveries", type=int, default=300)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    asyncio.run(run(args.files, args.size, args.deliveries))


if __name__ == "__main__":
    main()
