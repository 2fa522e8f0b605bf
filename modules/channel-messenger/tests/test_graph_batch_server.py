"""Graph API batch requests through a real server and the emulator: many users answered at once share batch
requests, each reply arrives once and in order, and a failing call fails only its own event."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import PAGE_A, TOKEN_A, FakeMeta, add_bot, edit_bot_config, serve, write_global
from observation_kit import outbox

from botpress_py.testing import wait_for

ROOT = r"/v[0-9.]+/$"
NEW_TOKEN = "EAA-token-page-a-regenerated"
ANSWERS = {"entries": [{"id": w, "questions": [w], "answers": [{"type": "text", "text": f"re {w}"}]}
                       for w in ("one", "two", "three")],
           "fallback": [{"type": "text", "text": "fallback"}]}
STALL = 1.5  # seconds the Page's first two Send API requests take: the replies made meanwhile wait together


def data_for(tmp_path: Path, emulator: GraphEmulator, **config: Any) -> Path:
    folder = tmp_path / "data"
    write_global(folder, emulator, **config)
    add_bot(folder, "shop", TOKEN_A, qna=ANSWERS)
    return folder


class Answers:
    """The emulator's accepted messages per user, in the order it answered them (its listeners run then)."""

    def __init__(self, emulator: GraphEmulator) -> None:
        self.by_user: dict[str, list[str]] = defaultdict(list)
        emulator.listeners.append(self._on_call)

    def _on_call(self, call: dict[str, Any]) -> None:
        body = call["json"] if isinstance(call["json"], dict) else {}
        if call["accepted"] and call["path"].endswith("/messages") and "message" in body:
            self.by_user[body["recipient"]["id"]].append(body["message"]["text"])

    def count(self) -> int:
        return sum(len(texts) for texts in self.by_user.values())






def recipient_is(psid: str) -> Any:
    return lambda body: isinstance(body, dict) and (body.get("recipient") or {}).get("id") == psid


async def say_all(meta: FakeMeta, psids: list[str], words: tuple[str, ...] = ("one",)) -> None:
    """Each user writes ``words`` (one delivery per user), all users at once."""
    async def one(psid: str) -> None:
        events = [GraphEmulator.user_message(PAGE_A, psid, w, f"m_{psid}_{n}") for n, w in enumerate(words)]
        status, _ = await meta.post(GraphEmulator.webhook_body(PAGE_A, events))
        assert status == 200

    await asyncio.gather(*(one(p) for p in psids))


async def stalled_then(meta: FakeMeta, emulator: GraphEmulator, first: list[str], then: list[str]) -> None:
    """``first`` users' replies go alone and stall; ``then`` users' replies, made meanwhile, wait to go together."""
    emulator.fail_next(2, passthrough=True, delay=STALL, path="/messages$")
    await say_all(meta, first)
    # Polled: the emulator's own wait_for looks again only once a request was answered, after the stall.
    await wait_for(lambda: len([c for c in emulator.calls if c["path"].endswith("/messages")]) >= 2, timeout=10)
    await say_all(meta, then)


