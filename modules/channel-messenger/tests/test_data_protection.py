"""Data protection (masked texts in storage and logs) and the channel's session timeout."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import (
    PAGE_A,
    PAGE_B,
    TOKEN_A,
    TOKEN_B,
    FakeMeta,
    add_bot,
    messages_with,
    serve,
    texts,
    write_global,
)
from observation_kit import all_stored_text, api, event_at, post_events

from botpress_py.sdk import now_ms
from botpress_py.testing import wait_for

SECRETS = ("zebracard", "SECRET-REPLY-77", "SECRETCHOICE", "NOTIFY-SECRET-55", "ECHO-SECRET-3")
QNA = {
    "entries": [
        {"id": "card", "questions": ["my card is zebracard"],
         "answers": [{"type": "single-choice", "text": "Noted SECRET-REPLY-77",
                      "choices": [{"title": "SECRETCHOICE option that is long", "value": "OK"}]}]},
        {"id": "hello", "questions": ["hello"], "answers": [{"type": "text", "text": "hi"}]},
    ],
    "welcomeBack": [{"type": "text", "text": "Welcome back!"}],
    "fallback": [{"type": "text", "text": "fallback"}],
}


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    return folder


async def test_masking_keeps_message_text_out_of_storage_and_logs(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA, maskIncomingMessages=True, maskOutgoingMessages=True)
    caplog.set_level(logging.DEBUG, logger="botpress_py")  # the server and every module, at DEBUG
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "70", "my card is zebracard") == 200
        [reply] = await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
        assert reply["message"]["text"] == "Noted SECRET-REPLY-77", "the bot saw and answered the real text"
        echo = {"sender": {"id": PAGE_A}, "recipient": {"id": "70"}, "timestamp": now_ms(),
                "message": {"mid": "m_echo", "is_echo": True, "app_id": 1, "text": "ECHO-SECRET-3"}}
        assert await post_events(meta, PAGE_A, [echo]) == 200
        status, _ = await api(http, server, "shop", "notify",
                              {"userId": "70", "payload": {"type": "text", "text": "NOTIFY-SECRET-55"}})
        assert status == 202
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 2)

        async def all_recorded() -> list:
            found = await server.storage.messages_for("shop", "messenger", "70")
            return found if len(found) == 4 else []

        history = await wait_for(all_recorded)
        assert [m["payload"].get("text") for m in history] == ["***"] * 4
        assert history[1]["payload"]["choices"] == [{"title": "***", "value": "***"}], "structure stays"
    stored = all_stored_text(data)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in SECRETS:
        assert secret not in stored, secret
        assert secret not in logged, secret
    assert "limit(s) reshaped the message" in logged, "rendering notes are counted, not quoted"


async def test_without_masking_the_text_is_stored(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "71", "my card is zebracard") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
    stored = all_stored_text(data)
    assert "zebracard" in stored and "SECRET-REPLY-77" in stored


async def test_session_timeout_of_the_channel_wins_over_the_bots(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA, sessionTimeout="5m")
    add_bot(data, "help", TOKEN_B, qna=QNA)  # the bot's own sessionTimeout: 30m by default
    # Meta's clock an hour ahead of the replies' (as in the core's session test), within the day a timestamp
    # may be ahead before the channel takes the receive time instead.
    base = now_ms() + 3_600_000
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        for page, user in ((PAGE_A, "72"), (PAGE_B, "73")):
            assert await post_events(meta, page, [event_at(page, user, "hello", f"m1-{user}", base)]) == 200
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 1 and len(messages_with(e, TOKEN_B)) == 1)
        ten_minutes_later = base + 600_000
        for page, user in ((PAGE_A, "72"), (PAGE_B, "73")):
            assert await post_events(meta, page, [event_at(page, user, "hello", f"m2-{user}",
                                                           ten_minutes_later)]) == 200
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 3 and len(messages_with(e, TOKEN_B)) == 2)
        stored = await server.storage.messages_for("shop", "messenger", "72")
        assert stored[0]["flags"]["sessionTimeout"] == 300
    assert texts(messages_with(emulator, TOKEN_A)) == ["hi", "Welcome back!", "hi"]
    assert texts(messages_with(emulator, TOKEN_B)) == ["hi", "hi"]


async def test_a_proactive_message_from_any_module_is_stored_encrypted_until_sent(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    """Not only replies and notify messages: a message any module sends a Messenger user with bot.send is
    flagged by the channel before it is first stored, so while the Graph API refuses it, storage holds it
    encrypted, and once sent, masked."""
    from botpress_py.sdk import IOEvent

    add_bot(data, "shop", TOKEN_A, maskOutgoingMessages=True)
    async with serve(data) as server:
        rule = emulator.add_rule(status=500, code=1200, when=lambda body: "message" in body)
        bot = server.module_contexts["qna"].get_bot("shop")  # another module than the channel
        await bot.send([IOEvent(type="text", channel="messenger", direction="outgoing", botId="shop", target="71",
                                threadId=PAGE_A, payload={"type": "text", "text": "PROACTIVE-SECRET-9"})])
        # bot.send returns once the message is stored: the Graph API refuses it, so it waits for a retry.
        assert "PROACTIVE-SECRET-9" not in all_stored_text(data), "stored encrypted"
        emulator.remove_rule(rule)
        [sent] = await emulator.wait_for(lambda e: messages_with(e, TOKEN_A), timeout=15)
        assert sent["message"]["text"] == "PROACTIVE-SECRET-9"
        await wait_for(lambda: "***" in all_stored_text(data), 5)
        assert "PROACTIVE-SECRET-9" not in all_stored_text(data)
