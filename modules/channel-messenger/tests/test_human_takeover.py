"""Human takeover on today's platform: a person answering from Meta's inbox pauses the bot for that user (the
person's message and the user's are recorded, never answered), until the pause ends or the thread is passed
back; the bot's own echoes never pause it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
from activity_kit import history_until, serve_with_logic, texts_to, user_does
from channel_messenger.emulator import PAGE_INBOX_APP_ID, GraphEmulator, handover_event, inbox_echo
from messenger_testkit import PAGE_A, TOKEN_A, add_bot, messenger, write_global
from observation_kit import api, context, outbox

from botpress_py.testing import wait_for

BOT = "shop"
OUR_APP = "1000000000001"  # the emulator's app (ConversationRouting.app_id)


def rig(tmp_path: Path, emulator: GraphEmulator, **config: Any) -> Path:
    data = tmp_path / "data"
    write_global(data, emulator)
    add_bot(data, BOT, TOKEN_A, **config)
    return data


class Clock:
    """The channel's clock for pauses, moved by the test (the wall clock never is)."""

    def __init__(self) -> None:
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now


def moved(server: Any) -> Clock:
    clock = Clock()
    messenger(server).handover.owners.clock = clock
    return clock


async def incoming(server: Any, psid: str, count: int) -> list[dict[str, Any]]:
    history = await history_until(server, BOT, psid, lambda h: sum(m["direction"] == "incoming" for m in h) >= count)
    return [m for m in history if m["direction"] == "incoming"]


async def test_a_person_answering_from_the_page_inbox_pauses_the_bot_for_that_user_until_the_pause_ends(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data = rig(tmp_path, emulator, humanTakeoverPause="30m")
    async with serve_with_logic(data) as server:
        clock = moved(server)
        await user_does(http, emulator, server, PAGE_A, "91", text="hello")
        await emulator.wait_for(lambda e: texts_to(e, "91") == ["hello from shop"])

        await user_does(http, emulator, server, PAGE_A, "91", inbox="Hi, Sam here from the shop.")
        await user_does(http, emulator, server, PAGE_A, "91", text="hello")
        recorded = await incoming(server, "91", 3)
        person, paused = recorded[1], recorded[2]
        assert person["payload"]["text"] == "Hi, Sam here from the shop." and person["flags"]["humanAgent"] is True
        assert person["flags"]["appId"] == PAGE_INBOX_APP_ID and person["flags"]["echo"] is True
        assert paused["payload"]["text"] == "hello" and paused["flags"]["paused"] is True, "stored, not answered"
        assert texts_to(emulator, "91") == ["hello from shop"]

        # Replies meant for the user meanwhile are not sent, and say why.
        status, body = await api(http, server, BOT, "notify", {"userId": "91",
                                                                "payload": {"type": "text", "text": "Sale!"}})
        assert status == 409 and "paused" in body["error"] and "Page Inbox" in body["error"]
        status, body = await api(http, server, BOT, "handover", method="GET", params={"userId": "91"})
        assert body["owner"]["app"] == PAGE_INBOX_APP_ID and body["owner"]["pausedUntil"] > clock.now

        clock.now += 31 * 60_000  # half an hour later, no new word from the person
        await user_does(http, emulator, server, PAGE_A, "91", text="hello")
        await emulator.wait_for(lambda e: texts_to(e, "91") == ["hello from shop", "hello from shop"])


async def test_each_answer_of_the_person_extends_the_pause_and_a_thread_passed_back_ends_it_at_once(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data = rig(tmp_path, emulator, humanTakeoverPause="10m", appId=OUR_APP)
    async with serve_with_logic(data) as server:
        clock = moved(server)
        await user_does(http, emulator, server, PAGE_A, "92", inbox="Let me check.")
        clock.now += 8 * 60_000
        await user_does(http, emulator, server, PAGE_A, "92", inbox="Found it.")
        clock.now += 8 * 60_000  # 16 minutes after the first answer, 8 after the last: still paused
        await user_does(http, emulator, server, PAGE_A, "92", text="hello")
        assert (await incoming(server, "92", 3))[2]["flags"]["paused"] is True

        # The Page Inbox passes the thread back (a person marked the conversation done).
        passed = handover_event(PAGE_A, "92", "pass_thread_control", previous_owner_app_id=PAGE_INBOX_APP_ID,
                                new_owner_app_id=OUR_APP, metadata="done")
        assert (await emulator.post_webhook(server.url, PAGE_A, [passed]))[0] == 200
        await incoming(server, "92", 4)
        await user_does(http, emulator, server, PAGE_A, "92", text="hello")
        await emulator.wait_for(lambda e: texts_to(e, "92") == ["hello from shop"])


async def test_the_bots_own_echoes_never_pause_it_and_its_app_is_learnt_from_them(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data = rig(tmp_path, emulator)  # no appId: learnt
    async with serve_with_logic(data) as server:
        await user_does(http, emulator, server, PAGE_A, "93", text="hello")
        await emulator.wait_for(lambda e: texts_to(e, "93") == ["hello from shop"])
        # An echo of another app before the bot knows its own: maybe its own, so no pause.
        other = inbox_echo(PAGE_A, "93", "a message of some app", "777")
        assert (await emulator.post_webhook(server.url, PAGE_A, [other]))[0] == 200
        # Meta echoes the bot's own message, naming the bot's app: learnt.
        mid, text = emulator.last_page_message(PAGE_A, "93")
        own = inbox_echo(PAGE_A, "93", text, OUR_APP)
        own["message"]["mid"] = mid
        assert (await emulator.post_webhook(server.url, PAGE_A, [own]))[0] == 200
        await wait_for(lambda: messenger(server).takeover._apps.get(BOT) == OUR_APP)
        assert await context(server, BOT).state.get("appId") == OUR_APP
        await user_does(http, emulator, server, PAGE_A, "93", text="hello")
        await emulator.wait_for(lambda e: len(texts_to(e, "93")) == 2)

        # Now an echo of another app is a person answering.
        assert (await emulator.post_webhook(server.url, PAGE_A, [inbox_echo(PAGE_A, "93", "Hi!", "777")]))[0] == 200
        await user_does(http, emulator, server, PAGE_A, "93", text="hello")
        recorded = await incoming(server, "93", 6)
        assert recorded[4]["flags"].get("humanAgent") is True and recorded[5]["flags"]["paused"] is True
        assert [m["flags"].get("humanAgent") for m in recorded[:4]] == [None, None, None, None]
        assert len(texts_to(emulator, "93")) == 2


async def test_with_no_pause_configured_the_bot_goes_on_answering(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data = rig(tmp_path, emulator, humanTakeoverPause="0")
    async with serve_with_logic(data) as server:
        await user_does(http, emulator, server, PAGE_A, "94", inbox="Sam here.")
        await user_does(http, emulator, server, PAGE_A, "94", text="hello")
        await emulator.wait_for(lambda e: texts_to(e, "94") == ["hello from shop"])
        assert (await incoming(server, "94", 1))[0]["flags"]["humanAgent"] is True, "still recorded as a person's"
        assert not [r for r in outbox(data) if r["status"] == "failed"]
