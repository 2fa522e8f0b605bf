"""Reactions, edits, unsent messages, quoted replies and Page comments as the channel reads them (every value
checked), and how replies are addressed: a reaction to the message answered, Meta's one private reply to a
comment within 7 days."""

from __future__ import annotations

import pytest
from channel_messenger.answering import Answering
from channel_messenger.comments import PRIVATE_REPLY_WINDOW_MS, as_private_reply, entry_comments
from channel_messenger.emulator import comment_change
from channel_messenger.incoming import map_messaging_event
from channel_messenger.reactions import rerun_edits
from channel_messenger.rendering import render_payload
from channel_messenger.validation import Malformed

from botpress_py.sdk import DeliveryError, IOEvent

PAGE, USER, TS = "1001", "42", 1_767_225_600_000


def event(**body: object) -> dict[str, object]:
    return {"sender": {"id": USER}, "recipient": {"id": PAGE}, "timestamp": TS, **body}


def one(raw: dict[str, object]) -> IOEvent:
    [mapped] = map_messaging_event(raw, PAGE, received_ms=TS)
    return mapped


def test_an_edit_and_an_unsent_message_reach_bot_logic_deduplicated_per_change() -> None:
    first = one(event(message_edit={"mid": "m_1", "text": "hello", "num_edit": 1}))
    again = one(event(message_edit={"mid": "m_1", "text": "hello", "num_edit": 1}))
    second = one(event(message_edit={"mid": "m_1", "text": "hello!", "num_edit": 2}))
    assert first.type == "edit" and not first.silent and first.preview == "hello"
    assert first.payload == {"type": "edit", "mid": "m_1", "text": "hello", "numEdit": 1}
    assert first.dedupeKey == again.dedupeKey != second.dedupeKey
    deleted = one(event(message={"mid": "m_1", "is_deleted": True}))
    assert (deleted.type, deleted.payload, deleted.dedupeKey) == ("delete", {"type": "delete", "mid": "m_1"},
                                                                    "m_1#deleted")


def test_rerun_on_edit_turns_an_edit_into_a_text_bot_logic_answers() -> None:
    edit = one(event(message_edit={"mid": "m_1", "text": "hello", "num_edit": 3}))
    rerun_edits([edit])
    assert edit.type == "text" and edit.payload == {"type": "text", "text": "hello", "mid": "m_1", "edited": True,
                                                    "numEdit": 3}


def test_a_quoted_reply_names_the_message_it_quotes() -> None:
    quoted = one(event(message={"mid": "m_2", "text": "this one", "reply_to": {"mid": "m_1", "is_self_reply": True}}))
    assert quoted.payload["replyTo"] == "m_1" and quoted.payload["replyToSelf"] is True


@pytest.mark.parametrize(("body", "field"), [
    ({"reaction": {"action": "dance", "mid": "m_1"}}, "reaction.action"),
    ({"reaction": {"action": "react", "mid": ["m_1"]}}, "reaction.mid"),
    ({"reaction": "love"}, "reaction"),
    ({"message_edit": {"mid": "m_1", "text": {"a": 1}}}, "message_edit.text"),
    ({"message_edit": {"text": "x"}}, "message_edit.mid"),
    ({"message": {"mid": None, "is_deleted": True}}, "message.mid"),
])
def test_unreadable_reactions_edits_and_deletions_say_where(body: dict[str, object], field: str) -> None:
    with pytest.raises(Malformed) as refused:
        map_messaging_event(event(**body), PAGE, received_ms=TS)
    assert refused.value.field == field


def comments(*changes: object) -> list[IOEvent | Malformed]:
    return list(entry_comments({"id": PAGE, "changes": list(changes)}, PAGE, TS))


def test_a_comment_without_author_or_time_is_its_own_conversation_at_the_receive_time() -> None:
    change = comment_change(PAGE, "77", "hi", comment_id="511_9", post_id="1001_511")
    del change["value"]["from"], change["value"]["created_time"], change["value"]["message"]
    [mapped] = comments(change)
    assert isinstance(mapped, IOEvent)
    assert mapped.target == "511_9" and mapped.threadId == PAGE and mapped.createdOn == TS
    assert mapped.payload["text"] == "" and mapped.preview == "[comment]" and mapped.dedupeKey == "comment:511_9"


def test_ignored_and_unreadable_feed_changes() -> None:
    own = comment_change(PAGE, PAGE, "ours")
    hidden = comment_change(PAGE, "77", "x", verb="hide")
    bad = comment_change(PAGE, "77", "x")
    bad["value"]["post_id"] = 1.5
    found = comments(own, hidden, {"field": "feed", "value": None}, bad, "junk")
    assert [(f.field if isinstance(f, Malformed) else f.type) for f in found] == [
        "changes[2].value", "changes[3].value.post_id", "changes[4]"]
    [refused] = entry_comments({"changes": {"not": "a list"}}, PAGE, TS)
    assert isinstance(refused, Malformed) and refused.field == "entry.changes"


def reply(comment_event: IOEvent, payload: dict[str, object]) -> IOEvent:
    return comment_event.reply_event(payload)


def test_the_first_message_answering_a_comment_is_its_private_reply_and_no_later_one() -> None:
    [comment] = comments(comment_change(PAGE, "77", "hi", comment_id="511_9"))
    assert isinstance(comment, IOEvent)
    answering = Answering()
    answering.note(comment)
    typing, first, second = (reply(comment, p) for p in ({"type": "typing", "value": 500},
                                                          {"type": "text", "text": "one"},
                                                          {"type": "text", "text": "two"}))
    for outgoing in (typing, first, second):
        answering.prepare(outgoing)
    assert [e.flags["privateReply"]["used"] for e in (typing, first, second)] == [False, False, True]

    now = comment.payload["createdTime"] + 1000
    steps = as_private_reply(render_payload(first.payload, "77"), first.flags["privateReply"], now).steps
    assert steps == [{"recipient": {"comment_id": "511_9"}, "messaging_type": "RESPONSE",
                      "message": {"text": "one"}}]
    assert as_private_reply(render_payload(typing.payload, "77"), typing.flags["privateReply"], now).steps == []
    with pytest.raises(DeliveryError, match="one private reply per comment"):
        as_private_reply(render_payload(second.payload, "77"), second.flags["privateReply"], now)
    with pytest.raises(DeliveryError, match="within 7 days"):
        as_private_reply(render_payload(first.payload, "77"), first.flags["privateReply"],
                         comment.payload["createdTime"] + PRIVATE_REPLY_WINDOW_MS + 1)
    long = {"type": "text", "text": "word " * 600}
    with pytest.raises(DeliveryError, match="one message"):
        as_private_reply(render_payload(long, "77"), first.flags["privateReply"], now)


def test_a_reaction_without_message_id_reacts_to_the_message_answered() -> None:
    said = one(event(message={"mid": "m_user", "text": "hi"}))
    answering = Answering()
    answering.note(said)
    react = said.reply_event({"type": "custom", "messenger": {"sender_action": "react", "payload": {"reaction": "👍"}}})
    other = said.reply_event({"type": "custom", "messenger": {"sender_action": "react",
                                                              "payload": {"reaction": "👍", "message_id": "m_x"}}})
    answering.prepare(react)
    answering.prepare(other)
    assert react.payload["messenger"]["payload"] == {"reaction": "👍", "message_id": "m_user"}
    assert other.payload["messenger"]["payload"]["message_id"] == "m_x", "a given message_id is kept"
