"""The admin page in a browser, for tests and for the docs' screenshot: a server on a copy of the
shipped data folder (welcome-bot, channel-web, qna) and what an operator does on /admin."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from botpress_py.server import BotpressServer
from botpress_py.testing import run_server

from .admin_support import TOKEN

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["global/botpress.config.json", "global/botpress.config.schema.json", "bots/welcome-bot/bot.config.json",
           "bots/welcome-bot/qna.json", "bots/welcome-bot/config/channel-web.json"]
SLOW = 15_000  # ms: a condition waited for, never a sleep


def shipped_data(tmp_path: Path) -> Path:
    """What a fresh clone has in data/ (run-time files left out)."""
    data = tmp_path / "data"
    for name in SHIPPED:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes((REPO_ROOT / "data" / name).read_bytes())
    return data


@contextlib.asynccontextmanager
async def shipped_server(data: Path, env: dict[str, str] | None = None, **config: Any) -> AsyncIterator[BotpressServer]:
    """A real server on a free port with the shipped modules and a known admin token."""
    config.setdefault("admin", {"token": TOKEN})
    async with run_server(data, {"BP_MODULES_PATH": str(REPO_ROOT / "modules"), **(env or {})}, **config) as server:
        yield server


class AdminBrowser:
    """The admin page in one browser page."""

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url
        self.errors: list[str] = []  # uncaught script errors of the page

    @classmethod
    async def open(cls, context: Any, server_url: str) -> AdminBrowser:
        page = await context.new_page()
        admin = cls(page, f"{server_url}/admin")
        page.on("pageerror", lambda error: admin.errors.append(str(error)))
        await page.goto(admin.url)
        await page.wait_for_selector("#login:not([hidden]), #app:not([hidden])", timeout=SLOW)
        return admin

    async def log_in(self, token: str = TOKEN) -> None:
        await self.page.fill("#token", token)
        await self.page.click("#login-form button[type=submit]")

    async def logged_in(self) -> None:
        await self.page.wait_for_selector("#app:not([hidden])", timeout=SLOW)

    async def tab(self, name: str) -> None:
        await self.page.click(f"#tabs a[data-view={name}]")
        await self.page.wait_for_selector(f"#view-{name}:not([hidden])", timeout=SLOW)

    def bot_row(self, bot_id: str) -> Any:
        return self.page.locator(f"#view-bots tr.bot-row[data-bot='{bot_id}']")


class ChatBrowser:
    """The chat page of a bot (channel-web) in one browser page."""

    def __init__(self, page: Any) -> None:
        self.page = page

    @classmethod
    async def open(cls, context: Any, server_url: str, bot_id: str = "welcome-bot") -> ChatBrowser:
        page = await context.new_page()
        await page.goto(f"{server_url}/s/{bot_id}")
        await page.wait_for_selector(".bpw-ready", timeout=SLOW)
        chat = cls(page)
        start = page.locator(".bpw-botinfo-start")
        if await start.is_visible():
            await start.click()
        return chat

    async def connected(self) -> None:
        await self.page.wait_for_selector(".bpw-connected", timeout=SLOW)

    async def say(self, text: str) -> None:
        await self.page.fill(".bpw-input", text)
        await self.page.keyboard.press("Enter")

    def bot_text(self, text: str) -> Any:
        return self.page.locator(".bpw-bot .bpw-bubble", has_text=text)