async def test_many_users_answered_at_once_share_batch_requests_each_reply_once_and_in_order(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    answers = Answers(emulator)
    users = [str(3000 + n) for n in range(20)]
    emulator.fail_next(2, passthrough=True, delay=0.3, path="/messages$")  # a slow start: the replies pile up
    async with serve(data_for(tmp_path, emulator)) as server:
        await say_all(FakeMeta(http, server), users, ("one", "two", "three"))
        await emulator.wait_for(lambda e: answers.count() >= 60, timeout=20)
    assert answers.by_user == {psid: ["re one", "re two", "re three"] for psid in users}
    assert [b for b in emulator.batch_requests() if b["accepted"] and b["batch_size"] >= 2], "calls went together"
    for calls in emulator.batch_calls().values():
        recipients = [c["json"]["recipient"]["id"] for c in calls]
        assert len(recipients) == len(set(recipients))
    assert {c["json"]["sender_action"] for b in emulator.batch_calls().values() for c in b
            if "sender_action" in c["json"]} == {"mark_seen"}, "sender actions go in batches too"


async def test_a_call_refused_for_good_fails_only_its_event_while_its_batch_is_sent(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    answers = Answers(emulator)
    emulator.add_rule(status=400, code=551, message="This person isn't available right now.", path="/messages$",
                      when=recipient_is("3666"))
    others = [str(3100 + n) for n in range(8)]
    data = data_for(tmp_path, emulator, disabledActions=["mark_seen"])
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        await stalled_then(meta, emulator, others[:2], [*others[2:], "3666"])
        await emulator.wait_for(lambda e: answers.count() >= len(others), timeout=20)
        failed = await wait_for(lambda: [r for r in outbox(data) if r["status"] == "failed"], timeout=10)
    assert answers.by_user == {psid: ["re one"] for psid in others}
    assert [r["target"] for r in failed] == ["3666"] and "551" in failed[0]["error"]
    [refused] = [c for c in emulator.calls if c["path"].endswith("/messages") and recipient_is("3666")(c["json"])]
    siblings = emulator.batch_calls()[refused["batch"]]
    assert len(siblings) >= 2 and all(c["accepted"] for c in siblings if c is not refused), "it shared a batch"


async def test_a_rate_limited_call_in_a_batch_pauses_the_page_like_a_single_call(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    answers = Answers(emulator)
    emulator.fail_next(1, status=400, code=613, message="Calls to this api have exceeded the rate limit.",
                       path="/messages$", when=recipient_is("3613"), retry_after=1)
    users = [str(3200 + n) for n in range(6)]
    async with serve(data_for(tmp_path, emulator, disabledActions=["mark_seen"])) as server:
        await stalled_then(FakeMeta(http, server), emulator, users[:2], [*users[2:], "3613"])
        await emulator.wait_for(lambda e: answers.count() >= 7, timeout=20)
        async with http.get(f"{server.url}/metrics") as response:
            metrics = await response.text()
    assert answers.by_user == {psid: ["re one"] for psid in [*users, "3613"]}, "nothing lost, nothing twice"
    throttled = next(c for c in emulator.calls if c.get("fault"))
    assert "batch" in throttled and throttled["json"]["recipient"]["id"] == "3613"
    assert 'bp_messenger_send_paused_total{bot="shop"} 1.0' in metrics
    assert 'bp_messenger_graph_calls_total{bot="shop",code="613",kind="send"} 1.0' in metrics
    assert re.search(r'bp_messenger_graph_batches_total\{bot="shop"\} [1-9]', metrics)
    later = [c for c in emulator.calls if c["path"].endswith("/messages") and c["seq"] > throttled["seq"]
             and c["json"]["recipient"]["id"] == "3613"]
    assert later and later[0]["time"] - throttled["time"] >= 0.9, "the Page waited for Meta's hint"


async def test_a_whole_batch_lost_is_retried_and_delivered(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession, fast_retries: None) -> None:
    answers = Answers(emulator)
    emulator.fail_next(1, status=500, code=None, path=ROOT)  # an HTML error page for the whole batch request
    users = [str(3300 + n) for n in range(8)]
    async with serve(data_for(tmp_path, emulator, disabledActions=["mark_seen"])) as server:
        await stalled_then(FakeMeta(http, server), emulator, users[:2], users[2:])
        await emulator.wait_for(lambda e: answers.count() >= 8, timeout=20)
    assert answers.by_user == {psid: ["re one"] for psid in users}
    lost = emulator.batch_requests()[0]
    assert lost["fault"] and lost["batch_size"] >= 2


async def test_a_refused_token_marks_the_bot_and_holds_every_reply_of_the_batch(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    answers = Answers(emulator)
    users = [str(3400 + n) for n in range(6)]
    data = data_for(tmp_path, emulator, disabledActions=["mark_seen"])
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        emulator.replace_token(PAGE_A, NEW_TOKEN)  # Meta expires the token: every call of the batch gets 190
        await stalled_then(meta, emulator, users[:2], users[2:])
        status = await wait_for(lambda: _error_status(meta), timeout=10)
        assert "access token invalid since" in status["reason"] and TOKEN_A not in status["reason"]
        refused = await emulator.wait_for(lambda e: [b for b in e.batch_requests() if b.get("error")])
        assert refused[0]["error"]["code"] == 190 and refused[0]["batch_size"] >= 2
        async with http.get(f"{server.url}/metrics") as response:
            assert 'bp_messenger_token_refused_total{bot="shop"} 1.0' in await response.text()
        edit_bot_config(data, "shop", accessToken=NEW_TOKEN)  # the held replies go once the token is new
        await emulator.wait_for(lambda e: answers.count() >= 6, timeout=20)
    assert answers.by_user == {psid: ["re one"] for psid in users}


async def test_batching_off_sends_one_request_per_call(tmp_path: Path, emulator: GraphEmulator,
                                                       http: aiohttp.ClientSession) -> None:
    answers = Answers(emulator)
    users = [str(3500 + n) for n in range(10)]
    emulator.fail_next(2, passthrough=True, delay=0.3, path="/messages$")
    async with serve(data_for(tmp_path, emulator, graphBatching=False)) as server:
        await say_all(FakeMeta(http, server), users)
        await emulator.wait_for(lambda e: answers.count() >= 10, timeout=20)
    assert answers.by_user == {psid: ["re one"] for psid in users}
    assert emulator.batch_requests() == []


async def _error_status(meta: FakeMeta) -> dict[str, Any] | None:
    status = await meta.module_status("shop")
    return status if status.get("state") == "error" else None
