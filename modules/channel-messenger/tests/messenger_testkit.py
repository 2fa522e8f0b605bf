"""Helpers for the integration tests: bot folders, a real server, and a client that posts like Meta."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from channel_messenger.channel import MessengerChannel
from channel_messenger.emulator import GraphEmulator

from botpress_py.testing import make_bot, run_server, write_json

PAGE_A, PAGE_B, PAGE_C = "1001", "2002", "3003"
TOKEN_A, TOKEN_B, TOKEN_C = "EAA-token-page-a", "EAA-token-page-b", "EAA-token-page-c"
SECRET = "app-secret-A-1234567890"
SECRET_B = "app-secret-B-0987654321"
VERIFY = "verify-token-xyz"
ADMIN = "admin-token-for-tests"
MODULE = "channel-messenger"


def messenger(server: Any) -> MessengerChannel:
    """The Messenger channel of one running server (each server has its own module instance)."""
    module = server.loader.pm.get_plugin(MODULE)
    assert module is not None, f"{MODULE} is not loaded by this server"
    return module.channel


def webhook_path(bot: str = "___") -> str:
    return f"/api/v1/bots/{bot}/mod/{MODULE}/webhook"


def qna_for(bot_id: str) -> dict[str, Any]:
    """Answers that name the bot, so a reply shows which bot handled the event."""
    return {
        "entries": [
            {"id": "hello", "questions": ["hello"], "payloads": ["GET_STARTED"],
             "answers": [{"type": "text", "text": f"hello from {bot_id}"}]},
        ],
        "fallback": [{"type": "text", "text": f"fallback from {bot_id}"}],
    }


def write_global(data_dir: Path, emulator: GraphEmulator, **extra: Any) -> None:
    write_json(data_dir / "global" / "config" / f"{MODULE}.json",
               {"appSecret": SECRET, "verifyToken": VERIFY, "graphApiUrl": emulator.url, **extra})


def add_bot(data_dir: Path, bot_id: str, token: str, *, qna: dict[str, Any] | None = None, **config: Any) -> Path:
    return make_bot(data_dir, bot_id, module_configs={MODULE: {"enabled": True, "accessToken": token, **config}},
                    qna=qna if qna is not None else qna_for(bot_id))


def bot_config_file(data_dir: Path, bot_id: str) -> Path:
    return data_dir / "bots" / bot_id / "config" / f"{MODULE}.json"


def edit_bot_config(data_dir: Path, bot_id: str, **changes: Any) -> None:
    path = bot_config_file(data_dir, bot_id)
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    write_json(path, config)


@contextlib.asynccontextmanager
async def serve(data_dir: Path, **config: Any) -> AsyncIterator[Any]:
    """The real server with the channel and qna modules, admin API on."""
    async with run_server(data_dir, modules=[MODULE, "qna"], admin={"token": ADMIN}, **config) as server:
        yield server


class FakeMeta:
    """Posts webhook deliveries to the server the way Meta does."""

    def __init__(self, http: aiohttp.ClientSession, server: Any) -> None:
        self.http = http
        self.server = server

    async def post(self, body: Any, *, secret: str | None = SECRET, bot: str = "___",
                   headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, str]:
        data = raw if raw is not None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"}
        if secret is not None:
            sent.update(GraphEmulator.signed(data, secret)[1])
        sent.update(headers or {})
        async with self.http.post(self.server.url + webhook_path(bot), data=data, headers=sent) as response:
            return response.status, await response.text()

    async def say(self, page: str, psid: str, text: str, *, mid: str | None = None, secret: str = SECRET,
                  bot: str = "___") -> int:
        body = GraphEmulator.webhook_body(page, [GraphEmulator.user_message(page, psid, text, mid)])
        status, _ = await self.post(body, secret=secret, bot=bot)
        return status

    async def verify(self, *, bot: str = "___", **query: str) -> tuple[int, str]:
        async with self.http.get(self.server.url + webhook_path(bot), params=query) as response:
            return response.status, await response.text()

    async def status(self) -> dict[str, Any]:
        async with self.http.get(self.server.url + "/status") as response:
            return await response.json()

    async def module_status(self, bot: str) -> dict[str, Any]:
        return (await self.status())["bots"][bot]["modules"].get(MODULE, {})

    async def admin(self, bot: str, action: str) -> int:
        async with self.http.post(f"{self.server.url}/api/v1/admin/bots/{bot}/{action}",
                                  headers={"Authorization": f"Bearer {ADMIN}"}) as response:
            return response.status


def messages_with(emulator: GraphEmulator, token: str) -> list[dict[str, Any]]:
    """Accepted Send API messages made with one Page's token (so: to that Page's users)."""
    return [c["json"] for c in emulator.calls
            if c["accepted"] and c["path"].endswith("/messages") and c["query"].get("access_token") == token
            and "message" in (c["json"] or {})]


def texts(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["message"].get("text", "") for b in bodies]


def profile_calls(emulator: GraphEmulator) -> list[dict[str, Any]]:
    return [c for c in emulator.calls if c["path"].endswith("/messenger_profile") and c["method"] != "GET"]


def user_message(page: str, psid: str, text: str, mid: str) -> dict[str, Any]:
    return GraphEmulator.user_message(page, psid, text, mid)
