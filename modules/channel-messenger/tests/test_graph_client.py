"""GraphClient against the emulator: proof, retries on transient errors only, secrets never logged."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator

import pytest
from channel_messenger.emulator import GraphEmulator
from channel_messenger.graph_client import GraphApiError, GraphClient, PageGraph, appsecret_proof, is_transient

TOKEN = "EAA-secret-token-value"
SECRET = "app-secret-value-123"
PAGE = "1001"
BODY = {"recipient": {"id": "42"}, "messaging_type": "RESPONSE", "message": {"text": "hi"}}


@pytest.fixture
async def emu() -> AsyncIterator[GraphEmulator]:
    async with GraphEmulator(pages={PAGE: {"token": TOKEN, "name": "P"}}, app_secret=SECRET) as emulator:
        yield emulator


@pytest.fixture
async def client() -> AsyncIterator[GraphClient]:
    graph = GraphClient(base_delay=0.001, max_delay=0.005, timeout=2.0, max_attempts=4)
    yield graph
    await graph.close()


def page(client: GraphClient, emu: GraphEmulator, token: str = TOKEN, secret: str = SECRET) -> PageGraph:
    return client.page(api_url=emu.url, version="v25.0", access_token=token, app_secret=secret)


def message_calls(emu: GraphEmulator) -> int:
    return len(emu.calls_to(r"/me/messages$"))


def test_appsecret_proof_is_hmac_sha256_hex() -> None:
    expected = hmac.new(SECRET.encode(), TOKEN.encode(), hashlib.sha256).hexdigest()
    assert appsecret_proof(SECRET, TOKEN) == expected


async def test_send_carries_token_proof_and_version(client: GraphClient, emu: GraphEmulator) -> None:
    answer = await page(client, emu).send(BODY)
    assert answer["recipient_id"] == "42" and answer["message_id"].startswith("m_")
    call = emu.calls[-1]
    assert call["path"] == "/v25.0/me/messages"
    assert call["query"] == {"access_token": TOKEN, "appsecret_proof": appsecret_proof(SECRET, TOKEN)}
    assert call["json"] == BODY


async def test_wrong_secret_gives_a_permanent_error(client: GraphClient, emu: GraphEmulator) -> None:
    with pytest.raises(GraphApiError) as info:
        await page(client, emu, secret="not-the-secret").send(BODY)
    assert info.value.permanent and info.value.code == 100
    assert message_calls(emu) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, 1200), (500, 2), (503, None), (502, 1)],
)
async def test_transient_errors_are_retried_then_delivered(client: GraphClient, emu: GraphEmulator,
                                                           status: int, code: int | None) -> None:
    emu.fail_next(2, status=status, code=code)
    answer = await page(client, emu).send(BODY)
    assert answer["message_id"]
    assert message_calls(emu) == 3


@pytest.mark.parametrize("code", [613, 4, 17, 32, 80006])
async def test_rate_limits_are_not_retried_at_once_but_carry_metas_hint(client: GraphClient, emu: GraphEmulator,
                                                                         code: int) -> None:
    """Retrying a throttled call at once digs deeper: the error goes back (transient, with Meta's hint) and
    the sender pauses the Page (pacing.py)."""
    emu.fail_next(1, status=400, code=code, retry_after=7)
    with pytest.raises(GraphApiError) as info:
        await page(client, emu).send(BODY)
    assert info.value.is_rate_limit and not info.value.permanent and info.value.retry_after == 7
    assert message_calls(emu) == 1


@pytest.mark.parametrize(
    ("code", "subcode"),
    [(190, None), (551, None), (100, None), (10, 2018278), (200, 2534022), (200, 2018300), (2018300, None)],
)
async def test_permanent_errors_are_not_retried(client: GraphClient, emu: GraphEmulator,
                                                code: int, subcode: int | None) -> None:
    emu.fail_next(1, status=400, code=code, subcode=subcode, message="nope")
    with pytest.raises(GraphApiError) as info:
        await page(client, emu).send(BODY)
    assert info.value.permanent is True
    assert info.value.code == code and info.value.subcode == subcode
    assert info.value.fbtrace_id
    assert message_calls(emu) == 1


async def test_persistent_transient_failure_gives_up_as_not_permanent(client: GraphClient,
                                                                      emu: GraphEmulator) -> None:
    emu.add_rule(status=500, code=1200)
    with pytest.raises(GraphApiError) as info:
        await page(client, emu).send(BODY)
    assert info.value.permanent is False and info.value.code == 1200
    assert message_calls(emu) == client.max_attempts


async def test_budget_stops_retries_early(emu: GraphEmulator) -> None:
    graph = GraphClient(base_delay=0.2, max_delay=0.2, budget=0.05, max_attempts=10)
    try:
        emu.add_rule(status=500, code=1200)
        with pytest.raises(GraphApiError):
            await page(graph, emu).send(BODY)
        assert message_calls(emu) == 1, "the first backoff step already exceeds the budget"
    finally:
        await graph.close()


async def test_timeouts_and_dropped_connections_are_retried(emu: GraphEmulator) -> None:
    graph = GraphClient(base_delay=0.001, max_delay=0.002, timeout=0.2)
    try:
        emu.fail_next(1, delay=1.0)
        emu.fail_next(1, disconnect=True)
        answer = await page(graph, emu).send(BODY)
        assert answer["message_id"] and message_calls(emu) == 3
    finally:
        await graph.close()


async def test_unreachable_graph_is_a_transient_error(client: GraphClient) -> None:
    graph = client.page(api_url="http://127.0.0.1:9", version="v25.0", access_token=TOKEN, app_secret=SECRET)
    with pytest.raises(GraphApiError) as info:
        await graph.me()
    assert info.value.permanent is False and info.value.code is None


async def test_secrets_never_reach_logs_or_messages(client: GraphClient, emu: GraphEmulator,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    emu.fail_next(1, status=400, code=100, message=f"bad param near access_token={TOKEN} proof")
    with pytest.raises(GraphApiError) as info:
        await page(client, emu).send(BODY)
    emu.add_rule(status=500, code=1200, times=1)
    await page(client, emu).send(BODY)
    proof = appsecret_proof(SECRET, TOKEN)
    text = caplog.text + str(info.value)
    assert "code 100" in text and "fbtrace_id" in text
    for secret in (TOKEN, SECRET, proof):
        assert secret not in text


async def test_graph_error_without_json_body(client: GraphClient, emu: GraphEmulator) -> None:
    emu.fail_next(1, status=400, code=None)  # an HTML error page, as proxies return
    with pytest.raises(GraphApiError) as info:
        await page(client, emu).me()
    assert info.value.permanent is True and info.value.status == 400 and info.value.code is None


async def test_success_status_with_error_object_is_an_error(client: GraphClient, emu: GraphEmulator) -> None:
    emu.fail_next(1, status=200, code=551, message="This person isn't available right now.")
    with pytest.raises(GraphApiError) as info:
        await page(client, emu).send(BODY)
    assert info.value.code == 551 and info.value.permanent
    assert "isn't available" in str(info.value)


def test_classification_table() -> None:
    assert is_transient(500, None, None, False)
    assert is_transient(None, None, None, False)
    assert is_transient(400, 9999, None, True), "Meta's is_transient flag is trusted"
    assert not is_transient(400, 9999, None, False)
    assert not is_transient(500, 190, None, False), "a bad token stays bad even behind a 5xx"
    assert is_transient(400, 10, None, False) is False
