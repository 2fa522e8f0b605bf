"""A stand-in for Meta's media CDN in tests: a local aiohttp server on a free port that serves attachment URLs
well, slowly, after failures, never, too big, or as the wrong type, and counts what it was asked."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x01\x02pixels" * 200


class MediaHost:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.release = asyncio.Event()  # the slow route answers once this is set
        self.failures_before_success = 2  # of /flaky.png
        self.url = ""
        self._runner: web.AppRunner | None = None

    def __getitem__(self, name: str) -> str:
        return f"{self.url}/{name}"

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        if name == "photo.png":
            return web.Response(body=PNG, content_type="image/png")
        if name == "voice.mp4":
            return web.Response(body=b"\x00\x00\x00\x18ftypmp42" * 10, content_type="audio/mp4")
        if name == "slow.png":
            await self.release.wait()
            return web.Response(body=PNG, content_type="image/png")
        if name == "flaky.png":
            if self.hits[name] <= self.failures_before_success:
                return web.Response(status=503, text="try later")
            return web.Response(body=PNG, content_type="image/png")
        if name == "broken.png":
            return web.Response(status=500, text="down")
        if name == "expired.png":
            return web.Response(status=404, text="URL signature expired")
        if name == "page.png":
            return web.Response(text="<html><script>alert(1)</script></html>", content_type="text/html")
        if name == "big.png":  # says how big it is
            return web.Response(body=b"\x00" * 5000, content_type="image/png")
        if name == "endless.png":  # says nothing of its size: counted while read
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(50):
                await response.write(b"\x00" * 1000)
            await response.write_eof()
            return response
        raise web.HTTPNotFound()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def media_host() -> AsyncIterator[MediaHost]:
    host = MediaHost()
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


def attachment(page: str, psid: str, kind: str, url: str, mid: str, **extra: Any) -> dict[str, Any]:
    """A user's message with one attachment, as Meta delivers it."""
    import time

    return {"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": int(time.time() * 1000),
            "message": {"mid": mid, "attachments": [{"type": kind, "payload": {"url": url, **extra}}]}}
