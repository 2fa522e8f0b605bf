"""Rate-aware sending, seen at the emulator: a broadcast of 1,000 notifies never delays a user chatting at the
same time (measured as the order of the Send API calls, not time), never trips a Page limit the emulator
enforces, and a 613 pauses the Page's sends for Meta's hint, then everything goes, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from channel_messenger.pacing import NOTIFY, REPLY, SendPacer
from messenger_testkit import PAGE_A, TOKEN_A, FakeMeta, add_bot, serve, write_global
from observation_kit import api

from botpress_py.sdk import DeliveryError

BROADCAST = 1000
RATE = 100  # sendRateLimit of the test's Page: the broadcast lasts about 10 s
TEXT = {"type": "text", "text": "Our summer sale starts today."}
ANSWERS = {"entries": [], "fallback": [{"type": "text", "text": "happy to help"}]}
CHATTER = "55"


@pytest.fixture
async def limited() -> AsyncIterator[GraphEmulator]:
    """An emulator that answers 613 past 1.2 times the Page's budget in any second, like Meta past its limit."""
    async with GraphEmulator(pages={PAGE_A: {"token": TOKEN_A, "name": "Page A"}},
                             send_rate_limit=(int(RATE * 1.2), 1.0)) as emu:
        yield emu


def data_for(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator, sendRateLimit=RATE, typingIndicators=False)
    add_bot(folder, "shop", TOKEN_A, qna=ANSWERS)
    return folder


def messages(emulator: GraphEmulator) -> list[dict]:
    return [c for c in emulator.calls if c["accepted"] and c["path"].endswith("/messages")
            and "message" in (c["json"] or {})]


def notifies(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["json"]["recipient"]["id"] != CHATTER]


async def notify_all(http: aiohttp.ClientSession, server: object, psids: list[str], **extra: object) -> None:
    slots = asyncio.Semaphore(16)

    async def one(psid: str) -> None:
        async with slots:
            status, answer = await api(http, server, "shop", "notify",
                                       {"userId": psid, "payload": TEXT, "tag": "ACCOUNT_UPDATE", **extra})
            assert status == 202, answer

    await asyncio.gather(*(one(p) for p in psids))


async def test_a_broadcast_of_1000_notifies_does_not_delay_a_chatting_user(
        tmp_path: Path, limited: GraphEmulator, http: aiohttp.ClientSession) -> None:
    emulator = limited
    psids = [str(900_000 + n) for n in range(BROADCAST)]
    async with serve(data_for(tmp_path, emulator)) as server:
        meta = FakeMeta(http, server)
        await notify_all(http, server, psids)
        turns = []
        for n in range(3):
            asked_at = emulator.last_seq
            assert await meta.say(PAGE_A, CHATTER, f"question {n}", mid=f"m_chat_{n}") == 200
            await emulator.wait_for(lambda e, n=n: len([c for c in messages(e)
                                                          if c["json"]["recipient"]["id"] == CHATTER]) > n,
                                    timeout=10)
            reply = [c for c in messages(emulator) if c["json"]["recipient"]["id"] == CHATTER][n]
            between = [c for c in notifies(messages(emulator)) if asked_at < c["seq"] < reply["seq"]]
            turns.append((len(notifies(messages(emulator))), len(between)))
        await emulator.wait_for(lambda e: len(notifies(messages(e))) >= BROADCAST, timeout=60)

    # Each reply went out while most of the broadcast still waited, with at most a handful of notifies
    # (those already granted a turn) between the user's message and the reply.
    for sent_before_reply, between in turns:
        assert sent_before_reply < BROADCAST // 2, turns
        assert between <= 20, turns
    # Every notify went out once, and the Page never tripped the emulator's limit.
    sent = [c["json"]["recipient"]["id"] for c in notifies(messages(emulator))]
    assert sorted(sent) == sorted(psids)
    assert emulator.send_rate.refused == 0
    assert all(c["json"]["messaging_type"] == "MESSAGE_TAG" for c in notifies(messages(emulator)))


async def test_bulk_sends_wait_for_notifies(tmp_path: Path, emulator: GraphEmulator,
                                            http: aiohttp.ClientSession) -> None:
    async with serve(data_for(tmp_path, emulator)) as server:
        bulk = [str(700_000 + n) for n in range(200)]
        await notify_all(http, server, bulk, bulk=True)
        await emulator.wait_for(lambda e: len(messages(e)) >= 10)
        await notify_all(http, server, ["800001", "800002"])
        await emulator.wait_for(lambda e: len(messages(e)) >= 202, timeout=30)
    order = [c["json"]["recipient"]["id"] for c in messages(emulator)]
    assert max(order.index("800001"), order.index("800002")) < 150, "the notifies went before most bulk sends"


async def test_a_613_pauses_the_page_then_resumes_with_nothing_lost(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    psids = [str(600_000 + n) for n in range(30)]
    emulator.fail_next(1, status=400, code=613, message="Calls to this api have exceeded the rate limit.",
                       path="/messages$", retry_after=1)
    async with serve(data_for(tmp_path, emulator)) as server:
        await notify_all(http, server, psids)
        await emulator.wait_for(lambda e: len(messages(e)) >= len(psids), timeout=30)
        async with http.get(f"{server.url}/metrics") as response:
            text = await response.text()
    refused = next(c for c in emulator.calls if c.get("fault"))
    # Sends granted a turn before the 613 came back may still arrive at once; then none until the hint ran out.
    after = [c["time"] - refused["time"] for c in emulator.calls
             if c["path"].endswith("/messages") and c["seq"] > refused["seq"]]
    assert [t for t in after if 0.2 < t < 0.9] == [], after
    assert len([t for t in after if t <= 0.2]) <= RATE // 10, "at most the bucket's burst was in flight"
    assert any(t >= 0.9 for t in after)
    assert sorted(c["json"]["recipient"]["id"] for c in messages(emulator)) == sorted(psids), "each sent once"
    assert 'bp_messenger_send_paused_total{bot="shop"} 1.0' in text
    assert 'bp_messenger_graph_calls_total{bot="shop",code="613",kind="send"} 1.0' in text


async def test_a_long_pause_hands_the_waiting_calls_back_to_the_outbox() -> None:
    """Waiting in the call holds the bot (a reload waits for it): past MAX_WAIT_IN_CALL the outbox waits instead."""
    pacer = SendPacer()
    try:
        await pacer.acquire("1001", REPLY, rate=5)  # the Page's burst allows one call at once
        waiting = [asyncio.ensure_future(pacer.acquire("1001", NOTIFY, rate=5)) for _ in range(5)]
        await asyncio.sleep(0)
        assert sum(pacer.depth().values()) == 5
        pacer.pause("1001", 120)
        handed_back = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
        assert all(isinstance(e, DeliveryError) and not e.permanent and 110 < (e.retry_after or 0) <= 120
                   for e in handed_back), handed_back
        assert pacer.depth() == {}
        with pytest.raises(DeliveryError):
            await pacer.acquire("1001", REPLY, rate=5)  # a new call is handed back at once
    finally:
        await pacer.close()


def test_send_rate_limit_zero_turns_pacing_off_and_anything_else_invalid_keeps_the_default() -> None:
    from channel_messenger.settings import MessengerSettings

    assert MessengerSettings.from_config({"sendRateLimit": 0}).send_rate_limit == 0
    assert MessengerSettings.from_config({"sendRateLimit": 120}).send_rate_limit == 120
    assert MessengerSettings.from_config({"sendRateLimit": -5}).send_rate_limit == 250
    assert MessengerSettings.from_config({}).send_rate_limit == 250
