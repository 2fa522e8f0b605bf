"""Make ``channel_web`` and the test kits importable; a server with the shipped sample bot."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

MODULE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = MODULE_DIR.parents[1]

for folder in (MODULE_DIR, REPO_ROOT, Path(__file__).resolve().parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from webchat_testkit import WebChat, shipped_data, start_web_server  # noqa: E402

from botpress_py.testing import BotpressServer  # noqa: E402


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[BotpressServer]:
    """A server on a copy of the shipped data folder (welcome-bot), with channel-web and qna."""
    async with start_web_server(shipped_data(tmp_path)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def chat(server: BotpressServer, http: aiohttp.ClientSession) -> WebChat:
    """A visitor's API client for welcome-bot (call ``await chat.start()`` first)."""
    return WebChat(http, server.url, "welcome-bot")


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """A headless Chromium (playwright Browser); the test is skipped when there is none."""
    from botpress_py.browser_testing import browser_unavailable_reason, launch_browser

    reason = browser_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with launch_browser() as launched:
        yield launched
