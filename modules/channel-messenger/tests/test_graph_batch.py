"""Graph API batch requests (graph_batch.py) against the emulator: a busy Page's Send API calls go together,
each caller gets exactly its own answer or error, failures are split per call, a user's calls keep their order."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from channel_messenger.cli.emulator import call_line
from channel_messenger.emulator import GraphEmulator
from channel_messenger.graph_batch import form_body
from channel_messenger.graph_client import GraphApiError, GraphClient, PageGraph, appsecret_proof
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botpress_py.testing import wait_for

TOKEN = "EAA-batch-token-value"
SECRET = "batch-app-secret-value"
PAGE = "1001"
ROOT = r"/v[0-9.]+/$"  # the path of a batch request, as the emulator records it


@pytest.fixture
async def emu() -> AsyncIterator[GraphEmulator]:
    async with GraphEmulator(pages={PAGE: {"token": TOKEN, "name": "P"}}, app_secret=SECRET) as emulator:
        yield emulator


@pytest.fixture
async def client() -> AsyncIterator[GraphClient]:
    graph = GraphClient(base_delay=0.001, max_delay=0.005, timeout=5.0, max_attempts=4)
    yield graph
    await graph.close()


def page(client: GraphClient, emu: GraphEmulator, *, batching: bool = True, token: str = TOKEN) -> PageGraph:
    return client.page(api_url=emu.url, version="v27.0", access_token=token, app_secret=SECRET, batching=batching,
                       bot_id="shop")


def text(psid: str, words: str) -> dict[str, Any]:
    return {"recipient": {"id": psid}, "messaging_type": "RESPONSE", "message": {"text": words}}






def delivered(emu: GraphEmulator) -> dict[str, list[str]]:
    """Each recipient's accepted message texts, in the order the emulator took them."""
    found: dict[str, list[str]] = defaultdict(list)
    for body in emu.sent_messages:
        found[body["recipient"]["id"]].append(body["message"]["text"])
    return found


async def send_all(graph: PageGraph, bodies: list[dict[str, Any]]) -> list[dict[str, Any] | BaseException]:
    return await asyncio.gather(*(graph.send(b) for b in bodies), return_exceptions=True)


def recipient_is(psid: str) -> Any:
    return lambda body: isinstance(body, dict) and (body.get("recipient") or {}).get("id") == psid


async def test_a_busy_page_sends_its_calls_together_and_each_caller_gets_its_own_answer(
        client: GraphClient, emu: GraphEmulator) -> None:
    bodies = [text(str(500 + n), f"hello {n}") for n in range(40)]
    answers = await send_all(page(client, emu), bodies)
    assert [a["recipient_id"] for a in answers] == [b["recipient"]["id"] for b in bodies]  # type: ignore[index]
    assert len({a["message_id"] for a in answers}) == 40  # type: ignore[index]
    assert {psid: texts for psid, texts in delivered(emu).items()} == {str(500 + n): [f"hello {n}"] for n in range(40)}
    # Two calls went at once, alone; the 38 made while they were in flight went together in one request.
    assert [b["batch_size"] for b in emu.batch_requests()] == [38]
    assert len([c for c in emu.calls if c["path"].endswith("/messages") and "batch" not in c]) == 2
    [carried] = emu.batch_calls().values()
    assert all(c["query"]["access_token"] == TOKEN and c["page"] == PAGE and c["accepted"] for c in carried)
    assert client.batcher.sizes == {38: 1} and not client.batcher._lanes, "an idle Page's lane is dropped"


async def test_a_quiet_page_and_batching_off_send_one_request_per_call(client: GraphClient, emu: GraphEmulator) -> None:
    quiet = page(client, emu)
    for n in range(3):
        assert (await quiet.send(text("7", f"one by one {n}")))["recipient_id"] == "7"
    await send_all(page(client, emu, batching=False), [text(str(600 + n), "off") for n in range(30)])
    assert emu.batch_requests() == [] and len(emu.sent_messages) == 33


