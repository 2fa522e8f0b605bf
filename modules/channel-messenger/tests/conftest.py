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

from channel_messenger import channel  # noqa: E402
from channel_messenger.graph_emulator import GraphEmulator  # noqa: E402
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
def fast_retries() -> Iterator[None]:
    """Shrink the module's Graph backoff so retry tests take milliseconds, then restore it."""
    graph = channel().graph
    saved = graph.base_delay, graph.max_delay
    graph.base_delay, graph.max_delay = 0.005, 0.02
    yield
    graph.base_delay, graph.max_delay = saved


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for talking to the server under test, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session
