"""Make ``channel_messenger``, the core's ``botpress_py`` and ``messenger_testkit`` importable; shared fixtures."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

MODULE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = MODULE_DIR.parents[1]

for folder in (MODULE_DIR, REPO_ROOT, Path(__file__).resolve().parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from channel_messenger import graph_client  # noqa: E402
from channel_messenger.emulator import GraphEmulator  # noqa: E402
from messenger_testkit import PAGE_A, PAGE_B, PAGE_C, TOKEN_A, TOKEN_B, TOKEN_C  # noqa: E402


@pytest.fixture
async def emulator() -> AsyncIterator[GraphEmulator]:
    """A fake Graph API with three Pages."""
    async with GraphEmulator(
        pages={
            PAGE_A: {"token": TOKEN_A, "name": "Page A"},
            PAGE_B: {"token": TOKEN_B, "name": "Page B"},
            PAGE_C: {"token": TOKEN_C, "name": "Page C"},
        },
        users={"42": {"first_name": "Ada", "last_name": "Lovelace", "locale": "en_GB", "timezone": 0}},
    ) as emu:
        yield emu


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Shrink the Graph backoff of the servers the test starts, so retry tests take milliseconds."""
    monkeypatch.setattr(graph_client, "BACKOFF_FIRST_SECONDS", 0.005)
    monkeypatch.setattr(graph_client, "BACKOFF_MAX_SECONDS", 0.02)
    yield


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for talking to the server under test, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session
