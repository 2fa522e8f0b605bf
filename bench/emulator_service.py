"""The channel's GraphEmulator as a separate process, with two read-outs for the benchmarks.

    taskset -c 1 python -m bench.emulator_service --port 0 --pages 1000

Pages ``page_base + i`` with token ``bench-token-<i>`` for i < --pages. Besides the Graph
routes it answers:

- ``GET /_bench/messages?since=N``: accepted Send API *messages* (sender actions left
  out) from the N-th on, as ``[[psid, time.monotonic() at arrival], ...]``. CLOCK_MONOTONIC is
  system-wide on Linux, so the bench process compares these times with its own.
- ``GET /_bench/counts``: calls by kind.

It prints ``emulator ready on <url>`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from aiohttp import web

from bench.common import HOST, ROOT

sys.path.insert(0, str(ROOT / "modules" / "channel-messenger"))
from channel_messenger.emulator import GraphEmulator  # a module folder, not an installed package

PAGE_BASE = 100_000_000_000


def page_id(index: int) -> str:
    return str(PAGE_BASE + index)


def page_token(index: int) -> str:
    return f"bench-token-{index}"


class BenchEmulator:
    def __init__(self, pages: int) -> None:
        self.emulator = GraphEmulator(
            pages={page_id(i): {"token": page_token(i), "name": f"Bench page {i}"} for i in range(pages)},
            profile_rate_limit=None,
        )
        self._scanned = 0
        self._messages: list[tuple[str, float]] = []
        self._by_kind: dict[str, int] = {}

    def _scan(self) -> None:
        calls = self.emulator.calls
        for call in calls[self._scanned :]:
            body = call.get("json")
            kind = f"{call['method']} {call['path']} {'ok' if call.get('accepted') else 'refused'}"
            self._by_kind[kind] = self._by_kind.get(kind, 0) + 1
            if call.get("accepted") and call["path"].endswith("/messages") and isinstance(body, dict) \
                    and "message" in body:
                self._messages.append((str(body["recipient"]["id"]), float(call["time"])))
        self._scanned = len(calls)
        # Keep memory flat over long runs: what was scanned is no longer needed.
        if self._scanned > 50_000:
            del calls[: self._scanned]
            self._scanned = 0

    async def messages(self, request: web.Request) -> web.Response:
        self._scan()
        since = int(request.query.get("since", "0"))
        return web.json_response({"total": len(self._messages), "messages": self._messages[since:]})

    async def counts(self, request: web.Request) -> web.Response:
        self._scan()
        return web.json_response({"messages": len(self._messages), "calls": self._by_kind})

    def make_app(self) -> web.Application:
        app = self.emulator.make_app()
        app.router.add_get("/_bench/messages", self.messages)
        app.router.add_get("/_bench/counts", self.counts)
        return app


async def serve(port: int, pages: int) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    bench = BenchEmulator(pages)
    runner = web.AppRunner(bench.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=1024)
    await site.start()
    server: Any = site._server
    bound = server.sockets[0].getsockname()[1]
    print(f"emulator ready on http://{HOST}:{bound}", flush=True)
    try:
        await stop.wait()  # serves until SIGTERM / SIGINT
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="GraphEmulator for the benchmarks")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pages", type=int, default=1)
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.pages))


if __name__ == "__main__":
    main()
