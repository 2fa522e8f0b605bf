"""Reactions, edits, unsent messages and quoted replies reach bot logic and history; an edit re-runs the bot
when configured; the bot reacts to a user's message (Send API sender action react/unreact)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from activity_kit import history_until, sent_to, serve_with_logic, texts_to, user_does
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import PAGE_A, TOKEN_A, add_bot, write_global
from observation_kit import seen, spy_on_bot_logic

from botpress_py.testing import wait_for

BOT = "shop"


def rig(tmp_path: Path, emulator: GraphEmulator, **config: object) -> tuple[Path, Path]:
    data = tmp_path / "data"
    write_global(data, emulator)
    add_bot(data, BOT, TOKEN_A, **config)
    return data, spy_on_bot_logic(data, BOT, tmp_path / "seen.jsonl")


async def test_reactions_edits_deletions_and_quoted_replies_reach_bot_logic_and_history(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator)
    async with serve_with_logic(data) as server:
        said = await user_does(http, emulator, server, PAGE_A, "81", text="hello")
        await emulator.wait_for(lambda e: texts_to(e, "81") == ["hello from shop"])
        bot_mid = emulator.last_page_message(PAGE_A, "81")[0]
        user_mid = said["event"]["message"]["mid"]

        await user_does(http, emulator, server, PAGE_A, "81", react="❤")  # to the bot's last message
        await user_does(http, emulator, server, PAGE_A, "81", edit="hello again", mid=user_mid)
        await user_does(http, emulator, server, PAGE_A, "81", text="about that", replyTo=bot_mid)
        await user_does(http, emulator, server, PAGE_A, "81", unsend=user_mid)
        await user_does(http, emulator, server, PAGE_A, "81", unreact=True, mid=bot_mid)

        history = await history_until(server, BOT, "81", lambda h: sum(m["direction"] == "incoming" for m in h) >= 6)
        kinds = [(m["type"], m["payload"]) for m in history if m["direction"] == "incoming"]
        assert kinds[1] == ("reaction", {"type": "reaction", "action": "react", "mid": bot_mid, "emoji": "❤",
                                         "reaction": "love"})
        assert kinds[2] == ("edit", {"type": "edit", "mid": user_mid, "text": "hello again", "numEdit": 1})
        assert kinds[3][0] == "text" and kinds[3][1]["replyTo"] == bot_mid and kinds[3][1]["replyToSelf"] is False
        assert kinds[4] == ("delete", {"type": "delete", "mid": user_mid})
        assert kinds[5][0] == "reaction" and kinds[5][1]["action"] == "unreact"

        # Bot logic saw each of them (none is silent), and answered only the messages: the quoted reply.
        await wait_for(lambda: len(seen(spy)) >= 6)
        assert [e["type"] for e in seen(spy)] == ["text", "reaction", "edit", "text", "delete", "reaction"]
        await emulator.wait_for(lambda e: len(texts_to(e, "81")) == 2)
        assert texts_to(emulator, "81") == ["hello from shop", "fallback from shop"]


async def test_an_edit_reruns_the_bot_on_the_new_text_when_configured(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator, rerunOnEdit=True)
    async with serve_with_logic(data) as server:
        said = await user_does(http, emulator, server, PAGE_A, "82", text="helo")
        await emulator.wait_for(lambda e: texts_to(e, "82") == ["fallback from shop"])
        await user_does(http, emulator, server, PAGE_A, "82", edit="hello", mid=said["event"]["message"]["mid"])
        await emulator.wait_for(lambda e: texts_to(e, "82") == ["fallback from shop", "hello from shop"])
        edited = seen(spy)[-1]
        assert edited["type"] == "text" and edited["payload"]["edited"] is True
        assert edited["payload"]["mid"] == said["event"]["message"]["mid"]
        history = await history_until(server, BOT, "82", lambda h: len(h) >= 4)
        assert [m["payload"].get("edited") for m in history if m["direction"] == "incoming"] == [None, True]


async def test_the_bot_reacts_to_the_users_message_and_takes_it_back(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data, _ = rig(tmp_path, emulator)
    async with serve_with_logic(data) as server:
        said = await user_does(http, emulator, server, PAGE_A, "83", text="react to me")
        await emulator.wait_for(lambda e: texts_to(e, "83") == ["Liked it."])
        [react] = [b for b in sent_to(emulator, "83") if b.get("sender_action") == "react"]
        assert react == {"recipient": {"id": "83"}, "sender_action": "react",
                         "payload": {"message_id": said["event"]["message"]["mid"], "reaction": "👍"}}

        bot_mid = emulator.last_page_message(PAGE_A, "83")[0]
        await user_does(http, emulator, server, PAGE_A, "83", text="unreact", replyTo=bot_mid)
        await emulator.wait_for(lambda e: [b for b in sent_to(e, "83") if b.get("sender_action") == "unreact"])
        [unreact] = [b for b in sent_to(emulator, "83") if b.get("sender_action") == "unreact"]
        assert unreact == {"recipient": {"id": "83"}, "sender_action": "unreact", "payload": {"message_id": bot_mid}}
        history = await history_until(server, BOT, "83", lambda h: sum(m["type"] == "custom" for m in h) == 2)
        assert [m["payload"]["messenger"]["sender_action"] for m in history if m["type"] == "custom"] == \
            ["react", "unreact"], "the bot's reactions are in history as its outgoing events"