async def test_a_users_calls_keep_their_order_and_never_share_a_batch(client: GraphClient, emu: GraphEmulator) -> None:
    users, per_user = [str(700 + n) for n in range(6)], 5
    # The first two calls (to 700 and 701) are slow, the second much slower: when the first is answered, the
    # next request must not carry 701's next call, which Meta would then take before the one still in flight.
    emu.fail_next(1, passthrough=True, delay=0.05, path="/messages$")
    emu.fail_next(1, passthrough=True, delay=0.5, path="/messages$")
    answered: dict[str, list[str]] = defaultdict(list)  # in the order the emulator answered them
    emu.listeners.append(lambda call: call["accepted"] and "message" in (call["json"] or {}) and answered[
        call["json"]["recipient"]["id"]].append(call["json"]["message"]["text"]))
    bodies = [text(psid, f"{psid}-{k}") for k in range(per_user) for psid in users]
    answers = await send_all(page(client, emu), bodies)
    assert not [a for a in answers if isinstance(a, BaseException)]
    assert answered == delivered(emu) == {psid: [f"{psid}-{k}" for k in range(per_user)] for psid in users}
    assert emu.batch_requests(), "the Page was busy: some calls went together"
    for carried in emu.batch_calls().values():
        recipients = [c["json"]["recipient"]["id"] for c in carried]
        assert len(recipients) == len(set(recipients)), "Meta runs a batch's calls in parallel: one per user"
    # A user's next call went only in a request made after the previous one was answered.
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in emu.calls:
        if call["path"].endswith("/messages"):
            by_user[call["json"]["recipient"]["id"]].append(call)
    request_of = {c["seq"]: c.get("batch", c["seq"]) for c in emu.calls}
    for calls in by_user.values():
        requests = [request_of[c["seq"]] for c in calls]
        assert requests == sorted(requests) and len(set(requests)) == len(requests)


async def test_an_item_refused_for_good_fails_only_its_own_call(client: GraphClient, emu: GraphEmulator) -> None:
    emu.add_rule(status=400, code=551, message="This person isn't available right now.", path="/messages$",
                 when=recipient_is("666"))
    bodies = [text(str(800 + n), "fine") for n in range(10)] + [text("666", "blocked")]
    answers = await send_all(page(client, emu), bodies)
    error = answers[-1]
    assert isinstance(error, GraphApiError) and error.permanent and error.code == 551
    assert "POST /me/messages failed" in str(error)
    assert not [a for a in answers[:-1] if isinstance(a, BaseException)]
    assert sorted(delivered(emu)) == sorted(str(800 + n) for n in range(10))
    [refused] = [c for c in emu.calls if c["path"].endswith("/messages") and c["json"]["recipient"]["id"] == "666"]
    assert "batch" in refused, "it went in a batch, and was not sent again"


async def test_a_rate_limited_item_is_not_retried_and_carries_metas_hint(client: GraphClient,
                                                                         emu: GraphEmulator) -> None:
    emu.fail_next(1, status=400, code=613, message="Calls to this api have exceeded the rate limit.",
                  path="/messages$", when=recipient_is("613"), retry_after=7)
    answers = await send_all(page(client, emu), [text(str(900 + n), "fine") for n in range(5)] + [text("613", "x")])
    error = answers[-1]
    assert isinstance(error, GraphApiError) and error.is_rate_limit and not error.permanent
    assert error.retry_after == 7.0
    assert len([c for c in emu.calls if c["path"].endswith("/messages") and c["json"]["recipient"]["id"] == "613"]) == 1
    assert len(delivered(emu)) == 5


