"""Helpers for the tests of what users do besides typing: a server with test bot logic (tests/fixtures/page-logic),
and the emulator's ``/_emulator/send`` as a user (or a person in the Page Inbox) would use it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import ADMIN, MODULE, SECRET

from botpress_py.testing import run_server, wait_for

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@contextlib.asynccontextmanager
async def serve_with_logic(data_dir: Path, **config: Any) -> AsyncIterator[Any]:
    """The real server with the channel, qna and the test bot logic ``page-logic``."""
    async with run_server(data_dir, {"BP_MODULES_PATH": str(FIXTURES)}, modules=[MODULE, "qna", "page-logic"],
                          admin={"token": ADMIN}, **config) as server:
        yield server


async def user_does(http: aiohttp.ClientSession, emulator: GraphEmulator, server: Any, page: str, psid: str,
                    **spec: Any) -> dict[str, Any]:
    """``POST /_emulator/send``: the emulator signs the delivery and posts it to the server, as Meta does."""
    emulator.app_secret = emulator.app_secret or SECRET  # the App's secret: signs, and checks appsecret_proof
    async with http.post(f"{emulator.url}/_emulator/send",
                         json={"page": page, "psid": psid, "server": server.url, **spec}) as response:
        answer = await response.json()
        assert response.status == 200, answer
        assert answer["status"] == 200, answer
        return answer


async def history_until(server: Any, bot: str, psid: str, predicate: Any, timeout: float = 10.0) -> list[dict]:
    """The user's history once ``predicate(history)`` holds."""

    async def check() -> list[dict[str, Any]]:
        found = await server.storage.messages_for(bot, "messenger", psid, limit=200)
        return found if predicate(found) else []

    return await wait_for(check, timeout=timeout)


def sent_to(emulator: GraphEmulator, psid: str) -> list[dict[str, Any]]:
    """Accepted Send API bodies to one user (messages and sender actions)."""
    return [c["json"] for c in emulator.calls if c.get("accepted") and c["path"].endswith("/messages")
            and (c["json"].get("recipient") or {}).get("id") == psid]


def texts_to(emulator: GraphEmulator, psid: str) -> list[str]:
    return [b["message"].get("text", "") for b in sent_to(emulator, psid) if "message" in b]
