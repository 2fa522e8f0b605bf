"""What is on disk after a SIGKILL: masked texts never, an erased user's texts not after the erase.

The server runs as a real process (as in test_crash_recovery.py) on SQLite; after each SIGKILL every
file of the storage folder (core.sqlite, its -wal and -shm) is searched byte by byte, so whatever
SQLite left in the WAL, in freed pages or in the free space of a page counts.
"""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from test_crash_recovery import start_server

from botpress_py.testing import free_port, make_bot, wait_for, write_json

PAGE, TOKEN, SECRET, ADMIN = "8008", "EAA-rest-token", "rest-app-secret-123456", "rest-admin-token"
SECRET_TEXT, SECRET_REPLY = "my card is zebracard", "Noted SECRET-REPLY-77"
N_USERS = 4


def stored_bytes(data: Path) -> dict[str, bytes]:
    """Every file of the storage folder (the database, its WAL and shared-memory index)."""
    files = {path.name: path.read_bytes() for path in (data / "storage").iterdir() if path.is_file()}
    assert "core.sqlite" in files
    return files


def files_holding(data: Path, text: str) -> list[str]:
    needle = text.encode()
    return sorted(name for name, content in stored_bytes(data).items() if needle in content)


class Server:
    """botpress-py as a process on a fixed port of the test's data folder; killed, never drained."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Any = None

    async def start(self) -> None:
        self.proc = await start_server(self.data, self.port, {"BP_ADMIN_TOKEN": ADMIN})

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def say(self, http: aiohttp.ClientSession, user: str, text: str, mid: str) -> int:
        body = GraphEmulator.webhook_body(PAGE, [GraphEmulator.user_message(PAGE, user, text, mid=mid)])
        raw, headers = GraphEmulator.signed(body, SECRET)
        async with http.post(f"{self.url}/api/v1/bots/___/mod/channel-messenger/webhook", data=raw,
                             headers=headers) as response:
            return response.status

    async def admin(self, http: aiohttp.ClientSession, method: str, path: str) -> Any:
        async with http.request(method, f"{self.url}/api/v1/admin/{path}",
                                headers={"Authorization": f"Bearer {ADMIN}"}) as response:
            assert response.status == 200, await response.text()
            return await response.json()


@pytest.fixture
async def graph() -> AsyncIterator[GraphEmulator]:
    async with GraphEmulator() as emulator:
        emulator.add_page(PAGE, TOKEN, name="Rest Page")
        yield emulator


def setup_data(data: Path, graph: GraphEmulator, **channel: Any) -> None:
    write_json(data / "global" / "botpress.config.json",
               {"modules": [{"location": "MODULES_ROOT/channel-messenger"}, {"location": "MODULES_ROOT/qna"}]})
    write_json(data / "global" / "config" / "channel-messenger.json",
               {"appSecret": SECRET, "verifyToken": "v", "graphApiUrl": graph.url})
    make_bot(data, "shop", module_configs={"channel-messenger": {
        "enabled": True, "accessToken": TOKEN, "pageId": PAGE, "typingIndicators": False, **channel}},
        qna={"entries": [{"id": "card", "questions": [SECRET_TEXT],
                          "answers": [{"type": "text", "text": SECRET_REPLY}]}],
             "fallback": [{"type": "text", "text": "fallback"}]})


def set_disabled(data: Path, disabled: bool) -> None:
    path = data / "bots" / "shop" / "bot.config.json"
    write_json(path, {**json.loads(path.read_text()), "disabled": disabled})


async def test_masked_texts_are_in_no_database_file_before_or_after_processing(
        tmp_path: Path, graph: GraphEmulator) -> None:
    data = tmp_path / "data"
    setup_data(data, graph, maskIncomingMessages=True, maskOutgoingMessages=True)
    server = Server(data)
    async with aiohttp.ClientSession() as http:
        # 1. Stored, not processed: the bot is disabled (at runtime, so its deliveries are stored).
        await server.start()
        try:
            await server.admin(http, "POST", "bots/shop/disable")
            for i in range(N_USERS):
                assert await server.say(http, f"user-{i}", SECRET_TEXT, f"mid.rest.{i}") == 200
        finally:
            await server.kill()
        assert files_holding(data, "zebracard") == []
        key = (data / "secrets" / "storage.key").read_text().strip()
        assert (data / "secrets" / "storage.key").stat().st_mode & 0o077 == 0
        assert files_holding(data, key) == [] and files_holding(data, key.upper()) == []

        # 2. Processed, replies stored but not sent (the Graph API fails every send).
        set_disabled(data, False)
        outage = graph.add_rule(status=500, code=1200, path=r"/messages$")
        await server.start()
        try:
            await graph.wait_for(lambda g: len({c["json"]["recipient"]["id"] for c in g.calls_to(r"/messages$")
                                                if "message" in (c["json"] or {})}) == N_USERS, 30)
        finally:
            await server.kill()
        for text in ("zebracard", "SECRET-REPLY-77"):
            assert files_holding(data, text) == [], text

        # 3. After a restart the stored (encrypted) replies are read back and sent as written.
        graph.remove_rule(outage)
        await server.start()
        try:
            sent = await graph.wait_for(lambda g: len(g.sent_messages) == N_USERS and g.sent_messages, 30)
            assert {m["message"]["text"] for m in sent} == {SECRET_REPLY}

            async def history_recorded() -> bool:  # every reply's sent mark (and history row) committed
                return len(await _history(data)) == 2 * N_USERS

            await wait_for(history_recorded, 30)
        finally:
            await server.kill()
        for text in ("zebracard", "SECRET-REPLY-77"):
            assert files_holding(data, text) == [], text
        assert set(await _history(data)) == {"***"}


async def _history(data: Path) -> list[str]:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{data / 'storage' / 'core.sqlite'}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute("SELECT preview FROM messages")]


async def test_an_erased_users_texts_are_in_no_database_file_once_the_erase_answered(
        tmp_path: Path, graph: GraphEmulator) -> None:
    data = tmp_path / "data"
    setup_data(data, graph)
    server = Server(data)
    erased = [f"ERASE-ME-{i}-quokka" for i in range(3)]
    kept = [f"KEEP-ME-{i}-wombat" for i in range(3)]
    async with aiohttp.ClientSession() as http:
        await server.start()
        try:
            for i, (gone, stays) in enumerate(zip(erased, kept, strict=True)):
                assert await server.say(http, "psid-erase", gone, f"mid.erase.{i}") == 200
                assert await server.say(http, "psid-keep", stays, f"mid.keep.{i}") == 200
            await graph.wait_for(lambda g: len(g.sent_messages) == 6, 30)
            # Checkpointed into core.sqlite itself, not only in the WAL: the erase must clear the file too.
            await wait_for(lambda: all("core.sqlite" in files_holding(data, text) for text in erased), 30)
            answer = await server.admin(http, "DELETE", "bots/shop/users/messenger/psid-erase")
            assert answer["erased"]["messages"] == 6 and answer["erased"]["inbox"] == 3
        finally:
            await server.kill()  # at once: whatever the erase left behind would still be on disk
    for text in erased:
        assert files_holding(data, text) == [], text
    for text in kept:
        assert files_holding(data, text), f"{text}: the search finds what is stored"
