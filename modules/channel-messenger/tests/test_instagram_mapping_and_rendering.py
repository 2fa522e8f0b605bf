"""Instagram events → IOEvents of channel "instagram", whatever a delivery holds; standard payloads → Send API
bodies within Instagram's limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channel_messenger.incoming import map_messaging_event
from channel_messenger.instagram import map_instagram_event
from channel_messenger.instagram_rendering import MAX_TEXT_BYTES, render_instagram_payload, utf8_len, utf8_prefix
from channel_messenger.rendering import RenderError, render_payload
from channel_messenger.validation import Malformed
from hypothesis import given, settings
from hypothesis import strategies as st
from webhook_strategies import EVENTS, TEXT, perturbed

ACCOUNT = "17841400000000101"
IGSID = "6100000000000009"
TS = 1_767_225_600_000

INSTAGRAM_SHAPES = [
    {"sender": {"id": IGSID}, "recipient": {"id": ACCOUNT}, "timestamp": TS,
     "message": {"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx", "is_deleted": True}},
    {"sender": {"id": IGSID}, "recipient": {"id": ACCOUNT}, "timestamp": TS,
     "message": {"mid": "m_story", "text": TEXT, "reply_to": {"story": {"url": "https://cdn.example/s", "id": "1"}}}},
    {"sender": {"id": IGSID}, "recipient": {"id": ACCOUNT}, "timestamp": TS,
     "message": {"mid": "m_share", "attachments": [{"type": "ig_post", "payload": {"ig_post_media_id": "18139",
                                                                                     "title": TEXT}}]}},
    {"sender": {"id": IGSID}, "recipient": {"id": ACCOUNT}, "timestamp": TS, "read": {"mid": "m_seen"}},
    {"sender": {"id": IGSID}, "recipient": {"id": ACCOUNT}, "timestamp": TS,
     "message": {"mid": "m_unsupported", "is_unsupported": True}},
]
RAW_EVENTS = st.one_of(EVENTS, *(perturbed(shape) for shape in INSTAGRAM_SHAPES))


@settings(max_examples=300, deadline=None)
@given(RAW_EVENTS)
def test_any_instagram_event_maps_to_storable_instagram_events_or_is_skipped(raw: Any) -> None:
    try:
        events = map_instagram_event(raw, ACCOUNT, received_ms=TS)
    except Malformed as exc:
        assert exc.field and exc.reason  # skipped with where and what: the webhook logs it
        return
    assert events
    for event in events:
        assert (event.channel, event.threadId, event.direction) == ("instagram", ACCOUNT, "incoming")
        json.dumps(event.payload, allow_nan=False).encode()  # storable as it is
        assert event.dedupeKey


def test_an_instagram_event_is_messengers_but_on_its_own_channel() -> None:
    raw = {"sender": {"id": IGSID}, "recipient": {"id": ACCOUNT}, "timestamp": TS,
           "message": {"mid": "m_1", "text": "hi", "quick_reply": {"payload": "YES"}}}
    [instagram] = map_instagram_event(raw, ACCOUNT)
    [messenger] = map_messaging_event(raw, ACCOUNT)
    assert instagram.channel == "instagram" and messenger.channel == "messenger"
    assert (instagram.type, instagram.payload, instagram.dedupeKey, instagram.target) == \
        (messenger.type, messenger.payload, messenger.dedupeKey, messenger.target)
    echo = {"sender": {"id": ACCOUNT}, "recipient": {"id": IGSID}, "timestamp": TS,
            "message": {"mid": "m_echo", "text": "sent from the Instagram app", "is_echo": True}}
    [mapped] = map_instagram_event(echo, ACCOUNT)
    assert mapped.target == IGSID and mapped.silent, "the account's own message: recorded, never answered"


def bodies(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [s["message"] for s in render_instagram_payload(payload, IGSID).bodies if "message" in s]


@pytest.mark.parametrize("text", ["a" * 2500, "é" * 1400, "🌍 " * 700, ("Short sentence. " * 40 + "\n\n") * 3])
def test_text_is_split_into_parts_of_at_most_1000_bytes_at_natural_ends(text: str) -> None:
    parts = [m["text"] for m in bodies({"type": "text", "text": text})]
    assert len(parts) > 1 and all(0 < utf8_len(p) <= MAX_TEXT_BYTES for p in parts)
    assert "".join(parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    assert len(render_payload({"type": "text", "text": "é" * 1400}, IGSID).bodies) == 1, "Messenger counts characters"


def test_utf8_prefix_never_cuts_a_character() -> None:
    assert utf8_prefix("aé🌍", 1) == "a" and utf8_prefix("aé🌍", 2) == "a" and utf8_prefix("aé🌍", 3) == "aé"
    assert utf8_prefix("aé🌍", 6) == "aé" and utf8_prefix("aé🌍", 7) == "aé🌍"


def test_a_file_that_is_not_a_pdf_goes_as_its_link() -> None:
    assert bodies({"type": "file", "url": "/docs/terms.docx", "title": "Terms"}) == [
        {"text": "Terms\n/docs/terms.docx"}]
    assert bodies({"type": "file", "url": "https://cdn.example/terms.PDF?v=2"}) == [
        {"attachment": {"type": "file", "payload": {"url": "https://cdn.example/terms.PDF?v=2", "is_reusable": True}}}]
    assert bodies({"type": "image", "image": "https://cdn.example/cat.png"}) == [
        {"attachment": {"type": "image", "payload": {"url": "https://cdn.example/cat.png", "is_reusable": True}}}]


def test_cards_quick_replies_and_custom_payloads_on_instagram() -> None:
    card = {"type": "card", "title": "T", "actions": [{"action": "Postback", "title": "Go", "payload": "GO"}]}
    assert bodies(card) == [m["message"] for m in render_payload(card, IGSID).bodies]
    choice = {"type": "single-choice", "text": "Pick", "choices": [{"title": "A", "value": "a"}]}
    assert bodies(choice) == [{"text": "Pick", "quick_replies": [{"content_type": "text", "title": "A",
                                                                  "payload": "a"}]}]
    assert bodies({"type": "custom", "messenger": {"text": "fb"}, "instagram": [{"text": "ig"}]}) == [{"text": "ig"}]
    rendering = render_instagram_payload({"type": "custom", "messenger": {"text": "fb"}}, IGSID)
    assert rendering.steps == [] and "no 'instagram' key" in rendering.notes[0]
    with pytest.raises(RenderError, match="cannot be sent on Instagram"):
        render_instagram_payload({"type": "poll"}, IGSID)
