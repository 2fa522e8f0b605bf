"""Messenger webhook events → IOEvents: types, payloads, targets, dedupe keys and silence."""

from __future__ import annotations

from typing import Any

import pytest
from channel_messenger.incoming import map_entry, map_messaging_event
from channel_messenger.rendering import render_payload
from channel_messenger.validation import Malformed

PAGE = "1001"
USER = "4242"
TS = 1_700_000_000_000


def event(**body: Any) -> dict[str, Any]:
    return {"sender": {"id": USER}, "recipient": {"id": PAGE}, "timestamp": TS, **body}


def one(raw: dict[str, Any], **kwargs: Any):
    events = map_messaging_event(raw, PAGE, **kwargs)
    assert len(events) == 1
    return events[0]


def test_text_message() -> None:
    e = one(event(message={"mid": "m_1", "text": "hello"}))
    assert (e.type, e.channel, e.direction, e.target, e.threadId) == ("text", "messenger", "incoming", USER, PAGE)
    assert e.payload == {"type": "text", "text": "hello", "mid": "m_1"}
    assert e.dedupeKey == "m_1" and not e.silent and e.preview == "hello"
    assert e.createdOn == TS


def test_quick_reply_payload_wins_over_title() -> None:
    e = one(event(message={"mid": "m_2", "text": "Take the tour", "quick_reply": {"payload": "TOUR"}}))
    assert e.type == "quick_reply"
    assert e.payload == {"type": "quick_reply", "text": "Take the tour", "payload": "TOUR", "mid": "m_2"}


def test_postback() -> None:
    e = one(event(postback={"mid": "m_3", "title": "Get Started", "payload": "GET_STARTED"}))
    assert e.type == "postback"
    assert e.payload == {"type": "postback", "payload": "GET_STARTED", "title": "Get Started", "mid": "m_3"}
    assert e.dedupeKey == "m_3"


def test_postback_with_referral_keeps_it() -> None:
    ref = {"ref": "summer", "source": "SHORTLINK", "type": "OPEN_THREAD"}
    e = one(event(postback={"title": "Get Started", "payload": "GET_STARTED", "referral": ref}))
    assert e.payload["referral"] == ref
    assert e.dedupeKey and e.dedupeKey.startswith("h:")


def test_say_something_button_round_trips_to_text() -> None:
    """The postback a rendered "Say something" button sends comes back as the text it carries."""
    card = {"type": "card", "title": "T",
            "actions": [{"action": "Say something", "title": "About", "text": "about you"}]}
    button = render_payload(card, USER).steps[0]["message"]["attachment"]["payload"]["elements"][0]["buttons"][0]
    e = one(event(postback={"mid": "m_4", "title": button["title"], "payload": button["payload"]}))
    assert e.type == "text"
    assert e.payload == {"type": "text", "text": "about you", "mid": "m_4"}


def test_attachments_each_become_an_event_with_urls() -> None:
    events = map_messaging_event(event(message={"mid": "m_5", "attachments": [
        {"type": "image", "payload": {"url": "https://cdn/x.jpg"}},
        {"type": "audio", "payload": {"url": "https://cdn/x.mp4"}},
        {"type": "video", "payload": {"url": "https://cdn/v.mp4"}},
        {"type": "file", "payload": {"url": "https://cdn/f.pdf"}},
        {"type": "image", "payload": {"url": "https://cdn/s.png", "sticker_id": 369239263222822}},
        {"type": "fallback", "title": "A link", "payload": {"url": "https://example.com"}},
    ]}), PAGE)
    assert [e.type for e in events] == ["image", "audio", "video", "file", "image", "fallback"]
    assert events[0].payload == {"type": "image", "image": "https://cdn/x.jpg", "url": "https://cdn/x.jpg",
                                 "mid": "m_5"}
    assert events[1].payload["url"] == "https://cdn/x.mp4"
    assert events[5].payload == {"type": "fallback", "url": "https://example.com", "title": "A link", "mid": "m_5"}
    assert [e.dedupeKey for e in events] == ["m_5", "m_5#2", "m_5#3", "m_5#4", "m_5#5", "m_5#6"]


