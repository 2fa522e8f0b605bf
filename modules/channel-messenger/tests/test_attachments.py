"""Media the bot sends go through the Attachment Upload API once per Page (and per Instagram account), and their
attachment_id is reused: across replies and restarts, renewed before Meta lets it expire, uploaded again when Meta
no longer knows it; never on the reply's critical path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger import attachments
from channel_messenger.emulator import GraphEmulator
from instagram_kit import ACCOUNT_A, SERVER_NAMESPACE, ig_say, messages_to, uploads
from messenger_testkit import PAGE_A, TOKEN_A, FakeMeta, add_bot, serve, write_global

from botpress_py.testing import wait_for

CAT = "https://cdn.example/cat.png"
QNA = {"entries": [{"id": "cat", "questions": ["cat"], "answers": [{"type": "image", "image": CAT}]}],
       "fallback": [{"type": "text", "text": "?"}]}
BY_URL = {"attachment": {"type": "image", "payload": {"url": CAT, "is_reusable": True}}}
CAT_KEY = attachments.state_key("messenger", PAGE_A, "image", CAT)


def by_id(attachment_id: str) -> dict[str, Any]:
    return {"attachment": {"type": "image", "payload": {"attachment_id": attachment_id}}}


@pytest.fixture
def data(tmp_path: Path, emulator: GraphEmulator) -> Path:
    emulator.instagram.link(PAGE_A, ACCOUNT_A)
    folder = tmp_path / "data"
    write_global(folder, emulator)
    return folder


async def ask(meta: FakeMeta, emulator: GraphEmulator, user: str, mid: str) -> dict[str, Any]:
    """A Messenger user asks for the cat: the message the bot sent them."""
    assert await meta.say(PAGE_A, user, "cat", mid=mid) == 200
    await emulator.wait_for(lambda e: messages_to(e, user))
    return messages_to(emulator, user)[-1]["message"]


def accepted_uploads(emulator: GraphEmulator) -> list[dict[str, Any]]:
    return [c for c in uploads(emulator) if c["accepted"]]


async def uploaded(emulator: GraphEmulator, count: int) -> str:
    """Wait for ``count`` accepted uploads; the attachment id Meta answered to the last one."""
    await emulator.wait_for(lambda e: len(accepted_uploads(e)) >= count)
    return emulator.attachments.uploads()[-1]["id"]


async def kept(server: Any, attachment_id: str, key: str = CAT_KEY) -> None:
    """Wait until the channel stored the id Meta answered (it is in memory a moment before)."""
    async def stored() -> bool:
        value = await server.storage.kv_get(SERVER_NAMESPACE, key)
        return isinstance(value, dict) and value.get("id") == attachment_id

    await wait_for(stored)


async def test_a_media_url_is_uploaded_once_and_its_id_reused_across_replies_and_restarts(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await ask(meta, emulator, "41", "m1") == BY_URL, "the first send does not wait for an upload"
        attachment_id = await uploaded(emulator, 1)
        [upload] = uploads(emulator)
        assert (upload["method"], upload["path"]) == ("POST", f"/v27.0/{PAGE_A}/message_attachments")
        assert upload["json"] == {"message": {"attachment": {"type": "image", "payload": {"url": CAT,
                                                                                          "is_reusable": True}}}}
        await kept(server, attachment_id)
        assert await ask(meta, emulator, "42", "m2") == by_id(attachment_id)
        assert await ask(meta, emulator, "43", "m3") == by_id(attachment_id)

        stored = await wait_for(lambda: server.storage.kv_get(SERVER_NAMESPACE, CAT_KEY))
        assert (stored["id"], stored["type"]) == (attachment_id, "image")
        assert CAT_KEY.startswith(f"attachment/messenger/{PAGE_A}/")
        assert CAT not in json.dumps(await _stored(server)), "ids only, never the URL"

    async with serve(data) as server:  # a restart: the id comes from storage
        assert await ask(FakeMeta(http, server), emulator, "44", "m4") == by_id(attachment_id)
    assert len(uploads(emulator)) == 1


async def _stored(server: Any) -> list[tuple[str, Any]]:
    from observation_kit import sqlite_rows

    rows = sqlite_rows(server.data_dir, "SELECT key, value FROM kv WHERE namespace = ?", SERVER_NAMESPACE)
    return [(key, json.loads(value)) for key, value in rows]


async def test_an_id_meta_no_longer_knows_is_sent_by_url_at_once_and_uploaded_again(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        await ask(meta, emulator, "41", "m1")
        first = await uploaded(emulator, 1)
        await kept(server, first)
        assert emulator.attachments.expire() == 1  # Meta's 90 days are over (or the asset was deleted)

        assert await ask(meta, emulator, "42", "m2") == BY_URL, "the user still gets the picture, in the same reply"
        refused = [c for c in emulator.calls if c["path"].endswith("/messages") and not c["accepted"]]
        assert [c["json"]["message"] for c in refused] == [by_id(first)]
        second = await uploaded(emulator, 2)
        assert second != first
        await kept(server, second)
        assert await ask(meta, emulator, "43", "m3") == by_id(second)


async def test_an_id_is_kept_when_meta_refuses_the_url_too(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        await ask(meta, emulator, "41", "m1")
        first = await uploaded(emulator, 1)
        await kept(server, first)
        # Meta refuses the user, whatever is sent (code 100, "No matching user found"): not the id's fault.
        emulator.fail_next(2, status=400, code=100, subcode=2018001, path="/messages$", has="message",
                           message="(#100) No matching user found")
        assert await meta.say(PAGE_A, "42", "cat", mid="m2") == 200
        await emulator.wait_for(lambda e: len([c for c in e.calls if c.get("fault")]) == 2)
        faulted = [c["json"]["message"] for c in emulator.calls if c.get("fault")]
        assert faulted == [by_id(first), BY_URL]
        assert await ask(meta, emulator, "43", "m3") == by_id(first), "the id is still used"
    assert len(uploads(emulator)) == 1


async def test_an_id_is_renewed_before_meta_lets_it_expire(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA)
    async with serve(data) as server:
        await ask(FakeMeta(http, server), emulator, "41", "m1")
        first = await uploaded(emulator, 1)
        value = await wait_for(lambda: server.storage.kv_get(SERVER_NAMESPACE, CAT_KEY))
        assert value["id"] == first
        aged = value["at"] - (attachments.ATTACHMENT_TTL_SECONDS + 60) * 1000
        await server.storage.kv_set(SERVER_NAMESPACE, CAT_KEY, {**value, "at": aged})

    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await ask(meta, emulator, "42", "m2") == BY_URL, "too old to trust: by URL, not refused by Meta"
        second = await uploaded(emulator, 2)
        assert second != first
        await kept(server, second)
        assert await ask(meta, emulator, "43", "m3") == by_id(second)
    assert all(c["accepted"] for c in emulator.calls if c["path"].endswith("/messages"))


async def test_instagram_media_are_uploaded_for_the_account_apart_from_the_pages(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA, instagram={"enabled": True})
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await ig_say(meta, emulator, ACCOUNT_A, "610", "cat", "ig1") == 200
        await emulator.wait_for(lambda e: messages_to(e, "610"))
        assert messages_to(emulator, "610")[-1]["message"] == BY_URL
        instagram_id = await uploaded(emulator, 1)
        assert uploads(emulator)[0]["json"]["platform"] == "instagram"
        await kept(server, instagram_id, attachments.state_key("instagram", PAGE_A, "image", CAT))
        assert await ig_say(meta, emulator, ACCOUNT_A, "611", "cat", "ig2") == 200
        await emulator.wait_for(lambda e: messages_to(e, "611"))
        assert messages_to(emulator, "611")[-1]["message"] == by_id(instagram_id)

        # The Page's Messenger users need a Messenger id: the Instagram one is not used for them.
        assert await ask(meta, emulator, "41", "m1") == BY_URL
        messenger_id = await uploaded(emulator, 2)
        assert "platform" not in uploads(emulator)[1]["json"] and messenger_id != instagram_id
        await kept(server, messenger_id)
        assert await ask(meta, emulator, "42", "m2") == by_id(messenger_id)
    assert all(c["accepted"] for c in emulator.calls if c["path"].endswith("/messages"))


async def test_one_url_sent_to_many_users_at_once_is_uploaded_once(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA)
    users = [str(500 + n) for n in range(8)]
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        events = [GraphEmulator.user_message(PAGE_A, user, "cat", f"m_{user}") for user in users]
        assert (await meta.post(GraphEmulator.webhook_body(PAGE_A, events)))[0] == 200
        await emulator.wait_for(lambda e: all(messages_to(e, user) for user in users))
        await uploaded(emulator, 1)
        await wait_for(lambda: messenger_attachments(server).uploading == 0)
    assert len(uploads(emulator)) == 1


def messenger_attachments(server: Any) -> attachments.Attachments:
    from messenger_testkit import messenger

    return messenger(server).attachments


async def test_a_failed_upload_leaves_media_going_by_url_without_a_retry_storm(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    emulator.attachments.broken_urls.add(CAT)  # Meta cannot fetch it for an upload
    add_bot(data, "shop", TOKEN_A, qna=QNA)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await ask(meta, emulator, "41", "m1") == BY_URL
        await emulator.wait_for(lambda e: uploads(e))
        await wait_for(lambda: messenger_attachments(server).uploading == 0)
        assert await ask(meta, emulator, "42", "m2") == BY_URL
        assert await ask(meta, emulator, "43", "m3") == BY_URL
    assert len(uploads(emulator)) == 1, "tried again only after RETRY_UPLOAD_AFTER_SECONDS"


async def test_reuse_attachments_false_sends_the_url_every_time(
        data: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    add_bot(data, "shop", TOKEN_A, qna=QNA, reuseAttachments=False)
    async with serve(data) as server:
        meta = FakeMeta(http, server)
        assert await ask(meta, emulator, "41", "m1") == BY_URL
        assert await ask(meta, emulator, "42", "m2") == BY_URL
    assert uploads(emulator) == []


def test_the_ids_kept_in_memory_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attachments, "MEMORY_LIMIT", 3)
    kept = attachments.Attachments()
    for n in range(10):
        kept._remember(f"k{n}", str(n), 0)
    assert list(kept._known) == ["k7", "k8", "k9"]


def test_only_reusable_media_urls_are_taken_over() -> None:
    step = {"recipient": {"id": "1"}, "messaging_type": "RESPONSE", "message": {**BY_URL, "quick_replies": [{}]}}
    assert attachments.media_of(step) == ("image", CAT)
    assert attachments.with_attachment_id(step, "99")["message"] == {**by_id("99"), "quick_replies": [{}]}
    assert step["message"]["attachment"]["payload"]["url"] == CAT, "the rendered step is left as it was"
    custom = {"message": {"attachment": {"type": "image", "payload": {"url": CAT}}}}
    assert attachments.media_of(custom) is None, "a custom payload without is_reusable is sent as given"
    assert attachments.media_of({"message": {"text": "hi"}}) is None
    template = {"message": {"attachment": {"type": "template", "payload": {"is_reusable": True, "url": CAT}}}}
    assert attachments.media_of(template) is None
