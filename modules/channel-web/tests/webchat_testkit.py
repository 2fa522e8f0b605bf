"""Test helpers for channel-web: the shipped data folder, a server, and a visitor's API client."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from botpress_py.testing import BotpressServer, run_server, wait_for

MODULE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = MODULE_DIR.parents[1]
SHIPPED = ["global/botpress.config.json", "global/botpress.config.schema.json", "bots/welcome-bot/bot.config.json",
           "bots/welcome-bot/qna.json", "bots/welcome-bot/config/channel-web.json"]


def shipped_data(tmp_path: Path) -> Path:
    """What a fresh clone has in data/ (run-time files left out)."""
    data = tmp_path / "data"
    for name in SHIPPED:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes((REPO_ROOT / "data" / name).read_bytes())
    return data


@contextlib.asynccontextmanager
async def start_web_server(data: Path, **config: Any) -> AsyncIterator[BotpressServer]:
    """A real server on a free port with the shipped module list (channel-web, qna, ...)."""
    async with run_server(data, {"BP_MODULES_PATH": str(REPO_ROOT / "modules")}, **config) as server:
        yield server


def web_channel(server: BotpressServer) -> Any:
    """The module's WebChannel in this server (its socket hub, limiter and tokens)."""
    return server.loader.modules["channel-web"].plugin.channel


class WebChat:
    """One visitor of one bot, over the REST API and the WebSocket."""

    def __init__(self, http: aiohttp.ClientSession, url: str, bot_id: str) -> None:
        self.http = http
        self.base = f"{url}/api/v1/bots/{bot_id}/mod/channel-web"
        self.bot_id = bot_id
        self.user_id = ""
        self.token = ""
        self.conversation = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def start(self) -> WebChat:
        async with self.http.post(f"{self.base}/visitors") as r:
            assert r.status == 201, await r.text()
            body = await r.json()
        self.user_id, self.token = body["userId"], body["token"]
        await self.new_conversation()
        return self

    async def new_conversation(self) -> str:
        async with self.http.post(f"{self.base}/conversations", headers=self.auth) as r:
            assert r.status == 201, await r.text()
            self.conversation = (await r.json())["conversationId"]
        return self.conversation

    async def post(self, payload: dict[str, Any], **extra: Any) -> tuple[int, Any]:
        body = {"conversationId": self.conversation, "payload": payload, **extra}
        async with self.http.post(f"{self.base}/messages", json=body, headers=self.auth) as r:
            return r.status, await r.json(content_type=None)

    async def say(self, text: str) -> dict[str, Any]:
        status, body = await self.post({"type": "text", "text": text}, clientMessageId=uuid.uuid4().hex)
        assert status == 200, body
        return body

    async def history(self, **query: Any) -> dict[str, Any]:
        url = f"{self.base}/conversations/{self.conversation}/messages"
        async with self.http.get(url, params={k: str(v) for k, v in query.items()}, headers=self.auth) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def wait_for_replies(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Bot messages of the conversation once at least ``count`` are in history."""

        async def replies() -> list[dict[str, Any]] | None:
            messages = (await self.history(limit=200))["messages"]
            found = [m for m in messages if m["direction"] == "outgoing"]
            return found if len(found) >= count else None

        return await wait_for(replies, timeout)

    @contextlib.asynccontextmanager
    async def socket(self, after: int = 0) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        async with self.http.ws_connect(f"{self.base}/socket") as ws:
            await ws.send_str(json.dumps({"type": "auth", "token": self.token, "conversationId": self.conversation,
                                          "after": after}))
            yield ws


class ChatPage:
    """The chat page of a bot in one browser page: what a visitor sees and does."""

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url
        self.errors: list[str] = []  # uncaught script errors of the page

    @classmethod
    async def open(cls, context: Any, server_url: str, bot_id: str = "welcome-bot") -> ChatPage:
        page = await context.new_page()
        chat = cls(page, f"{server_url}/s/{bot_id}")
        page.on("pageerror", lambda error: chat.errors.append(str(error)))
        await page.goto(chat.url)
        await page.wait_for_selector(".bpw-ready", timeout=15_000)
        return chat

    async def start_chatting(self) -> None:
        """Leave the info page when it shows (a new visitor of a bot with infoPage.enabled)."""
        start = self.page.locator(".bpw-botinfo-start")
        if await start.is_visible():
            await start.click()

    async def say(self, text: str) -> None:
        await self.page.fill(".bpw-input", text)
        await self.page.keyboard.press("Enter")

    def bot_text(self, text: str) -> Any:
        return self.page.locator(".bpw-bot .bpw-bubble", has_text=text)

    def user_text(self, text: str) -> Any:
        return self.page.locator(".bpw-user .bpw-bubble", has_text=text)

    def choices(self) -> Any:
        return self.page.locator(".bpw-row:not(.bpw-answered) .bpw-choices:not(.bpw-used) .bpw-choice")

    async def connected(self) -> None:
        await self.page.wait_for_selector(".bpw-connected", timeout=15_000)
