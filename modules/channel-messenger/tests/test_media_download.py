"""Media users send reaches bot logic and stays: downloaded in the background into media storage, retried when the
host fails, refused when too big or of the wrong type, always reported on the event, served at its stable URL,
and gone after an erase."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from media_host import PNG, MediaHost, attachment, media_host
from messenger_testkit import ADMIN, PAGE_A, TOKEN_A, FakeMeta, add_bot, messenger, serve, write_global
from observation_kit import post_events, seen, spy_on_bot_logic

from botpress_py.testing import wait_for

BOT = "shop"


@pytest.fixture
async def host() -> Any:
    async with media_host() as running:
        yield running


def rig(tmp_path: Path, emulator: GraphEmulator, **config: Any) -> tuple[Path, Path]:
    data = tmp_path / "data"
    write_global(data, emulator)
    add_bot(data, BOT, TOKEN_A, **config)
    return data, spy_on_bot_logic(data, BOT, tmp_path / "seen.jsonl")


def fast(server: Any) -> None:
    downloads = messenger(server).media
    downloads.backoff_first = 0.01


async def media_seen(spy: Path, count: int = 1) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]]:
        found = [e["payload"]["media"] for e in seen(spy) if "media" in e["payload"]]
        return found if len(found) >= count else []

    return await wait_for(enough, timeout=15)


async def fetch(http: aiohttp.ClientSession, server: Any, url: str) -> tuple[int, bytes, str]:
    async with http.get(server.url + urlparse(url).path) as response:
        return response.status, await response.read(), response.headers.get("Content-Type", "")


async def test_a_photo_is_stored_and_bot_logic_gets_its_stable_url_type_and_size(
        tmp_path: Path, emulator: GraphEmulator, host: MediaHost, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await post_events(meta, PAGE_A, [attachment(PAGE_A, "61", "image", host["photo.png"], "m_p1"),
                                                attachment(PAGE_A, "61", "audio", host["voice.mp4"], "m_v1")]) == 200
        photo, voice = await media_seen(spy, 2)
        assert photo["status"] == "stored" and photo["contentType"] == "image/png" and photo["size"] == len(PNG)
        assert photo["url"].startswith(f"{server.external_url()}/api/v1/bots/{BOT}/media/{photo['id']}")
        assert voice["status"] == "stored" and voice["contentType"] == "audio/mp4"
        assert await fetch(http, server, photo["url"]) == (200, PNG, "image/png")

        # History names the file's URL from the start (reserved at the webhook, before the download).
        history = await server.storage.messages_for(BOT, "messenger", "61")
        recorded = [m["payload"]["media"] for m in history if m["type"] == "image"]
        assert recorded == [{"id": photo["id"], "url": photo["url"]}]
        assert host.hits["photo.png"] == 1

        # A redelivery is a duplicate: nothing downloaded again.
        assert await post_events(meta, PAGE_A, [attachment(PAGE_A, "61", "image", host["photo.png"], "m_p1")]) == 200
        assert await meta.say(PAGE_A, "61", "hello", mid="m_after") == 200
        await emulator.wait_for(lambda e: e.sent_messages)
        assert host.hits["photo.png"] == 1

        # An erase takes the user's files with the rest.
        async with http.delete(f"{server.url}/api/v1/admin/bots/{BOT}/users/messenger/61",
                               headers={"Authorization": f"Bearer {ADMIN}"}) as response:
            assert response.status == 200 and (await response.json())["erased"]["media"] == 2
        assert (await fetch(http, server, photo["url"]))[0] == 404


async def test_a_flaky_host_is_retried_until_the_file_is_stored(
        tmp_path: Path, emulator: GraphEmulator, host: MediaHost, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator)
    async with serve(data) as server:
        fast(server)
        assert await post_events(FakeMeta(http, server), PAGE_A,
                                 [attachment(PAGE_A, "62", "image", host["flaky.png"], "m_f1")]) == 200
        [media] = await media_seen(spy)
        assert media["status"] == "stored" and host.hits["flaky.png"] == 3
        assert (await fetch(http, server, media["url"]))[1] == PNG


async def test_a_failing_host_is_retried_then_reported_on_the_event_and_logged(
        tmp_path: Path, emulator: GraphEmulator, host: MediaHost, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    data, spy = rig(tmp_path, emulator)
    async with serve(data) as server:
        fast(server)
        with caplog.at_level(logging.WARNING):
            assert await post_events(FakeMeta(http, server), PAGE_A,
                                     [attachment(PAGE_A, "63", "image", host["broken.png"], "m_b1"),
                                      attachment(PAGE_A, "63", "image", host["expired.png"], "m_e1")]) == 200
            broken, expired = await media_seen(spy, 2)
        assert broken["status"] == "failed" and broken["attempts"] == 3 and "127.0.0.1" in broken["error"]
        assert "url" not in broken, "no URL is handed out for a file that is not there"
        assert host.hits["broken.png"] == 3, "retried, then given up"
        assert expired["status"] == "failed" and "404" in expired["error"]
        assert host.hits["expired.png"] == 1, "an expired URL is not retried"
        assert (await fetch(http, server, f"/api/v1/bots/{BOT}/media/{broken['id']}"))[0] == 404
        lines = [r.getMessage() for r in caplog.records if "not kept" in r.getMessage()]
        assert lines and "m_b1" not in lines[0] and host.url not in lines[0], "the log names no URL"


async def test_a_slow_host_never_delays_the_webhook_and_bot_logic_gets_the_url_pending(
        tmp_path: Path, emulator: GraphEmulator, host: MediaHost, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator, mediaWait="200ms")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await post_events(meta, PAGE_A, [attachment(PAGE_A, "64", "image", host["slow.png"], "m_s1")]) == 200
        # Answered while the host still holds the download back: the 200 never waits for it.
        assert not host.release.is_set()
        await wait_for(lambda: host.hits["slow.png"] == 1)
        [media] = await media_seen(spy)
        assert media["status"] == "pending" and media["url"].endswith(media["id"])
        assert (await fetch(http, server, media["url"]))[0] == 404, "not there yet"
        host.release.set()

        async def landed() -> bool:
            return (await fetch(http, server, media["url"]))[:2] == (200, PNG)

        await wait_for(landed, timeout=10)


async def test_too_large_and_wrong_type_media_are_refused_never_retried_and_reported(
        tmp_path: Path, emulator: GraphEmulator, host: MediaHost, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator, mediaMaxBytes=1000)
    async with serve(data) as server:
        fast(server)
        assert await post_events(FakeMeta(http, server), PAGE_A, [
            attachment(PAGE_A, "65", "image", host["big.png"], "m_big"),
            attachment(PAGE_A, "65", "image", host["endless.png"], "m_endless"),
            attachment(PAGE_A, "65", "image", host["page.png"], "m_page"),
            attachment(PAGE_A, "65", "video", host["photo.png"], "m_video")]) == 200
        big, endless, page, video = await media_seen(spy, 4)
        assert big["status"] == "refused" and "5000 bytes" in big["error"]
        assert endless["status"] == "refused" and "1000 bytes" in endless["error"]
        assert page["status"] == "refused" and "text/html" in page["error"]
        assert video["status"] == "refused" and "not a video" in video["error"]
        assert [host.hits[n] for n in ("big.png", "endless.png", "page.png")] == [1, 1, 1]
        for media in (big, endless, page, video):
            assert (await fetch(http, server, f"/api/v1/bots/{BOT}/media/{media['id']}"))[0] == 404


async def test_with_downloads_off_nothing_is_fetched_or_reserved(
        tmp_path: Path, emulator: GraphEmulator, host: MediaHost, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator, downloadMedia=False)
    async with serve(data) as server:
        assert await post_events(FakeMeta(http, server), PAGE_A,
                                 [attachment(PAGE_A, "66", "image", host["photo.png"], "m_off")]) == 200
        await wait_for(lambda: seen(spy))
        [event] = seen(spy)
        assert event["type"] == "image" and "media" not in event["payload"]
        assert event["payload"]["url"] == host["photo.png"], "Meta's own (temporary) URL stays"
        assert host.hits["photo.png"] == 0


async def test_an_erase_stops_the_users_download_in_flight_so_no_file_outlives_it(
        tmp_path: Path, emulator: GraphEmulator, host: MediaHost, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator, mediaWait="100ms")
    async with serve(data) as server:
        assert await post_events(FakeMeta(http, server), PAGE_A,
                                 [attachment(PAGE_A, "67", "image", host["slow.png"], "m_inflight")]) == 200
        [media] = await media_seen(spy)
        assert media["status"] == "pending"
        async with http.delete(f"{server.url}/api/v1/admin/bots/{BOT}/users/messenger/67",
                               headers={"Authorization": f"Bearer {ADMIN}"}) as response:
            assert response.status == 200
        assert messenger(server).media._tasks == {}, "the download was stopped by the erase"
        host.release.set()  # the host would answer now: nobody is left to take the file
        assert (await fetch(http, server, media["url"]))[0] == 404
        assert await server.storage.media_get(BOT, media["id"]) is None


async def test_a_disabled_bots_users_media_is_kept_before_metas_urls_expire(
        tmp_path: Path, emulator: GraphEmulator, host: MediaHost, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator, pageId=PAGE_A)
    bot_file = data / "bots" / BOT / "bot.config.json"
    bot_file.write_text(json.dumps({**json.loads(bot_file.read_text()), "disabled": True}))
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        await wait_for(lambda: messenger(server).registry.parked(PAGE_A) is not None)
        assert await post_events(meta, PAGE_A, [attachment(PAGE_A, "68", "image", host["photo.png"], "m_dis")]) == 200
        [(_, stored)] = await server.storage.inbox_pending(bot_id=BOT)
        media_id = stored.payload["media"]["id"]
        await wait_for(lambda: server.storage.media_get(BOT, media_id), timeout=10)  # downloaded while disabled
        assert await meta.admin(BOT, "enable") == 200
        [media] = await media_seen(spy)
        assert media["status"] == "stored" and media["id"] == media_id and host.hits["photo.png"] == 1
