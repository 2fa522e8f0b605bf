"""Work on the event loop stays bounded per request: a 6,000-event standby delivery from new users and a 5 MB
text do not hold the server's other requests up.

The server runs on the test's event loop, so a poller on the same loop answers GET /status only while the
loop is free: while a request holds the loop, /status is not answered. The assertions are about progress
(how many /status answers came while the work was under way, and whether one stretch without answers took
most of that time), not about wall-clock limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from channel_messenger.handover import SHARDS, shard_key
from messenger_testkit import (
    MODULE,
    PAGE_A,
    PAGE_B,
    SECRET,
    TOKEN_A,
    TOKEN_B,
    add_bot,
    messages_with,
    serve,
    user_message,
    webhook_path,
    write_global,
)
from observation_kit import sqlite_rows

from botpress_py.testing import make_bot, wait_for

STANDBY_USERS = 6_000


class StatusPoller:
    """GET /status one after the other, noting when each answer came."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url + "/status"
        self.answered: list[float] = []
        self.failures: list[str] = []

    async def run(self) -> None:
        while True:
            try:
                async with self.http.get(self.url) as response:
                    await response.read()
                    if response.status != 200:
                        self.failures.append(f"HTTP {response.status}")
            except aiohttp.ClientError as exc:
                self.failures.append(repr(exc))
            self.answered.append(time.monotonic())

    def during(self, start: float, end: float) -> list[float]:
        return [t for t in self.answered if start < t < end]

    def longest_quiet(self, start: float, end: float) -> float:
        """The longest stretch of [start, end] without a /status answer."""
        marks = [start, *self.during(start, end), end]
        return max(b - a for a, b in itertools.pairwise(marks))


@contextlib.asynccontextmanager
async def polling(http: aiohttp.ClientSession, server: Any) -> AsyncIterator[StatusPoller]:
    poller = StatusPoller(http, server.url)
    task = asyncio.create_task(poller.run())
    await wait_for(lambda: len(poller.answered) >= 3)
    try:
        yield poller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert poller.failures == []


async def post_large(http: aiohttp.ClientSession, server: Any, body: dict[str, Any]) -> int:
    """A signed delivery as Meta sends it, streamed (aiohttp warns about multi-megabyte bytes bodies)."""
    raw, headers = GraphEmulator.signed(body, SECRET)
    async with http.post(server.url + webhook_path(), data=io.BytesIO(raw), headers=headers) as response:
        return response.status


def assert_kept_answering(poller: StatusPoller, start: float, end: float, what: str, *,
                          quiet_share: float | None = None) -> None:
    """/status answered at least three times in [start, end] (and, with ``quiet_share``, never went unanswered for
    more than that share of it: a request holding the loop from start to end is one single quiet stretch)."""
    answers = poller.during(start, end)
    assert len(answers) >= 3, f"/status answered {len(answers)} times during {what} ({end - start:.2f} s)"
    if quiet_share is not None:
        quiet = poller.longest_quiet(start, end)
        assert quiet < quiet_share * (end - start), \
            f"{what}: /status went unanswered for {quiet:.2f} of {end - start:.2f} s"


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    add_bot(folder, "shop", TOKEN_A)
    return folder


async def stored_owners(server: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for number in range(SHARDS):
        found.update(await server.storage.kv_get("channel-messenger:bot:shop", shard_key(number)) or {})
    return found


async def test_a_6000_event_standby_delivery_from_new_users_does_not_hold_status_up(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    events = [user_message(PAGE_A, str(10**15 + i), "to the inbox", f"m_sb_{i}") for i in range(STANDBY_USERS)]
    body = GraphEmulator.webhook_body(PAGE_A, events, standby=True)
    async with serve(data) as server:
        async with polling(http, server) as poller:
            start = time.monotonic()
            status = await post_large(http, server, body)
            end = time.monotonic()
            assert status == 200
            assert_kept_answering(poller, start, end, f"a POST of {STANDBY_USERS} standby events", quiet_share=0.75)
        # Each user's thread is noted as owned elsewhere (written by the flusher, after the answer).
        owners = await wait_for(lambda: _all_owners(server), timeout=30)
        assert all(owner["owner"] == "another app" for owner in owners.values())
        await wait_for(lambda: pending(data) == 0, timeout=60)
    assert messages_with(emulator, TOKEN_A) == [], "standby events are never answered"


async def _all_owners(server: Any) -> dict[str, Any] | None:
    owners = await stored_owners(server)
    return owners if len(owners) == STANDBY_USERS else None


async def test_a_5_mb_text_does_not_hold_status_up_and_gets_the_fallback(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    # 5 MB of JSON (each character arrives escaped). Normalised, each "\ufdfa" unfolds into 18 letters: qna
    # comparing it with its questions held the event loop for seconds; it is far longer than any question.
    huge = "\ufdfa " * 800_000
    # The yardstick: the same text received, stored and processed by a bot without qna.
    make_bot(data, "plain", module_configs={MODULE: {"enabled": True, "accessToken": TOKEN_B},
                                            "qna": {"enabled": False}})
    async with serve(data) as server:
        async with polling(http, server) as poller:
            start = time.monotonic()
            assert await post_large(http, server, GraphEmulator.webhook_body(
                PAGE_B, [user_message(PAGE_B, "78", huge, "m_5mb_plain")])) == 200
            await wait_for(lambda: pending(data) == 0 and sqlite_rows(data, "SELECT COUNT(*) FROM inbox")[0][0],
                           timeout=60)
            yardstick = time.monotonic() - start

            start = time.monotonic()
            assert await post_large(http, server, GraphEmulator.webhook_body(
                PAGE_A, [user_message(PAGE_A, "77", huge, "m_5mb")])) == 200
            await emulator.wait_for(lambda e: messages_with(e, TOKEN_A), timeout=60)
            end = time.monotonic()
            assert_kept_answering(poller, start, end, "a 5 MB text, from the POST to the reply")
            quiet = poller.longest_quiet(start, end)
            assert quiet < 2 * yardstick, \
                f"qna held the loop {quiet:.2f} s; taking the same text in without qna took {yardstick:.2f} s"
    assert [m["message"]["text"] for m in messages_with(emulator, TOKEN_A)] == ["fallback from shop"]


def pending(data: Path) -> int:
    return sqlite_rows(data, "SELECT COUNT(*) FROM inbox WHERE status = 'pending'")[0][0]
