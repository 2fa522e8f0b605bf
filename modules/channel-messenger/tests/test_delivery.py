"""Sending replies on the real server: retries, permanent failures, pacing, typing, sender actions."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.channel import MessengerChannel
from channel_messenger.emulator import GraphEmulator
from channel_messenger.graph_client import GraphClient
from messenger_testkit import PAGE_A, TOKEN_A, FakeMeta, add_bot, messages_with, serve, texts, write_global
from observation_kit import seen, spy_on_bot_logic

from botpress_py.sdk import IOEvent
from botpress_py.testing import wait_for

LONG = ("This is a fairly long sentence that keeps going. " * 50).strip()  # ~2500 characters


def qna(*entries: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {"entries": [{"id": f"e{i}", "questions": [q], "answers": a} for i, (q, a) in enumerate(entries)],
            "fallback": [{"type": "text", "text": "fallback"}]}


ANSWERS = qna(
    ("hello", [{"type": "text", "text": "hi"}]),
    ("two", [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]),
    ("typing", [{"type": "typing", "value": 200}, {"type": "text", "text": "typed"}]),
    ("long", [{"type": "text", "text": LONG}]),
)


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    return folder


def is_message(body: Any) -> bool:
    return isinstance(body, dict) and "message" in body


def calls_for(emulator: GraphEmulator, psid: str) -> list[dict[str, Any]]:
    return [c for c in emulator.calls if c["path"].endswith("/messages")
            and (c["json"] or {}).get("recipient", {}).get("id") == psid]


async def test_transient_graph_errors_are_retried_then_delivered(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, fast_retries: None) -> None:
    add_bot(data, "shop", TOKEN_A, qna=ANSWERS)
    emulator.fail_next(1, status=500, code=1200, when=is_message)
    # A rate limit pauses the Page's sends for Meta's hint (pacing.py), then the reply goes.
    emulator.fail_next(1, status=400, code=613, message="Calls to this api have exceeded the rate limit.",
                       when=is_message, retry_after=1)
    emulator.fail_next(1, status=502, code=None, when=is_message)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "10", "hello") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
    attempts = [c for c in calls_for(emulator, "10") if is_message(c["json"])]
    assert len(attempts) == 4 and [c["accepted"] for c in attempts] == [False, False, False, True]
    assert texts(messages_with(emulator, TOKEN_A)) == ["hi"]


# 2018300 (another app owns the thread) also silences the next replies: see test_handover.py.
@pytest.mark.parametrize("code", [551, 100])
async def test_permanent_graph_errors_are_not_retried(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, code: int) -> None:
    add_bot(data, "shop", TOKEN_A, qna=ANSWERS)
    emulator.fail_next(1, status=400, code=code, when=is_message)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "11", "hello", mid="m_fails") == 200
        # The same conversation's next reply goes out only after the failed one was settled.
        assert await meta.say(PAGE_A, "11", "what", mid="m_next") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
        assert await meta.module_status("shop") == {"state": "on"}
    attempts = [c["json"]["message"]["text"] for c in calls_for(emulator, "11") if is_message(c["json"])]
    assert attempts == ["hi", "fallback"], "the refused reply was tried once"


async def test_bad_token_while_sending_marks_the_channel_unhealthy(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=ANSWERS)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        emulator.add_rule(status=400, code=190, message="Error validating access token: session expired",
                          path="/messages$")
        assert await meta.say(PAGE_A, "12", "hello") == 200
        await meta_status_becomes(meta, "shop", "error")
        reason = (await meta.module_status("shop"))["reason"]
        assert "code 190" in reason and "Access Tokens" in reason and TOKEN_A not in reason
    assert len(calls_for(emulator, "12")) == 1, "a refused token is not retried"


async def meta_status_becomes(meta: FakeMeta, bot: str, state: str) -> None:
    from botpress_py.testing import wait_for

    async def reached() -> bool:
        return (await meta.module_status(bot)).get("state") == state

    await wait_for(reached, timeout=5)


async def test_message_delay_spaces_consecutive_messages(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=ANSWERS, messageDelay=150)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "13", "two") == 200
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 2)
    first, second = [c for c in calls_for(emulator, "13") if is_message(c["json"])]
    assert second["time"] - first["time"] >= 0.15


async def test_typing_shows_indicator_waits_then_answers(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=ANSWERS)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "14", "typing") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
    calls = calls_for(emulator, "14")
    assert [c["json"] for c in calls] == [
        {"recipient": {"id": "14"}, "sender_action": "mark_seen"},
        {"recipient": {"id": "14"}, "sender_action": "typing_on"},
        {"recipient": {"id": "14"}, "sender_action": "typing_off"},
        {"recipient": {"id": "14"}, "messaging_type": "RESPONSE", "message": {"text": "typed"}},
    ]
    assert calls[2]["time"] - calls[1]["time"] >= 0.2


async def test_disabled_actions_and_typing_indicators_off(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=ANSWERS, disabledActions=["mark_seen", "typing_on", "typing_off"])
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "15", "typing") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
        assert [c["json"] for c in calls_for(emulator, "15")] == [
            {"recipient": {"id": "15"}, "messaging_type": "RESPONSE", "message": {"text": "typed"}}]


async def test_typing_indicators_off_keeps_only_the_pause(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=ANSWERS, typingIndicators=False)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "16", "typing") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
    actions = [c["json"].get("sender_action") for c in calls_for(emulator, "16")]
    assert actions == ["mark_seen", None]


async def test_a_retried_reply_resumes_after_the_parts_already_sent(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, fast_retries: None) -> None:
    add_bot(data, "shop", TOKEN_A, qna=ANSWERS)

    def second_part(body: Any) -> bool:
        return is_message(body) and not LONG.startswith(body["message"].get("text", "\0"))

    # Enough failures to exhaust the client's own retries: the pipeline retries the event later.
    emulator.fail_next(GraphClient().max_attempts, status=500, code=1200, when=second_part)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "17", "long") == 200
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 2, timeout=10)
    parts = texts(messages_with(emulator, TOKEN_A))
    assert len(parts) == 2 and " ".join(parts) == LONG
    first_part_attempts = [c for c in calls_for(emulator, "17") if is_message(c["json"])
                           and c["json"]["message"]["text"] == parts[0]]
    assert len(first_part_attempts) == 1, "the first part is not sent twice"


async def test_request_profile_attaches_the_user_profile(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    add_bot(data, "shop", TOKEN_A, qna=ANSWERS, requestProfile=True)
    spy = spy_on_bot_logic(data, "shop", tmp_path / "seen.jsonl")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "42", "hello") == 200
        assert await meta.say(PAGE_A, "42", "hello", mid="m_again") == 200
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 2)
        await wait_for(lambda: len(seen(spy)) == 2)
    for event in seen(spy):
        # The profile is one part of event.user, beside the user's id (and contact, when linked).
        assert event["user"]["id"] == "42"
        assert event["user"]["profile"] == {"first_name": "Ada", "last_name": "Lovelace", "locale": "en_GB",
                                            "timezone": 0}
    assert len(emulator.calls_to(r"/42$")) == 1, "the profile is cached for chatUserAuthDuration"


async def test_typing_and_message_delay_between_consecutive_replies(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=qna(("story", [{"type": "typing", "value": 150},
                                                      {"type": "text", "text": "once"},
                                                      {"type": "text", "text": "upon"}]),
                                           ("more", [{"type": "text", "text": "a time"}])),
            messageDelay=200)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "18", "story") == 200
        assert await meta.say(PAGE_A, "18", "more") == 200  # a second reply, to a second message
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 3)
    calls = [c for c in calls_for(emulator, "18") if c["json"].get("sender_action") != "mark_seen"]
    assert [c["json"].get("sender_action") or c["json"]["message"]["text"] for c in calls] == [
        "typing_on", "typing_off", "once", "upon", "a time"]
    assert calls[1]["time"] - calls[0]["time"] >= 0.15, "the typing indicator shows for the typing value"
    messages = calls[2:]
    for earlier, later in itertools.pairwise(messages):
        assert later["time"] - earlier["time"] >= 0.2, "messageDelay holds between replies too"


async def test_events_of_other_channels_are_not_ours() -> None:
    event = IOEvent(type="text", channel="webchat", direction="outgoing", botId="b", target="u",
                    payload={"type": "text", "text": "x"})
    assert await MessengerChannel().send(event, bot=None) is None  # type: ignore[arg-type]
