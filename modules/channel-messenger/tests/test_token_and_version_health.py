"""Token health: Meta refusing a Page's token mid-traffic shows in /status and /metrics, is logged once, and
what waited is delivered once the config carries a new token (a reply past its user's 24-hour window is
recorded as failed with the reason). Version health: a graphApiVersion past its date is an error in /status,
one close to it a note, with "today" set through BP_MESSENGER_TODAY."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import PAGE_A, TOKEN_A, FakeMeta, add_bot, edit_bot_config, messages_with, serve, write_global

from botpress_py.testing import wait_for

NEW_TOKEN = "EAA-token-page-a-regenerated"
ANSWERS = {"entries": [], "fallback": [{"type": "text", "text": "noted"}]}


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    add_bot(folder, "shop", TOKEN_A, qna=ANSWERS)
    return folder


async def metrics(http: aiohttp.ClientSession, server: object) -> str:
    async with http.get(f"{server.url}/metrics") as response:  # type: ignore[attr-defined]
        return await response.text()


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def replies_to(emulator: GraphEmulator, psid: str) -> list[dict]:
    return [m for m in messages_with(emulator, NEW_TOKEN) + messages_with(emulator, TOKEN_A)
            if m["recipient"]["id"] == psid]


async def test_a_token_refused_mid_traffic_holds_replies_until_the_config_has_a_new_one(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "70", "before") == 200
        await emulator.wait_for(lambda e: replies_to(e, "70"))
        assert sample(await metrics(http, server), "bp_messenger_token_valid", bot="shop") == 1.0

        # Meta expires the token: the next replies are refused with 190, the status says so.
        emulator.replace_token(PAGE_A, NEW_TOKEN)
        for n, psid in enumerate(["71", "72", "73", "71"]):
            assert await meta.say(PAGE_A, psid, f"during {n}", mid=f"m_during_{n}") == 200
        # A delivery Meta retried late: its user wrote 25 hours ago, so the reply can no longer be sent.
        late = GraphEmulator.user_message(PAGE_A, "74", "from yesterday", "m_late")
        late["timestamp"] = int((time.time() - 25 * 3600) * 1000)
        assert (await meta.post(GraphEmulator.webhook_body(PAGE_A, [late])))[0] == 200

        status = await wait_for(lambda: _error_status(meta), timeout=10)
        assert re.match(r"access token invalid since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: POST /me/messages failed: "
                        r"Invalid OAuth access token", status["reason"]), status
        assert TOKEN_A not in status["reason"] and NEW_TOKEN not in status["reason"]
        text = await metrics(http, server)
        assert sample(text, "bp_messenger_token_valid", bot="shop") == 0.0
        assert sample(text, "bp_messenger_token_refused_total", bot="shop") == 1.0
        assert (sample(text, "bp_messenger_graph_calls_total", bot="shop", kind="send", code="190") or 0) >= 1

        # Events are still stored, nothing was sent with the refused token, and the refusal was logged once.
        stored = await wait_for(lambda: _incoming(server, ["71", "72", "73", "74"]), timeout=10)
        assert len(stored) == 5
        refused_sends = [c for c in emulator.calls if c["path"].endswith("/messages") and not c["accepted"]]
        assert len(refused_sends) <= 3, "held replies make no Graph call"
        assert [r.getMessage() for r in caplog.records].count(
            next(r.getMessage() for r in caplog.records if "Meta refused the access token" in r.getMessage())) == 1

        # The operator puts the new token in the bot's file: the watcher remounts, what waited goes out.
        edit_bot_config(data, "shop", accessToken=NEW_TOKEN)
        await emulator.wait_for(lambda e: [len(replies_to(e, p)) for p in ("71", "72", "73")] == [2, 1, 1], timeout=15)
        assert await meta.module_status("shop") == {"state": "on"}
        assert sample(await metrics(http, server), "bp_messenger_token_valid", bot="shop") == 1.0

        failed = await wait_for(lambda: _failed_to(server, "74"), timeout=10)
        assert "24-hour messaging window" in str(failed[0])
        assert replies_to(emulator, "74") == []


async def _error_status(meta: FakeMeta) -> dict | None:
    status = await meta.module_status("shop")
    return status if status.get("state") == "error" else None


async def _incoming(server: object, users: list[str]) -> list[dict] | None:
    found = []
    for psid in users:
        found += [m for m in await server.storage.messages_for("shop", "messenger", psid)  # type: ignore[attr-defined]
                  if m["direction"] == "incoming"]
    return found if len(found) >= 5 else None


async def _failed_to(server: object, psid: str) -> list[dict] | None:
    rows = await server.storage.failed_events("outgoing", bot_id="shop")  # type: ignore[attr-defined]
    found = [r for r in rows if _target(r) == psid]
    return found or None


def _target(row: object) -> str:
    event = row.get("event") if isinstance(row, dict) else getattr(row, "event", None)
    if isinstance(event, dict):
        return str(event.get("target"))
    return str(getattr(event, "target", "") or (row.get("target") if isinstance(row, dict) else ""))


@pytest.mark.parametrize(("today", "state", "words"), [
    ("2026-11-30", "on", "graphApiVersion v21.0 expires on 2027-01-21, in 52 days"),
    ("2027-01-22", "error", "graphApiVersion v21.0 expired on 2027-01-21"),
])
async def test_a_version_near_or_past_its_date_shows_in_status(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        today: str, state: str, words: str) -> None:
    monkeypatch.setenv("BP_MESSENGER_TODAY", today)
    write_global(data, emulator, graphApiVersion="v21.0")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        status = await meta.module_status("shop")
        assert status["state"] == state and words in status["reason"], status
        assert 'set "graphApiVersion": "v27.0"' in status["reason"]
        health = sample(await metrics(http, server), "bp_messenger_graph_version_health", bot="shop")
        assert health == (2.0 if state == "error" else 1.0)
        # The channel still sends: Meta answers an expired version's calls with the oldest one available.
        assert await meta.say(PAGE_A, "80", "hello") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
        assert messages_with(emulator, TOKEN_A)[0]["recipient"]["id"] == "80"


async def test_the_default_version_is_current(data: Path, emulator: GraphEmulator,
                                              http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.module_status("shop") == {"state": "on"}
        assert await meta.say(PAGE_A, "81", "hello") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
        assert any(c["path"].startswith("/v27.0/") for c in emulator.calls)
        assert sample(await metrics(http, server), "bp_messenger_graph_version_health", bot="shop") == 0.0


async def test_a_token_refused_at_mount_keeps_the_page_and_holds_replies(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    async with serve(data) as server:  # the first run learns the bot's Page (GET /me) and remembers it
        assert await FakeMeta(http, server).module_status("shop") == {"state": "on"}
    emulator.replace_token(PAGE_A, NEW_TOKEN)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        status = await meta.module_status("shop")
        assert status["state"] == "error" and status["reason"].startswith("access token invalid since "), status
        assert "GET /me failed" in status["reason"]
        assert await meta.say(PAGE_A, "90", "anyone there?") == 200, "the Page's events are still taken"
        await wait_for(lambda: _incoming_of(server, "90"), timeout=10)
        edit_bot_config(data, "shop", accessToken=NEW_TOKEN)
        await emulator.wait_for(lambda e: replies_to(e, "90"), timeout=15)
        assert await meta.module_status("shop") == {"state": "on"}


async def _incoming_of(server: object, psid: str) -> list[dict] | None:
    rows = await server.storage.messages_for("shop", "messenger", psid)  # type: ignore[attr-defined]
    return [m for m in rows if m["direction"] == "incoming"] or None


async def test_graph_calls_and_retries_are_counted_by_kind_and_code(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, fast_retries: None) -> None:
    emulator.fail_next(1, status=500, code=1200, path="/messages$", has="message")
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await meta.say(PAGE_A, "91", "hello") == 200
        await emulator.wait_for(lambda e: replies_to(e, "91"))
        text = await wait_for(lambda: _with_retry(http, server), timeout=5)
    assert sample(text, "bp_messenger_graph_calls_total", bot="shop", kind="send", code="1200") == 1.0
    assert (sample(text, "bp_messenger_graph_calls_total", bot="shop", kind="send", code="ok") or 0) >= 1
    assert sample(text, "bp_messenger_graph_calls_total", bot="shop", kind="me", code="ok") == 1.0
    assert TOKEN_A not in text and "91" not in re.findall(r'bot="[^"]*"', text)


async def _with_retry(http: aiohttp.ClientSession, server: object) -> str | None:
    text = await metrics(http, server)
    return text if sample(text, "bp_messenger_graph_retries_total", bot="shop", kind="send") == 1.0 else None