def test_sticker_type() -> None:
    sticker = {"type": "sticker", "payload": {"url": "https://cdn/st.png", "sticker_id": 1}}
    e = one(event(message={"mid": "m_6", "sticker_id": 1, "attachments": [sticker]}))
    assert e.type == "sticker" and e.payload["url"] == "https://cdn/st.png" and e.payload["stickerId"] == 1


def test_referral_is_answerable() -> None:
    e = one(event(referral={"ref": "promo", "source": "SHORTLINK", "type": "OPEN_THREAD"}))
    assert e.type == "referral" and not e.silent
    assert e.payload == {"type": "referral", "ref": "promo", "source": "SHORTLINK", "referralType": "OPEN_THREAD"}


def test_echo_is_silent_and_targets_the_user() -> None:
    raw = {"sender": {"id": PAGE}, "recipient": {"id": USER}, "timestamp": TS,
           "message": {"mid": "m_echo", "text": "bot said", "is_echo": True, "app_id": 1234}}
    e = one(raw)
    assert e.silent and e.flags["echo"] is True and e.flags["appId"] == "1234"
    assert e.target == USER and e.threadId == PAGE


def test_delivery_read_optin_handover_are_silent() -> None:
    raws = [
        event(delivery={"mids": ["m_1"], "watermark": TS}),
        event(read={"watermark": TS}),
        event(optin={"ref": "x"}),
        event(pass_thread_control={"new_owner_app_id": "1", "metadata": "m"}),
        event(something_new={"a": 1}),
    ]
    events = [one(r) for r in raws]
    assert [e.type for e in events] == ["delivery", "read", "optin", "handover", "unknown"]
    assert all(e.silent for e in events)
    assert all(e.dedupeKey for e in events)


def test_a_reaction_reaches_bot_logic_with_the_message_it_is_about() -> None:
    e = one(event(reaction={"reaction": "love", "emoji": "❤", "action": "react", "mid": "m_1"}))
    assert e.type == "reaction" and not e.silent and e.dedupeKey
    assert e.payload == {"type": "reaction", "action": "react", "mid": "m_1", "emoji": "❤", "reaction": "love"}
    assert e.preview == "[react ❤]"


def test_reaction_changes_are_not_deduplicated_away() -> None:
    first = one(event(reaction={"reaction": "love", "action": "react", "mid": "m_1"}))
    second = one({**event(reaction={"reaction": "like", "action": "react", "mid": "m_1"}), "timestamp": TS + 5})
    assert first.dedupeKey != second.dedupeKey


def test_standby_events_are_silent_even_when_they_are_messages() -> None:
    entry = {"id": PAGE, "time": TS, "standby": [event(message={"mid": "m_sb", "text": "to the human"})]}
    (e,), skipped = map_entry(entry, PAGE)
    assert e.type == "text" and e.silent and e.flags["standby"] is True and skipped == []


def test_entry_with_messaging_and_standby_and_nothing() -> None:
    entry = {"id": PAGE,
             "messaging": [event(message={"mid": "a", "text": "1"}), event(message={"mid": "b", "text": "2"})],
             "standby": [event(read={"watermark": 1})]}
    assert [e.dedupeKey for e in map_entry(entry, PAGE)[0]][:2] == ["a", "b"]
    assert map_entry({"id": PAGE}, PAGE) == ([], [])
    events, [skipped] = map_entry({"id": PAGE, "messaging": "garbage"}, PAGE)
    assert events == [] and skipped.field == "entry.messaging"
    with pytest.raises(Malformed):
        map_messaging_event("garbage", PAGE)


def test_dedupe_key_without_mid_is_stable_and_content_sensitive() -> None:
    a = one(event(message={"text": "hi"}))
    b = one(event(message={"text": "hi"}))
    c = one(event(message={"text": "ho"}))
    assert a.dedupeKey == b.dedupeKey != c.dedupeKey
