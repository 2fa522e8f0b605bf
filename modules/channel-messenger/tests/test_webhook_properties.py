"""Property: whatever a signed delivery holds, the server never answers 5xx, answers every good event in it (and
those other users send meanwhile) exactly once, leaves nothing pending once it drains, and keeps answering
/status throughout. On SQLite and PostgreSQL.

The server and the Graph emulator run on the test's event loop; hypothesis runs in a thread and posts with
``requests``, while a second thread polls /status and a task posts good deliveries from other users.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from channel_messenger.emulator import GraphEmulator
from hypothesis import HealthCheck, example, given, settings
from messenger_testkit import (
    ADMIN,
    MODULE,
    PAGE_A,
    PAGE_B,
    SECRET,
    TOKEN_A,
    TOKEN_B,
    add_bot,
    messages_with,
    user_message,
    webhook_path,
    write_global,
)
from webhook_strategies import BODIES, Delivery, with_good_events

from botpress_py.testing import postgres_schema, run_server, wait_for

EXAMPLES = 300
# Values that once failed the shared transaction of every event stored with them: always among the examples.
def _poison(psid: Any, **body: Any) -> dict[str, Any]:
    return {"sender": {"id": psid}, "recipient": {"id": PAGE_A}, **body}


KNOWN_POISONS = {"object": "page", "entry": [{"id": PAGE_A, "messaging": [
    _poison("5001", timestamp=10**30, message={"mid": "m_p1", "text": "a"}),
    _poison("5002", timestamp=2**63, message={"mid": "m_p2", "text": "b"}),
    _poison("5003", timestamp=2**64 - 1, read={"watermark": 1}),
    _poison("5004", postback={"mid": ["a", "list"], "payload": "X"}),
    _poison("5005", postback={"mid": 10**30, "payload": "X"}),
    _poison(2**64, message={"mid": "m_p6", "text": "c\x00\ud800"}),
]}]}
PG_SKIP_REASON = "DATABASE_URL not set: the PostgreSQL run of the webhook property is skipped; .ci/run sets it"


@pytest.fixture(params=["sqlite", "postgres"])
async def storage_env(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    async with postgres_schema("bp_prop", PG_SKIP_REASON) as schema:
        yield schema.env


class GoodUsers:
    """Fresh PSIDs for good events (never drawn by the strategies), and the ones the server accepted."""

    def __init__(self) -> None:
        self._next = itertools.count(770_000_000_000_001)
        self._lock = threading.Lock()
        self.accepted: Counter[tuple[str, str]] = Counter()

    def make(self, page: str) -> tuple[dict[str, Any], str]:
        with self._lock:
            psid = str(next(self._next))
        return user_message(page, psid, "hello", f"m_good_{psid}"), psid

    def accept(self, good: list[tuple[str, str]]) -> None:
        with self._lock:
            self.accepted.update(good)


class StatusWatch(threading.Thread):
    """GET /status over and over from another thread, with a timeout: a server that stops answering shows."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url + "/status"
        self.answers = 0
        self.failures: list[str] = []
        self.stuck_connections: list[str] = []  # printed, not asserted: see run()
        self._done = threading.Event()

    def run(self) -> None:
        http = requests.Session()
        try:
            while not self._done.is_set():
                try:
                    try:
                        response = http.get(self.url, timeout=10)
                    except requests.Timeout as exc:
                        # One kept-alive connection that stopped answering is told apart from a server that
                        # does not answer: the same request on a new connection must get its answer at once.
                        self.stuck_connections.append(repr(exc))
                        http.close()
                        http = requests.Session()
                        response = http.get(self.url, timeout=10)
                except (requests.RequestException, ValueError) as exc:
                    self.failures.append(repr(exc))
                else:
                    if response.status_code == 200 and response.json().get("status") == "ok":
                        self.answers += 1
                    else:
                        self.failures.append(f"HTTP {response.status_code}")
                self._done.wait(0.02)
        finally:
            http.close()

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=15)


def post_random_deliveries(url: str, users: GoodUsers, statuses: Counter[int]) -> None:
    """Hypothesis's part (in a thread): signed random bodies with good events in them."""
    http = requests.Session()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(body=BODIES)
    @example(body=KNOWN_POISONS)
    def post(body: Any) -> None:
        delivery: Delivery = with_good_events(body, users.make)
        raw, headers = GraphEmulator.signed(delivery.raw(), SECRET)
        response = http.post(url + webhook_path(), data=raw, headers=headers, timeout=60)
        statuses[response.status_code] += 1
        assert response.status_code < 500, response.text
        assert response.status_code == delivery.expected_status(), response.text
        if response.status_code == 200:
            users.accept(delivery.good)

    try:
        post()
    finally:
        http.close()


async def post_good_stream(http: aiohttp.ClientSession, url: str, users: GoodUsers, stop: asyncio.Event) -> None:
    """Other users writing to the Pages while the random deliveries arrive."""
    while not stop.is_set():
        page = PAGE_B if users.accepted.total() % 2 else PAGE_A
        event, psid = users.make(page)
        raw, headers = GraphEmulator.signed(GraphEmulator.webhook_body(page, [event]), SECRET)
        async with http.post(url + webhook_path(), data=raw, headers=headers) as response:
            assert response.status == 200, await response.text()
        users.accept([(page, psid)])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def test_signed_random_deliveries_never_fail_and_every_good_event_is_answered_once(
        storage_env: dict[str, str], tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data = tmp_path / "data"
    write_global(data, emulator)
    add_bot(data, "shop", TOKEN_A)
    add_bot(data, "help", TOKEN_B)
    users = GoodUsers()
    statuses: Counter[int] = Counter()
    async with run_server(data, storage_env, modules=[MODULE, "qna"], admin={"token": ADMIN}) as server:
        watch = StatusWatch(server.url)
        watch.start()
        stop = asyncio.Event()
        stream = asyncio.create_task(post_good_stream(http, server.url, users, stop))
        try:
            await asyncio.to_thread(post_random_deliveries, server.url, users, statuses)
        finally:
            stop.set()
            await stream
        expected = {psid for _, psid in users.accepted}

        def answered() -> Counter[str]:
            return Counter(m["recipient"]["id"] for token in (TOKEN_A, TOKEN_B) for m in messages_with(emulator, token)
                           if m["recipient"]["id"] in expected)

        await wait_for(lambda: set(answered()) == expected, timeout=120)
        await wait_for(lambda: _drained(server), timeout=120)
        watch.stop()
        if watch.stuck_connections:
            print(f"/status: {len(watch.stuck_connections)} kept-alive connection(s) stopped answering, a new one "
                  f"answered: {watch.stuck_connections[:2]}")
        assert watch.failures == [] and watch.answers > 0, watch.failures[:3]
    counts = answered()
    assert [psid for psid, n in counts.items() if n != 1] == [], "every good event answered exactly once"
    assert all(n == 1 for n in users.accepted.values()), "each good PSID was sent once"
    assert statuses[200] > EXAMPLES // 2, statuses


async def _drained(server: Any) -> bool:
    """Nothing pending in storage: no incoming event left unprocessed, no reply left unsent."""
    return await server.storage.inbox_pending_counts() == {} and await server.storage.outbox_pending(limit=1) == []
