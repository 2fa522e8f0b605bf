"""What the webhook accepts: a malformed event is skipped and logged, the rest of its delivery is stored and
answered; only a body that cannot be read at all is refused (400), never a 5xx; repeated refusals are
logged once a minute, never with a user's text."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator
from channel_messenger.validation import DROPPED
from messenger_testkit import (
    PAGE_A,
    SECRET,
    TOKEN_A,
    FakeMeta,
    add_bot,
    messages_with,
    serve,
    user_message,
    write_global,
)
from observation_kit import sqlite_rows

from botpress_py.sdk import now_ms
from botpress_py.testing import wait_for

SECRET_TEXT = "my-secret-text-77"


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator)
    add_bot(folder, "shop", TOKEN_A)
    return folder


def good(psid: str, tag: str = "") -> dict[str, Any]:
    return user_message(PAGE_A, psid, "hello", f"m_good_{psid}{tag}")


def nested(depth: int) -> str:
    """JSON text nested ``depth`` levels deep ({"k": [{"k": [...]}]}), built as text: json.dumps would recurse."""
    opening = "".join('{"k": ' if level % 2 == 0 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return opening + '"x"' + closing


def answered(emulator: GraphEmulator) -> list[str]:
    return sorted(m["recipient"]["id"] for m in messages_with(emulator, TOKEN_A))


def pending(data: Path) -> int:
    return sqlite_rows(data, "SELECT COUNT(*) FROM inbox WHERE status = 'pending'")[0][0]


MALFORMED: list[dict[str, Any]] = [
    # values that once failed the shared transaction of every event stored with them
    {"sender": {"id": "9001"}, "recipient": {"id": PAGE_A}, "timestamp": 10**30,
     "message": {"mid": "m_huge_ts", "text": "hello"}},
    {"sender": {"id": "9002"}, "recipient": {"id": PAGE_A}, "timestamp": 1,
     "postback": {"mid": ["m", "list"], "payload": "GET_STARTED"}},
    {"sender": {"id": "9003"}, "recipient": {"id": PAGE_A}, "postback": {"mid": 10**30, "payload": "X"}},
    # shapes that once made the whole POST answer 500
    {"sender": "9004", "recipient": {"id": PAGE_A}, "message": {"mid": "m_s", "text": SECRET_TEXT}},
    {"sender": {"id": "9005"}, "recipient": "page", "message": {"mid": "m_r", "text": SECRET_TEXT}},
    {"sender": {"id": "9006"}, "recipient": {"id": PAGE_A},
     "message": {"mid": "m_loc", "attachments": [{"type": "location", "payload": {"coordinates": "48.8,2.3"}}]}},
    {"sender": {"id": "9007"}, "recipient": {"id": PAGE_A}, "message": ["not", "an", "object"]},
    {"sender": {"id": [1, 2]}, "recipient": {"id": PAGE_A}, "message": {"mid": "m_l", "text": SECRET_TEXT}},
    {"sender": {"id": 1.5}, "recipient": {"id": PAGE_A}, "message": {"mid": "m_f", "text": "x"}},
    {"sender": {"id": "9008"}, "recipient": {"id": PAGE_A}, "message": {"mid": "m_t", "text": {"a": 1}}},
    {"sender": {"id": "9009"}, "recipient": {"id": PAGE_A}, "message": {"mid": "m_a", "attachments": "x"}},
    {"sender": {"id": "9010"}, "recipient": {"id": PAGE_A},
     "message": {"mid": "m_q", "text": "x", "quick_reply": {"payload": {"deep": True}}}},
    {"sender": {"id": "9011"}, "recipient": {"id": PAGE_A}, "postback": {"payload": "p" * 1001}},
    "not an event",
    None,
]


async def test_malformed_events_are_skipped_and_the_rest_of_the_delivery_is_answered(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="botpress_py")
    goods = [good(str(8000 + i)) for i in range(20)]
    mixed = [x for pair in zip(goods, MALFORMED, strict=False) for x in pair] + goods[len(MALFORMED):]
    body = {"object": "page", "entry": [
        {"id": PAGE_A, "messaging": mixed},
        {"id": PAGE_A, "standby": "not a list"},
        {"id": ["not", "an", "id"], "messaging": [good("8999")]},
        "not an entry",
    ]}
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert (await meta.post(body))[0] == 200
        await emulator.wait_for(lambda e: len(answered(e)) >= 21)
        await wait_for(lambda: pending(data) == 0)
        assert (await meta.status())["status"] == "ok"
    assert answered(emulator) == [*sorted(str(8000 + i) for i in range(20)), "9001"], \
        "the good events, and the one whose timestamp was replaced by the receive time"
    stored = {row[0]: row[1] for row in sqlite_rows(
        data, "SELECT user_id, event FROM inbox WHERE user_id IN ('9001', '9006')")}
    assert '"metaTimestamp": 1e+30' in stored["9001"] or '"metaTimestamp":1e+30' in stored["9001"]
    assert '"latitude": null' in stored["9006"] or '"latitude":null' in stored["9006"], \
        "a location whose coordinates are not numbers is kept, without them (qna does not answer locations)"
    logged = [r for r in caplog.records if "skipped" in r.getMessage() and "page" in r.getMessage()]
    assert logged and all(r.levelno == logging.WARNING for r in logged)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET_TEXT not in text, "a skipped event's text is never logged"
    for reason in ("sender: expected an object, got a string", "postback.mid: expected a message id",
                   "message.quick_reply.payload: expected a string", "entry.standby: expected a list"):
        assert reason in text, reason


async def test_a_body_too_deep_is_refused_and_a_deep_attachment_is_kept_cut(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    deep_attachment = {"sender": {"id": "8100"}, "recipient": {"id": PAGE_A}, "timestamp": now_ms(),
                       "message": {"mid": "m_deep", "attachments": [{"type": "template", "payload": "DEEP900"}]}}
    unknown = {"sender": {"id": "8101"}, "recipient": {"id": PAGE_A}, "brand_new": "DEEP950"}
    body = {"object": "page", "entry": [{"id": PAGE_A, "messaging": [deep_attachment, unknown, good("8102")]}]}
    raw = json.dumps(body).replace('"DEEP900"', nested(900)).replace('"DEEP950"', nested(950))
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        status, text = await meta.post(None, raw=b"[" * 10_000 + b"]" * 10_000)
        assert (status, text) == (400, "body nested deeper than 1024 levels")
        assert (await meta.post(None, raw=raw.encode()))[0] == 200
        await emulator.wait_for(lambda e: "8102" in answered(e))
        await wait_for(lambda: pending(data) == 0)
        history = await server.storage.messages_for("shop", "messenger", "8100")
        assert [m["type"] for m in history] == ["attachment"], "stored, processed and recorded"
        kept = history[0]["payload"]["raw"]
        depth = 0
        while isinstance(kept, dict | list) and depth < 100:
            kept = (kept.get("payload") or kept.get("k")) if isinstance(kept, dict) else kept[0]
            depth += 1
        assert kept == DROPPED and depth < 20, "what is nested past the bound is replaced by a marker"
        assert (await server.storage.messages_for("shop", "messenger", "8101"))[0]["type"] == "unknown"


async def test_lone_surrogates_nul_and_huge_numbers_are_stored_cleaned(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    raw = (b'{"object": "page", "entry": [{"id": "' + PAGE_A.encode() + b'", "messaging": [{"sender": {"id": "8200"},'
           b' "recipient": {"id": "' + PAGE_A.encode() + b'"}, "timestamp": 1e400, "message": {"mid": "m_odd",'
           b' "text": "a\\u0000b\\ud800c\\udfff\\ud83d\\ude00"}}, {"sender": {"id": "8201"}, "recipient": {"id": "'
           + PAGE_A.encode() + b'"}, "brand_new": {"n": 1' + b"0" * 400 + b'}}]}]}')
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert (await meta.post(None, raw=raw))[0] == 200
        await emulator.wait_for(lambda e: "8200" in answered(e))
        await wait_for(lambda: pending(data) == 0)
        [event] = [m for m in await server.storage.messages_for("shop", "messenger", "8200")
                   if m["direction"] == "incoming"]
        assert event["payload"]["text"] == "a\ufffdb\ufffdc\ufffd\U0001f600"
        assert "metaTimestamp" not in event["flags"], "an infinite timestamp is not kept"
        [other] = await server.storage.messages_for("shop", "messenger", "8201")
        assert other["payload"]["raw"]["brand_new"]["n"] == "1" + "0" * 400, "a 401-digit number: kept as its digits"


async def test_refusals_are_logged_once_a_minute_not_per_request(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="botpress_py")
    body = GraphEmulator.webhook_body(PAGE_A, [good("8300")])
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        for _ in range(30):
            assert (await meta.post(body, secret="not-the-app-secret"))[0] == 403
            assert (await meta.post(body, secret=None))[0] == 403
            assert (await meta.post(None, raw=b"{not json"))[0] == 400
        malformed = {"object": "page", "entry": [{"id": PAGE_A, "messaging": [{"sender": "x"}] * 30}]}
        assert (await meta.post(malformed))[0] == 200
    def lines(needle: str) -> int:
        return sum(needle in r.getMessage() for r in caplog.records)
    assert lines("invalid signature") == 1
    assert lines("no X-Hub-Signature-256 header") == 1
    assert lines("body not JSON") == 1
    assert lines("Webhook event of page") == 1
    assert SECRET not in "\n".join(r.getMessage() for r in caplog.records)