async def test_a_whole_batch_lost_is_retried_call_by_call_and_nothing_secret_is_logged(
        client: GraphClient, emu: GraphEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[tuple[str, str, str, bool]] = []
    client.observer = lambda *observation: seen.append(observation)
    emu.fail_next(1, status=500, code=1200, path=ROOT)
    bodies = [text(str(1000 + n), f"again {n}") for n in range(12)]
    answers = await send_all(page(client, emu), bodies)
    assert not [a for a in answers if isinstance(a, BaseException)]
    assert delivered(emu) == {str(1000 + n): [f"again {n}"] for n in range(12)}, "each once"
    [lost] = emu.batch_requests()
    assert lost["fault"] and lost["batch_size"] == 10 and lost["seq"] not in emu.batch_calls()
    # One observation per call and attempt, as for plain calls: 2 plain ok, 10 failed, 10 retried ok.
    assert sorted(seen) == sorted([("shop", "send", "ok", False)] * 2 + [("shop", "send", "1200", False)] * 10
                                  + [("shop", "send", "ok", True)] * 10)
    logged = caplog.text
    assert logged.count("POST /me/messages failed: Temporary send message failure") == 10
    for secret in (TOKEN, SECRET, appsecret_proof(SECRET, TOKEN)):
        assert secret not in logged


async def test_a_call_meta_did_not_complete_is_retried_alone(client: GraphClient, emu: GraphEmulator) -> None:
    emu.fail_next(1, disconnect=True, path="/messages$", when=recipient_is("1105"))
    answers = await send_all(page(client, emu), [text(str(1100 + n), f"n{n}") for n in range(8)])
    assert not [a for a in answers if isinstance(a, BaseException)]
    attempts = [c for c in emu.calls if c["path"].endswith("/messages") and c["json"]["recipient"]["id"] == "1105"]
    assert [("batch" in c, c["accepted"]) for c in attempts] == [(True, False), (False, True)]
    assert delivered(emu)["1105"] == ["n5"]


async def test_a_refused_token_fails_every_call_of_the_batch_as_a_token_error(client: GraphClient,
                                                                              emu: GraphEmulator) -> None:
    answers = await send_all(page(client, emu, token="EAA-expired"), [text(str(1200 + n), "x") for n in range(9)])
    assert all(isinstance(a, GraphApiError) and a.is_auth_error and a.permanent for a in answers)
    [refused] = emu.batch_requests()
    assert refused["batch_size"] == 7 and refused["error"]["code"] == 190 and emu.sent_messages == []
    assert len(emu.calls) == 3, "two plain calls and one batch request, none retried"


async def test_closing_the_client_cancels_a_stalled_batch_and_its_callers_do_not_hang(
        client: GraphClient, emu: GraphEmulator) -> None:
    emu.fail_next(1, passthrough=True, delay=30, path=ROOT)  # the batch request would take 30 s
    sends = asyncio.gather(*(page(client, emu).send(text(str(1300 + n), "x")) for n in range(6)),
                           return_exceptions=True)
    await wait_for(lambda: emu.batch_requests())  # polled: the emulator's wait_for looks again only once it answered
    await client.close()
    answers = await asyncio.wait_for(sends, 10)
    # The cancelled batch's calls were retried alone (the pool opens again on use), none lost, none twice.
    assert not [a for a in answers if isinstance(a, BaseException)]
    assert sorted(delivered(emu)) == [str(1300 + n) for n in range(6)]
    assert not client.batcher._tasks


async def test_the_emulator_answers_batches_as_meta_does(emu: GraphEmulator) -> None:
    """Per-item tokens are checked, a null marks a call that did not complete, more than 50 calls are refused."""
    proof = appsecret_proof(SECRET, TOKEN)
    items = [{"method": "POST", "relative_url": "me/messages", "body": form_body(text("1", "a"))},
             {"method": "POST", "relative_url": "me/messages", "body": form_body(text("2", "b")) + "&access_token=bad"},
             {"method": "GET", "relative_url": "me?fields=id,name"},
             {"method": "POST", "relative_url": "me/messages", "body": form_body(text("3", "c"))}]
    emu.fail_next(1, disconnect=True, path="/messages$", when=recipient_is("3"))
    async with aiohttp.ClientSession() as http:
        async def batch(calls: list[dict[str, Any]], token: str = TOKEN) -> tuple[int, Any]:
            form = {"access_token": token, "appsecret_proof": proof, "include_headers": "false",
                    "batch": json.dumps(calls)}
            async with http.post(f"{emu.url}/v27.0/", data=form) as response:
                return response.status, await response.json()

        status, answer = await batch(items)
        assert status == 200 and len(answer) == 4
        assert answer[0]["code"] == 200 and '"recipient_id": "1"' in answer[0]["body"]
        assert answer[1]["code"] == 400 and '"code": 190' in answer[1]["body"]
        assert answer[2] == {"code": 200, "body": '{"id": "1001", "name": "P"}'}
        assert answer[3] is None
        assert emu.sent == [text("1", "a")]
        status, answer = await batch(items[:1] * 51)
        assert status == 400 and answer["error"]["code"] == 100 and "Maximum batch size is 50" in \
            answer["error"]["message"]
        status, answer = await batch(items[:1], token="bad")
        assert status == 400 and answer["error"]["code"] == 190
    assert len(emu.sent) == 1, "a refused batch runs none of its calls"
    assert "POST /v27.0/  200  batch request of 4 calls" in call_line(emu.batch_requests()[0])


# -- a property over random mixes ------------------------------------------------------------------------------
FATES = ("ok", "ok", "ok", "refused", "throttled", "transient", "lost")  # what the emulator does with a call


def text_is(words: str) -> Any:
    return lambda body: isinstance(body, dict) and (body.get("message") or {}).get("text") == words


def plan(emu: GraphEmulator, words: str, fate: str) -> None:
    where = {"path": "/messages$", "when": text_is(words)}
    if fate == "refused":
        emu.add_rule(status=400, code=551, message="This person isn't available right now.", **where)
    elif fate == "throttled":
        emu.add_rule(status=400, code=613, message="Calls to this api have exceeded the rate limit.", **where)
    elif fate == "transient":
        emu.fail_next(1, status=500, code=1200, **where)
    elif fate == "lost":  # dropped: a plain call's connection closes, a batch item comes back null
        emu.fail_next(1, disconnect=True, **where)


async def random_mix(calls: list[tuple[int, str]], whole_batch_lost: bool) -> None:
    async with GraphEmulator(pages={PAGE: {"token": TOKEN, "name": "P"}}, app_secret=SECRET) as emu:
        graph = GraphClient(base_delay=0.001, max_delay=0.005, timeout=5.0, max_attempts=4)
        answered: dict[str, list[str]] = defaultdict(list)
        emu.listeners.append(lambda call: call["accepted"] and "message" in (call["json"] or {}) and answered[
            call["json"]["recipient"]["id"]].append(call["json"]["message"]["text"]))
        bodies = [text(f"9{user}", f"call {n}") for n, (user, _) in enumerate(calls)]
        for n, (_, fate) in enumerate(calls):
            plan(emu, f"call {n}", fate)
        if whole_batch_lost:
            emu.fail_next(1, status=503, code=None, path=ROOT)
        try:
            outcomes = await send_all(page(graph, emu), bodies)
        finally:
            await graph.close()
    expected: dict[str, list[str]] = defaultdict(list)
    for n, ((user, fate), outcome) in enumerate(zip(calls, outcomes, strict=True)):
        if fate == "refused":
            assert isinstance(outcome, GraphApiError) and outcome.code == 551 and outcome.permanent
        elif fate == "throttled":
            assert isinstance(outcome, GraphApiError) and outcome.is_rate_limit
        else:  # sent, once, with its own answer, whatever failed first
            assert isinstance(outcome, dict) and outcome["recipient_id"] == f"9{user}", (fate, outcome)
            expected[f"9{user}"].append(f"call {n}")
    assert answered == expected, "each sent call accepted once, each user's in the order they were made"
    for carried in emu.batch_calls().values():
        recipients = [c["json"]["recipient"]["id"] for c in carried]
        assert len(recipients) == len(set(recipients))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(FATES)), min_size=1, max_size=40),
       whole_batch_lost=st.booleans())
def test_any_mix_of_failures_gives_each_caller_its_own_outcome(calls: list[tuple[int, str]],
                                                               whole_batch_lost: bool) -> None:
    asyncio.run(random_mix(calls, whole_batch_lost))
