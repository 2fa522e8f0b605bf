"""Meta's Send API limits: the emulator refuses what Meta refuses, with Meta's error #100, and the
channel's output for oversize bot answers never runs into them (through the real server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.graph_client import appsecret_proof
from emulator_testkit import SECRET, TOKEN, USER, rig


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


LONG_TEXT = "\n\n".join(f"Paragraph {i}. " + "All work and no play makes a bot dull. " * 12 for i in range(12))
EMOJI_TEXT = "🙂" * 1500  # 3000 UTF-16 units: Messenger counts these, not code points


def choices(n: int, title_length: int) -> list[dict[str, str]]:
    return [{"title": f"{i:02d} " + "x" * (title_length - 3), "value": f"CHOICE_{i}"} for i in range(n)]


def card(i: int) -> dict[str, Any]:
    return {"title": f"Card {i} " + "t" * 100, "subtitle": "s" * 120, "image": "/assets/cat.png",
            "actions": [{"action": "Postback", "title": f"Button {j} with a long title", "payload": f"P{i}_{j}"}
                        for j in range(5)]}


OVERSIZE_QNA = {
    "entries": [
        {"id": "long", "questions": ["long"], "answers": [{"type": "text", "text": LONG_TEXT}]},
        {"id": "emoji", "questions": ["emoji"], "answers": [{"type": "text", "text": EMOJI_TEXT}]},
        {"id": "many", "questions": ["many"],
         "answers": [{"type": "single-choice", "text": "Pick one", "choices": choices(20, 30)}]},
        {"id": "wide", "questions": ["wide"],
         "answers": [{"type": "single-choice", "text": "Pick one", "choices": choices(13, 26)}]},
        {"id": "cards", "questions": ["cards"],
         "answers": [{"type": "carousel", "items": [card(i) for i in range(12)]}]},
    ],
    "fallback": [{"type": "text", "text": "?"}],
}


def send_body(message: dict[str, Any]) -> dict[str, Any]:
    return {"recipient": {"id": USER}, "messaging_type": "RESPONSE", "message": message}


def naive(message_for: str) -> dict[str, Any]:
    """What a channel that ignored the limits would send."""
    if message_for == "long":
        return {"text": LONG_TEXT}
    if message_for == "emoji":
        return {"text": EMOJI_TEXT}
    if message_for == "many":
        return {"text": "Pick one", "quick_replies": [{"content_type": "text", "title": c["title"][:20],
                                                       "payload": c["value"]} for c in choices(20, 20)]}
    if message_for == "wide":
        return {"text": "Pick one", "quick_replies": [{"content_type": "text", "title": c["title"],
                                                       "payload": c["value"]} for c in choices(13, 26)]}
    return {"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": [
        {"title": f"Card {i}", "buttons": [{"type": "postback", "title": "b", "payload": "p"}]} for i in range(11)]}}}


META_MESSAGES = {
    "long": "(#100) Length of param message[text] must be less than or equal to 2000",
    "emoji": "(#100) Length of param message[text] must be less than or equal to 2000",
    "many": "(#100) param message[quick_replies] must have at most 13 elements",
    "wide": "(#100) quick_replies title has more than 20 characters",
    "cards": "(#100) Param elements[] must be less than or equal to 10",
}


@pytest.mark.parametrize("case", sorted(META_MESSAGES))
async def test_the_emulator_refuses_oversize_messages_like_meta(tmp_path: Path, case: str) -> None:
    async with rig(tmp_path, bot="limits", qna=OVERSIZE_QNA) as r, aiohttp.ClientSession() as http:
        params = {"access_token": TOKEN, "appsecret_proof": appsecret_proof(SECRET, TOKEN)}
        async with http.post(f"{r.emu}/v25.0/me/messages", params=params, json=send_body(naive(case))) as response:
            assert response.status == 400
            answer = await response.json()
        assert set(answer) == {"error"}
        error = answer["error"]
        assert set(error) == {"message", "type", "code", "fbtrace_id"}
        assert error["code"] == 100 and error["type"] == "OAuthException"
        assert error["message"] == META_MESSAGES[case]
        assert isinstance(error["fbtrace_id"], str) and error["fbtrace_id"]

        # At the limit itself, the same kinds of message pass.
        at_limit = [{"text": "x" * 2000}, {"text": "🙂" * 1000},
                    {"text": "q", "quick_replies": [{"content_type": "text", "title": "t" * 20, "payload": str(i)}
                                                    for i in range(13)]}]
        for message in at_limit:
            async with http.post(f"{r.emu}/v25.0/me/messages", params=params, json=send_body(message)) as response:
                assert response.status == 200, await response.text()


async def test_the_channel_never_sends_what_meta_would_refuse(tmp_path: Path) -> None:
    async with rig(tmp_path, bot="limits", qna=OVERSIZE_QNA) as r:
        for question in ("long", "emoji", "many", "wide", "cards"):
            status, answer = await r.emulator_send(psid=USER, text=question, wait=True)
            assert (status, answer["status"], answer["timedOut"]) == (200, 200, False), question
            refused = [c for c in answer["replies"] if not c["accepted"]]
            assert refused == [], f"{question}: {[c['error'] for c in refused]}"
            messages = [c["json"]["message"] for c in answer["replies"] if "message" in c["json"]]
            assert messages, question
            if question in ("long", "emoji"):
                assert len(messages) >= 2
                assert "".join(m["text"] for m in messages).replace("\n", "").replace(" ", "") == \
                    (LONG_TEXT if question == "long" else EMOJI_TEXT).replace("\n", "").replace(" ", "")
            if question == "many":  # more than 13 choices: the text, then cards of buttons, same values
                payloads = [b["payload"] for m in messages if "attachment" in m
                            for e in m["attachment"]["payload"]["elements"] for b in e["buttons"]]
                assert payloads == [f"CHOICE_{i}" for i in range(20)]
            if question == "wide":
                assert [units(q["title"]) for q in messages[0]["quick_replies"]] == [20] * 13
            if question == "cards":
                elements = [e for m in messages for e in m["attachment"]["payload"]["elements"]]
                payloads = [b["payload"] for e in elements for b in e["buttons"]]
                assert sorted(payloads) == sorted(f"P{i}_{j}" for i in range(12) for j in range(5))
                assert all(e["image_url"].startswith("http") for e in elements if "image_url" in e)
        # Nothing the bot sent during the whole test was refused.
        assert all(c["accepted"] for c in r.emulator.calls if c["path"].endswith("/messages"))
