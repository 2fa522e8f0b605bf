"""The emulator's control API over HTTP, end to end with the real server and the shipped sample bot:
a user's messages sent like Facebook sends them, faults, latency, the call log."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from channel_messenger.graph_client import appsecret_proof
from emulator_testkit import PAGE, SECRET, TOKEN, USER, rig


def texts(replies: list[dict]) -> list[str]:
    return [r["json"]["message"].get("text", "") for r in replies if "message" in r["json"]]


def quick_replies(replies: list[dict]) -> list[str]:
    return [q["payload"] for r in replies if "message" in r["json"]
            for q in r["json"]["message"].get("quick_replies", [])]


def template(replies: list[dict]) -> dict:
    found = [r["json"]["message"]["attachment"]["payload"] for r in replies
             if "attachment" in r["json"].get("message", {})]
    assert len(found) == 1, replies
    return found[0]


async def test_a_conversation_through_emulator_send(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        assert await r.module_status() == {"state": "on"}

        # A typed text: the emulator signs it with the app secret and posts it to the server.
        status, answer = await r.emulator_send(psid=USER, text="Hello!", wait=True)
        assert status == 200 and answer["status"] == 200 and answer["body"] == "EVENT_RECEIVED"
        assert answer["event"]["message"]["text"] == "Hello!" and answer["event"]["recipient"] == {"id": PAGE}
        assert answer["timedOut"] is False
        assert texts(answer["replies"]) == ["Hi there! 😊 Good to see you.", "What would you like to do?"]
        assert quick_replies(answer["replies"]) == ["TOUR", "HELP", "ABOUT"]
        assert all(reply["query"] == {"access_token": "***", "appsecret_proof": "***"} for reply in answer["replies"])

        # Tapping the "Take the tour" quick reply: the carousel.
        status, answer = await r.emulator_send(psid=USER, quick_reply="TOUR", title="Take the tour", wait=True)
        assert answer["event"]["message"] == {"mid": answer["event"]["message"]["mid"], "text": "Take the tour",
                                              "quick_reply": {"payload": "TOUR"}}
        carousel = template(answer["replies"])
        assert carousel["template_type"] == "generic"
        assert [e["title"] for e in carousel["elements"]] == ["Bots are folders", "Drop-in modules",
                                                               "Messenger built in"]

        # The Get Started button: a postback; text, typing on/off around a pause, then a card.
        status, answer = await r.emulator_send(psid=USER, postback="GET_STARTED", title="Get Started", wait=True)
        assert answer["event"]["postback"]["payload"] == "GET_STARTED"
        actions = [c["json"].get("sender_action") for c in answer["replies"]]
        assert actions == ["mark_seen", None, "typing_on", "typing_off", None]
        card = template(answer["replies"])["elements"][0]
        assert card["title"] == "Nice to meet you!"
        assert [b.get("payload") for b in card["buttons"] if b["type"] == "postback"] == ["TOUR", "HELP"]

        # Without wait, the answer comes at once, with the seq to follow the replies from.
        status, answer = await r.emulator_send(psid=USER, text="bye")
        assert status == 200 and "replies" not in answer
        async with r.http.get(f"{r.emu}/_emulator/calls", params={"since": answer["since"], "psid": USER,
                                                                   "wait": "5"}) as response:
            follow = await response.json()
        assert follow["calls"] and all(c["json"]["recipient"]["id"] == USER for c in follow["calls"])


async def test_send_errors_say_what_is_wrong(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        status, answer = await r.emulator_send(psid=USER)
        assert status == 400 and "exactly one of text, postback and quick_reply" in answer["error"]
        status, answer = await r.emulator_send(page="999", psid=USER, text="hi")
        assert status == 400 and PAGE in answer["error"]
        status, answer = await r.emulator_send(psid=USER, text="hi", server="http://127.0.0.1:9")
        assert status == 502 and "no server answers at http://127.0.0.1:9" in answer["error"]
        r.emulator.app_secret = None
        status, answer = await r.emulator_send(psid=USER, text="hi")
        assert status == 409 and "--app-secret" in answer["error"]
        r.emulator.app_secret = "another-app-secret"
        status, answer = await r.emulator_send(psid=USER, text="hi")
        assert status == 200 and answer["status"] == 403  # the server's answer, as Facebook would see it


async def test_injected_5xx_faults_are_retried_and_the_reply_arrives(tmp_path: Path, fast_retries: None) -> None:
    async with rig(tmp_path) as r:
        async with r.http.post(f"{r.emu}/_emulator/faults",
                               json={"status": 500, "code": 1200, "times": 2, "has": "message"}) as response:
            assert response.status == 201
            assert (await response.json())["fault"]["times"] == 2
        async with r.http.post(f"{r.emu}/_emulator/faults", json={"status": 503, "code": None, "times": 1,
                                                                  "path": "/messages$", "has": "message"}) as response:
            assert response.status == 201
        async with r.http.get(f"{r.emu}/_emulator/faults") as response:
            assert len((await response.json())["faults"]) == 2

        _, answer = await r.emulator_send(psid=USER, text="hello", wait=True)
        assert answer["status"] == 200
        failed = [c for c in answer["replies"] if not c["accepted"]]
        assert [c["fault"] for c in failed] == [True, True, True]
        assert [c["error"]["status"] for c in failed] == [500, 500, 503]
        assert texts([c for c in answer["replies"] if c["accepted"]]) == ["Hi there! 😊 Good to see you.",
                                                                          "What would you like to do?"]
        async with r.http.get(f"{r.emu}/_emulator/faults") as response:
            assert (await response.json())["faults"] == []  # each rule was used up


async def test_fault_options_latency_rate_and_clearing(tmp_path: Path) -> None:
    async with rig(tmp_path, seed=7) as r:
        http = r.http

        async def me() -> int:
            async with http.get(f"{r.emu}/v25.0/me", params={"access_token": TOKEN, "appsecret_proof": proof}) as rs:
                return rs.status

        proof = appsecret_proof(SECRET, TOKEN)

        async with http.post(f"{r.emu}/_emulator/faults", json={"delay": 0.3}) as response:
            assert (await response.json())["fault"]["status"] is None  # latency only
        started = time.monotonic()
        assert await me() == 200
        assert time.monotonic() - started >= 0.3

        async with http.post(f"{r.emu}/_emulator/faults", json={"status": 500, "rate": 0.5, "times": None,
                                                                "path": "/me$"}) as response:
            assert response.status == 201
        statuses = [await me() for _ in range(40)]
        assert 5 < statuses.count(500) < 35 and statuses.count(200) + statuses.count(500) == 40
        async with http.delete(f"{r.emu}/_emulator/faults") as response:
            assert (await response.json()) == {"faults": []}
        assert [await me() for _ in range(5)] == [200] * 5

        for bad in ({"status": 500, "rate": 0}, {"colour": "red"}, {"times": 0}, {"path": "("}):
            async with http.post(f"{r.emu}/_emulator/faults", json=bad) as response:
                assert response.status == 400, bad
                assert "bad fault" in (await response.json())["error"]


async def test_calls_follow_filter_and_hide_tokens(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        async with r.http.get(f"{r.emu}/_emulator") as response:
            info = await response.json()
        assert info["pages"][0]["id"] == PAGE and info["pages"][0]["signsWebhooks"] is True
        assert info["pages"][0]["profile"] == {"get_started": {"payload": "GET_STARTED"}}
        assert info["server"] == r.server.url
        since = info["seq"]

        async def follow() -> dict:
            async with r.http.get(f"{r.emu}/_emulator/calls",
                                  params={"since": since, "psid": USER, "wait": "5"}) as response:
                return await response.json()

        waiting = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        assert not waiting.done()  # held until a matching call arrives
        await r.emulator_send(psid="999", text="hello")  # another user's replies do not wake it
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await r.emulator_send(psid=USER, text="hello")
        listing = await asyncio.wait_for(waiting, 5)
        assert listing["calls"] and {c["json"]["recipient"]["id"] for c in listing["calls"]} == {USER}
        assert all(c["seq"] > since and c["page"] == PAGE for c in listing["calls"])
        assert TOKEN not in json.dumps(listing) and SECRET not in json.dumps(listing)

        async with r.http.delete(f"{r.emu}/_emulator/calls") as response:
            assert (await response.json())["cleared"] is True
        assert r.emulator.calls == []
        async with r.http.get(f"{r.emu}/_emulator/calls", params={"since": "x"}) as response:
            assert response.status == 400


async def test_any_user_has_a_profile(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        params = {"access_token": TOKEN, "fields": "first_name", "appsecret_proof": appsecret_proof(SECRET, TOKEN)}
        async with r.http.get(f"{r.emu}/v25.0/{USER}", params=params) as response:
            assert (await response.json()) == {"first_name": "Test", "id": USER}
        r.emulator.any_user = False
        async with r.http.get(f"{r.emu}/v25.0/{USER}", params=params) as response:
            assert response.status == 400 and (await response.json())["error"]["code"] == 100


@pytest.mark.parametrize("spec", [{"status": "five hundred"}, {"delay": -1}])
async def test_fault_spec_types_are_checked(tmp_path: Path, spec: dict) -> None:
    async with rig(tmp_path) as r, r.http.post(f"{r.emu}/_emulator/faults", json=spec) as response:
        assert response.status == 400
