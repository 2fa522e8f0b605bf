"""Comments on the Page's posts: feed changes become comment events; bot logic answers with Meta's one private
reply (Send API recipient comment_id) within 7 days, or in public; what Meta says to ignore is ignored, and
malformed feed, reaction and edit entries are skipped and logged, never a 5xx."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from activity_kit import history_until, serve_with_logic, user_does
from channel_messenger.emulator import GraphEmulator, comment_change, feed_body
from messenger_testkit import PAGE_A, SECRET, TOKEN_A, FakeMeta, add_bot, write_global
from observation_kit import outbox, seen, spy_on_bot_logic

from botpress_py.testing import wait_for

BOT = "shop"


def rig(tmp_path: Path, emulator: GraphEmulator) -> tuple[Path, Path]:
    data = tmp_path / "data"
    write_global(data, emulator)
    add_bot(data, BOT, TOKEN_A)
    emulator.app_secret = SECRET
    return data, spy_on_bot_logic(data, BOT, tmp_path / "seen.jsonl")


def private_replies(emulator: GraphEmulator) -> list[dict[str, Any]]:
    return [c for c in emulator.calls if c["path"].endswith("/messages")
            and "comment_id" in ((c["json"] or {}).get("recipient") or {})]


async def test_a_comment_becomes_an_event_and_bot_logic_answers_with_one_private_reply(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator)
    async with serve_with_logic(data) as server:
        sent = await user_does(http, emulator, server, PAGE_A, "71", comment="Price? private please",
                               name="Ada Lovelace")
        comment_id, post_id = sent["event"]["value"]["comment_id"], sent["event"]["value"]["post_id"]
        await emulator.wait_for(lambda e: [c for c in private_replies(e) if c["accepted"]])
        [call] = private_replies(emulator)
        assert call["json"] == {"recipient": {"comment_id": comment_id}, "messaging_type": "RESPONSE",
                                "message": {"text": "Thanks! I sent you the details in Messenger."}}
        assert not [c for c in emulator.calls if (c["json"] or {}).get("sender_action")], "no typing, no seen"

        [event] = [e for e in seen(spy) if e["type"] == "comment"]
        assert event["payload"] == {"type": "comment", "commentId": comment_id, "postId": post_id,
                                    "parentId": post_id, "text": "Price? private please",
                                    "author": {"id": "71", "name": "Ada Lovelace"},
                                    "createdTime": event["payload"]["createdTime"]}
        # Meta answers with the author's PSID: where the conversation goes on once they write back.
        history = await history_until(server, BOT, "71", lambda h: any(m["direction"] == "outgoing" for m in h))
        [reply] = [m for m in history if m["direction"] == "outgoing"]
        assert reply["flags"]["privateReplyRecipient"] == "71"

        # The person answers in Messenger: an ordinary conversation from then on.
        await user_does(http, emulator, server, PAGE_A, "71", text="hello")
        await emulator.wait_for(lambda e: [b for b in e.sent_messages if b["recipient"].get("id") == "71"])


async def test_a_second_private_reply_and_one_after_seven_days_are_refused_with_the_reason(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data, _ = rig(tmp_path, emulator)
    async with serve_with_logic(data) as server:
        await user_does(http, emulator, server, PAGE_A, "72", comment="say it twice")
        old = emulator.add_comment(PAGE_A, "73", "private, but old", created_s=int(time.time()) - 8 * 86400)
        assert (await emulator.post_delivery(server.url, PAGE_A, feed_body(PAGE_A, [old])))[0] == 200

        def failed() -> list[dict[str, Any]]:
            rows = [r for r in outbox(data) if r["status"] == "failed"]
            return rows if len(rows) == 2 else []

        rows = await wait_for(failed)
        by_text = {r["payload"]["text"]: r["error"] for r in rows}
        assert "one private reply per comment" in by_text["Second."]
        assert "within 7 days" in by_text["Thanks! I sent you the details in Messenger."]
        assert [c["json"]["message"]["text"] for c in private_replies(emulator)] == ["First."], \
            "what Meta would refuse is never sent"


async def test_a_public_reply_goes_under_the_comment(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data, _ = rig(tmp_path, emulator)
    async with serve_with_logic(data) as server:
        sent = await user_does(http, emulator, server, PAGE_A, "74", comment="public praise")
        comment_id = sent["event"]["value"]["comment_id"]
        await emulator.wait_for(lambda e: e.calls_to(r"/comments$", "POST"))
        [call] = emulator.calls_to(r"/comments$", "POST")
        assert call["path"].endswith(f"/{comment_id}/comments") and call["accepted"]
        assert call["json"] == {"message": "Thanks for your comment!"}
        assert private_replies(emulator) == [], "a public reply uses no private one"


async def test_the_pages_own_comments_edits_removals_and_other_items_are_ignored(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data, spy = rig(tmp_path, emulator)
    async with serve_with_logic(data) as server:
        page_own = comment_change(PAGE_A, PAGE_A, "private: we answer in public")
        edited = comment_change(PAGE_A, "75", "private edited", verb="edited")
        removed = comment_change(PAGE_A, "75", "private removed", verb="remove")
        post = comment_change(PAGE_A, "75", "a post")
        post["value"]["item"] = "post"
        mention = {"field": "mention", "value": {"item": "comment", "verb": "add"}}
        kept = comment_change(PAGE_A, "75", "the one kept")
        body = feed_body(PAGE_A, [page_own, edited, removed, post, mention, kept])
        assert (await emulator.post_delivery(server.url, PAGE_A, body))[0] == 200
        await wait_for(lambda: seen(spy))
        assert [e["payload"]["text"] for e in seen(spy)] == ["the one kept"]
        assert private_replies(emulator) == []


async def test_malformed_feed_reaction_and_edit_entries_are_skipped_and_logged_never_5xx(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    data, spy = rig(tmp_path, emulator)
    async with serve_with_logic(data) as server:
        meta = FakeMeta(http, server)
        now = int(time.time() * 1000)

        def ev(**body: Any) -> dict[str, Any]:
            return {"sender": {"id": "76"}, "recipient": {"id": PAGE_A}, "timestamp": now, **body}

        bad_value = {"field": "feed", "value": ["not", "an", "object"]}
        bad_id = comment_change(PAGE_A, "76", "x")
        bad_id["value"]["comment_id"] = ["a", "list"]
        body = {"object": "page", "entry": [
            {"id": PAGE_A, "time": now, "changes": "not a list"},
            {"id": PAGE_A, "time": now, "changes": [bad_value, bad_id, 42]},
            {"id": PAGE_A, "time": now, "messaging": [
                ev(reaction={"action": "dance", "mid": "m_1"}), ev(reaction={"action": "react"}),
                ev(message_edit={"mid": ["x"], "text": "y"}), ev(message_edit={"mid": "m_2", "text": 5}),
                ev(message={"mid": "m_good", "text": "hello"})]},
        ]}
        with caplog.at_level(logging.WARNING):
            status, _ = await meta.post(body)
        assert status == 200
        await emulator.wait_for(lambda e: e.sent_messages)
        assert [e["payload"].get("text") for e in seen(spy)] == ["hello"]
        logged = "\n".join(r.getMessage() for r in caplog.records)
        for field in ("entry.changes", "changes[0].value", "changes[1].value.comment_id", "changes[2]",
                      "reaction.action", "reaction.mid", "message_edit.mid", "message_edit.text"):
            assert f"skipped: {field}:" in logged, field
        assert "hello" not in logged and json.dumps(["a", "list"]) not in logged, "never the values"
