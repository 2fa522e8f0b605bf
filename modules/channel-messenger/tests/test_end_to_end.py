"""The real server, the shipped sample bot, the Graph emulator and signed webhooks, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import aiohttp
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import PAGE_A, SECRET, TOKEN_A, VERIFY, FakeMeta, profile_calls, serve, write_global

from botpress_py.testing import write_json

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE_BOT = REPO_ROOT / "data" / "bots" / "welcome-bot"
USER = "24680"
MENU = [{"type": "postback", "title": "Help", "payload": "HELP"}]


def reply(message: dict[str, Any]) -> dict[str, Any]:
    return {"recipient": {"id": USER}, "messaging_type": "RESPONSE", "message": message}


def action(name: str) -> dict[str, Any]:
    return {"recipient": {"id": USER}, "sender_action": name}


def bodies_since(emulator: GraphEmulator, start: int) -> list[dict[str, Any]]:
    return emulator.sent[start:]


async def test_sample_bot_over_messenger(tmp_path: Path, emulator: GraphEmulator) -> None:
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_BOT, data / "bots" / "welcome-bot")
    write_global(data, emulator)
    write_json(data / "bots" / "welcome-bot" / "config" / "channel-messenger.json", {
        "enabled": True, "accessToken": TOKEN_A, "greeting": "Hi {{user_first_name}}! Say hello.",
        "getStarted": "GET_STARTED", "persistentMenu": MENU,
    })
    async with serve(data) as server, aiohttp.ClientSession() as http:
        meta = FakeMeta(http, server)
        assert (await meta.status())["bots"]["welcome-bot"]["modules"]["channel-messenger"] == {"state": "on"}
        assert [c["json"] for c in profile_calls(emulator)] == [{
            "greeting": [{"locale": "default", "text": "Hi {{user_first_name}}! Say hello."}],
            "get_started": {"payload": "GET_STARTED"},
            "persistent_menu": [{"locale": "default", "composer_input_disabled": False, "call_to_actions": MENU}],
        }]

        # Meta's subscription handshake on the any-bot URL.
        assert await meta.verify(**{"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                    "hub.challenge": "CHALLENGE_ACCEPTED"}) == (200, "CHALLENGE_ACCEPTED")

        # "hello" → the qna greeting: a text, then a single-choice as quick replies.
        start = len(emulator.sent)
        body = GraphEmulator.webhook_body(PAGE_A, [GraphEmulator.user_message(PAGE_A, USER, "Hello!", "m_hello")])
        assert await meta.post(body, secret=SECRET) == (200, "EVENT_RECEIVED")
        await emulator.wait_for(lambda e: len(e.sent) - start >= 3)
        assert bodies_since(emulator, start) == [
            action("mark_seen"),
            reply({"text": "Hi there! 😊 Good to see you."}),
            reply({"text": "What would you like to do?", "quick_replies": [
                {"content_type": "text", "title": "Take the tour", "payload": "TOUR"},
                {"content_type": "text", "title": "What can you do?", "payload": "HELP"},
                {"content_type": "text", "title": "About you", "payload": "ABOUT"},
            ]}),
        ]
        call = emulator.calls_to(r"/v27\.0/me/messages$")[-1]
        assert set(call["query"]) == {"access_token", "appsecret_proof"}

        # Tapping the "Take the tour" quick reply → the tour carousel, with a Say something button.
        start = len(emulator.sent)
        tap = {"sender": {"id": USER}, "recipient": {"id": PAGE_A}, "timestamp": 1,
               "message": {"mid": "m_tour", "text": "Take the tour", "quick_reply": {"payload": "TOUR"}}}
        assert (await meta.post(GraphEmulator.webhook_body(PAGE_A, [tap])))[0] == 200
        await emulator.wait_for(lambda e: len(e.sent) - start >= 3)
        docs = "https://developers.facebook.com/docs/messenger-platform"
        assert bodies_since(emulator, start) == [
            action("mark_seen"),
            reply({"text": "Here's the short tour. Swipe through the cards 👉"}),
            reply({"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": [
                {"title": "Bots are folders",
                 "subtitle": "Each bot is a folder in data/bots/ with a few JSON files.",
                 "buttons": [{"type": "postback", "title": "How do I edit you?", "payload": "EDIT_ME"}]},
                {"title": "Drop-in modules",
                 "subtitle": "Channels and bot logic are modules you drop into modules/.",
                 "buttons": [{"type": "postback", "title": "About you", "payload": "say::about"}]},
                {"title": "Messenger built in",
                 "subtitle": "Connect a Facebook Page with a token and an app secret.",
                 "buttons": [{"type": "web_url", "url": docs, "title": "Messenger docs"},
                             {"type": "postback", "title": "Back to the menu", "payload": "HELP"}]},
            ]}}}),
        ]

        # Tapping the Say something button: Meta posts it back as a postback; the bot hears "about".
        start = len(emulator.sent)
        press = {"sender": {"id": USER}, "recipient": {"id": PAGE_A}, "timestamp": 2,
                 "postback": {"mid": "m_say", "title": "About you", "payload": "say::about"}}
        assert (await meta.post(GraphEmulator.webhook_body(PAGE_A, [press])))[0] == 200
        await emulator.wait_for(lambda e: len(e.sent) - start >= 3)
        about = bodies_since(emulator, start)
        assert about[1]["message"]["text"].startswith("I'm Welcome Bot 🤖")
        assert [q["payload"] for q in about[2]["message"]["quick_replies"]] == ["EDIT_ME", "TOUR"]

        # The Get Started button: text, typing indicator around a pause, then a card.
        start = len(emulator.sent)
        started = {"sender": {"id": USER}, "recipient": {"id": PAGE_A}, "timestamp": 3,
                   "postback": {"mid": "m_start", "title": "Get Started", "payload": "GET_STARTED"}}
        assert (await meta.post(GraphEmulator.webhook_body(PAGE_A, [started])))[0] == 200
        await emulator.wait_for(lambda e: len(e.sent) - start >= 5)
        sent = bodies_since(emulator, start)
        assert sent[:4] == [action("mark_seen"),
                            reply({"text": "Welcome! 👋 I'm Welcome Bot, a small demo of botpress-py."}),
                            action("typing_on"), action("typing_off")]
        card = sent[4]["message"]["attachment"]["payload"]["elements"]
        assert [b["payload"] for b in card[0]["buttons"] if b["type"] == "postback"] == ["TOUR", "HELP"]

        history = await server.storage.messages_for("welcome-bot", "messenger", USER)
        outgoing = [m for m in history if m["direction"] == "outgoing"]
        assert outgoing and all(m["channelMessageId"] for m in outgoing if m["type"] != "typing")
