"""Media storage through a real server: ``bot.media`` of every bot context, the stable URL that serves a file as
stored (and never as a page of this server), an erase and the retention purge taking it away."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp

from botpress_py.media import StorageMediaStore
from botpress_py.testing import make_bot, run_server, wait_for

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00pixels" * 100
ADMIN = "admin-token-media"


def local(server: Any, url: str) -> str:
    return server.url + urlparse(url).path


def media_of(server: Any, bot_id: str) -> StorageMediaStore:
    """The media store the server gives a bot's contexts (what modules see as ``bot.media``)."""
    store = server.registry.media_store(bot_id)
    assert isinstance(store, StorageMediaStore)
    return store


async def test_a_stored_file_is_served_at_its_url_as_stored_then_gone_after_an_erase(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_bot(data, "shop")
    async with run_server(data, modules=[], admin={"token": ADMIN}) as server, aiohttp.ClientSession() as http:
        media = media_of(server, "shop")
        assert media.max_bytes == 26_214_400, "storage.media.maxBytes defaults to Messenger's 25 MB"
        photo = await media.put(PNG, content_type="image/png", user_id="u1", channel="messenger",
                                filename="cat.png")
        page = await media.put(b"<script>alert(1)</script>", content_type="text/html", user_id="u1",
                               channel="messenger", filename="x.html")
        assert photo["url"].startswith(server.external_url() + "/api/v1/bots/shop/media/")

        async with http.get(local(server, photo["url"])) as response:
            assert response.status == 200 and await response.read() == PNG
            assert response.headers["Content-Type"] == "image/png"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
            assert response.headers["Cache-Control"] == "private, max-age=86400"
            assert response.headers["Content-Disposition"].startswith('inline; filename="cat.png"')
            etag = response.headers["ETag"]
        async with http.get(local(server, photo["url"]), headers={"If-None-Match": etag}) as response:
            assert response.status == 304
        async with http.head(local(server, photo["url"])) as response:
            assert response.status == 200 and response.headers["Content-Length"] == str(len(PNG))
        async with http.get(local(server, page["url"])) as response:
            assert response.status == 200
            assert response.headers["Content-Disposition"].startswith("attachment"), "never shown as a page"
            assert response.headers["Content-Type"] == "text/html"

        # Another bot's path, a made-up id, a malformed id: nothing.
        for path in (f"/api/v1/bots/other/media/{photo['id']}", f"/api/v1/bots/shop/media/{'0' * 32}",
                     "/api/v1/bots/shop/media/..%2F..%2Fetc"):
            async with http.get(server.url + path) as response:
                assert response.status == 404, path

        async with http.delete(f"{server.url}/api/v1/admin/bots/shop/users/messenger/u1",
                               headers={"Authorization": f"Bearer {ADMIN}"}) as response:
            assert response.status == 200
            assert (await response.json())["erased"]["media"] == 2
        async with http.get(local(server, photo["url"])) as response:
            assert response.status == 404


async def test_the_retention_purge_deletes_old_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_bot(data, "shop")
    storage_config = {"retention": {"media": "200ms"}, "purgeInterval": "50ms", "media": {"maxBytes": 1000}}
    async with run_server(data, modules=[], storage=storage_config) as server, aiohttp.ClientSession() as http:
        media = media_of(server, "shop")
        assert media.max_bytes == 1000
        info = await media.put(PNG[:500], content_type="image/png", user_id="u1", channel="messenger")
        async with http.get(local(server, info["url"])) as response:
            assert response.status == 200, "served while younger than storage.retention.media"

        async def purged() -> bool:
            async with http.get(local(server, info["url"])) as response:
                return response.status == 404

        await wait_for(purged, timeout=10)
