"""The media table on SQLite and PostgreSQL alike: files kept byte for byte, per bot, gone after an erase or the
purge; and ``bot.media`` (StorageMediaStore) refusing what it must not keep."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from botpress_py.media import MEDIA_ID, MediaTooLarge, StorageMediaStore
from botpress_py.storage import SQLiteStorage, Storage
from botpress_py.storage.media_rows import StoredMedia

from .backend_kit import Clock

if TYPE_CHECKING:
    from conftest import Backend

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # every byte value, NUL included


def media(media_id: str, *, bot: str = "bot-a", user: str = "user-1", created: int = 1_000,
          data: bytes = PNG) -> StoredMedia:
    return StoredMedia(media_id, bot, "messenger", user, "image/png", len(data), "cat.png", created, data)


def store(storage: Storage, bot: str = "bot-a", max_bytes: int = 1 << 20) -> StorageMediaStore:
    return StorageMediaStore(storage, bot, lambda: "https://bot.example.com/", max_bytes)


async def test_a_file_is_kept_byte_for_byte_and_only_for_its_bot(storage: Storage) -> None:
    await storage.media_put(media("a" * 32))
    got = await storage.media_get("bot-a", "a" * 32)
    assert got is not None and got.data == PNG and got.size == len(PNG) and got.content_type == "image/png"
    assert got.filename == "cat.png" and got.user_id == "user-1" and got.created_at == 1_000
    meta = await storage.media_get("bot-a", "a" * 32, with_data=False)
    assert meta is not None and meta.data is None and meta.size == len(PNG)
    assert await storage.media_get("bot-b", "a" * 32) is None, "another bot's id reads nothing"
    assert await storage.media_delete("bot-b", "a" * 32) is False
    assert await storage.media_delete("bot-a", "a" * 32) is True
    assert await storage.media_get("bot-a", "a" * 32) is None
    assert await storage.media_delete("bot-a", "a" * 32) is False


async def test_an_erase_deletes_the_users_files_and_no_one_elses(backend: Backend, storage: Storage) -> None:
    await storage.media_put(media("1" * 32, user="erase-me"))
    await storage.media_put(media("2" * 32, user="erase-me"))
    await storage.media_put(media("3" * 32, user="keep-me"))
    await storage.media_put(media("4" * 32, user="erase-me", bot="bot-b"))
    counts = await storage.erase_user("bot-a", "messenger", "erase-me")
    assert counts["media"] == 2
    left = sorted(row[0] for row in await backend.query("SELECT media_id FROM media"))
    assert left == ["3" * 32, "4" * 32]


async def test_the_purge_deletes_old_files_in_small_slices(backend: Backend) -> None:
    storage = await backend.open(clock=Clock(1_000))
    for number in range(120):  # more than one slice of the purge
        await storage.media_put(media(f"{number:032x}", created=500, data=b"old"))
    await storage.media_put(media("f" * 32, created=5_000))
    counts = await storage.purge(processed_before=0, messages_before=0, media_before=1_000)
    assert counts["media"] == 120
    assert [row[0] for row in await backend.query("SELECT media_id FROM media")] == ["f" * 32]
    assert "media" not in await storage.purge(processed_before=0, messages_before=0), \
        "without media_before the purge leaves media alone"


async def test_erased_blobs_leave_no_trace_in_the_sqlite_file(backend: Backend, storage: Storage) -> None:
    if not isinstance(storage, SQLiteStorage):
        pytest.skip("secure_delete is SQLite's")
    marker = b"PRIVATE-PHOTO-" * 64
    await storage.media_put(media("9" * 32, user="erase-me", data=marker))
    await storage.erase_user("bot-a", "messenger", "erase-me")
    await storage.close()
    path = storage.path
    raw = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    assert marker[:20] not in raw
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM media").fetchone() == (0,)


async def test_bot_media_store_gives_stable_unguessable_urls_and_refuses_bad_files(storage: Storage) -> None:
    media_store = store(storage)
    reserved = media_store.new_id()
    assert MEDIA_ID.fullmatch(reserved) and reserved != media_store.new_id()
    info = await media_store.put(PNG, content_type="Image/PNG; charset=binary", user_id="u1", channel="messenger",
                                 media_id=reserved, filename="../../etc/passwd\n")
    assert info["id"] == reserved and info["size"] == len(PNG) and info["contentType"] == "image/png"
    assert info["url"] == f"https://bot.example.com/api/v1/bots/bot-a/media/{reserved}"
    assert info["filename"] == "_.._etc_passwd_"
    assert (await media_store.info(reserved))["url"] == info["url"]
    assert (await media_store.read(reserved))[1] == PNG
    assert await store(storage, "bot-b").info(reserved) is None, "ids are per bot"
    assert await media_store.info("../../x") is None

    with pytest.raises(MediaTooLarge):
        await store(storage, max_bytes=10).put(PNG, content_type="image/png", user_id="u1", channel="messenger")
    with pytest.raises(ValueError, match="type/subtype"):
        await media_store.put(b"x", content_type="text/html<script>", user_id="u1", channel="messenger")
    with pytest.raises(ValueError, match="32 lower-case hex"):
        await media_store.put(b"x", content_type="image/png", user_id="u1", channel="messenger", media_id="1")
    with pytest.raises(ValueError, match="user_id and channel"):
        await media_store.put(b"x", content_type="image/png", user_id="", channel="messenger")
    assert await media_store.delete(reserved) is True and await media_store.info(reserved) is None


async def test_an_id_is_never_reused(storage: Storage) -> None:
    await storage.media_put(media("e" * 32))
    with pytest.raises(Exception):  # noqa: B017 - each driver names its unique violation differently
        await storage.media_put(media("e" * 32))
