"""Every standard payload type → its exact Send API bodies, including Messenger's limits."""

from __future__ import annotations

import pytest
from channel_messenger.emulator import GraphError
from channel_messenger.emulator.send_checks import check_message
from channel_messenger.rendering import (
    MAX_QUICK_REPLIES,
    Pause,
    RenderError,
    RenderOptions,
    absolute_url,
    fb_len,
    render_payload,
    split_text,
    truncate,
)

USER = "4242"
EXT = "https://bot.example.com"
OPTIONS = RenderOptions(external_url=EXT)


def render(payload: dict, **kwargs: object) -> list:
    kwargs.setdefault("options", OPTIONS)
    return render_payload(payload, USER, **kwargs).steps  # type: ignore[arg-type]


def msg(message: dict, messaging_type: str = "RESPONSE") -> dict:
    return {"recipient": {"id": USER}, "messaging_type": messaging_type, "message": message}


def assert_graph_accepts(steps: list) -> None:
    """The emulator enforces Meta's limits: every rendered message must pass them."""
    for step in steps:
        if isinstance(step, dict) and "message" in step:
            check_message(step["message"])


# -- text -------------------------------------------------------------------------------------


def test_text_is_one_message() -> None:
    assert render({"type": "text", "text": "Hello there"}) == [msg({"text": "Hello there"})]


def test_messaging_type_update_for_proactive_and_tag() -> None:
    assert render({"type": "text", "text": "x"}, messaging_type="UPDATE") == [msg({"text": "x"}, "UPDATE")]
    tagged = render({"type": "text", "text": "x"}, messaging_type="UPDATE", tag="HUMAN_AGENT")
    assert tagged == [{**msg({"text": "x"}, "MESSAGE_TAG"), "tag": "HUMAN_AGENT"}]


def test_text_of_exactly_2000_is_not_split() -> None:
    text = "a" * 2000
    assert render({"type": "text", "text": text}) == [msg({"text": text})]


def test_long_text_splits_on_sentences_and_every_part_fits() -> None:
    sentence = "This sentence is exactly fifty characters long ok. "
    text = (sentence * 60).strip()  # ~3000 characters
    steps = render({"type": "text", "text": text})
    parts = [s["message"]["text"] for s in steps]
    assert len(parts) == 2
    assert all(fb_len(p) <= 2000 for p in parts)
    assert all(p.endswith("ok.") for p in parts), "cut between sentences, not inside one"
    assert " ".join(parts) == text
    assert_graph_accepts(steps)


def test_split_prefers_paragraphs_then_words_then_hard_cut() -> None:
    para = "word " * 300
    text = para.strip() + "\n\n" + para.strip()
    chunks = split_text(text)
    assert chunks == [para.strip(), para.strip()]
    words = split_text(("abcdefghi " * 450).strip())
    assert all(c.endswith("abcdefghi") for c in words) and all(fb_len(c) <= 2000 for c in words)
    hard = split_text("x" * 4500)
    assert [len(c) for c in hard] == [2000, 2000, 500]


def test_split_counts_emoji_as_two_units_and_never_splits_a_pair() -> None:
    chunks = split_text("😀" * 1500)
    assert [fb_len(c) for c in chunks] == [2000, 1000]
    assert "".join(chunks) == "😀" * 1500


def test_empty_text_is_a_render_error() -> None:
    with pytest.raises(RenderError):
        render({"type": "text", "text": "   "})


# -- single-choice ----------------------------------------------------------------------------


def test_single_choice_quick_replies_exact() -> None:
    steps = render({"type": "single-choice", "text": "Pick one",
                    "choices": [{"title": "Yes", "value": "YES"}, {"title": "No", "value": "NO"}]})
    assert steps == [msg({"text": "Pick one", "quick_replies": [
        {"content_type": "text", "title": "Yes", "payload": "YES"},
        {"content_type": "text", "title": "No", "payload": "NO"},
    ]})]


def test_single_choice_long_title_is_cut_with_ellipsis_and_payload_kept() -> None:
    steps = render({"type": "single-choice", "text": "Pick",
                    "choices": [{"title": "A very long choice title indeed", "value": "LONG"}]})
    reply = steps[0]["message"]["quick_replies"][0]
    # cut at 19 characters, trailing space dropped, then "…"
    assert reply == {"content_type": "text", "title": "A very long choice…", "payload": "LONG"}
    assert fb_len(reply["title"]) <= 20
    assert_graph_accepts(steps)


def test_single_choice_13_choices_stay_quick_replies() -> None:
    choices = [{"title": f"C{i}", "value": f"V{i}"} for i in range(13)]
    steps = render({"type": "single-choice", "text": "Pick", "choices": choices})
    assert len(steps) == 1 and len(steps[0]["message"]["quick_replies"]) == MAX_QUICK_REPLIES


def test_single_choice_over_13_becomes_text_then_postback_buttons() -> None:
    choices = [{"title": f"Choice {i}", "value": f"V{i}"} for i in range(1, 15)]
    rendering = render_payload({"type": "single-choice", "text": "Pick one", "choices": choices}, USER,
                               options=OPTIONS)
    steps = rendering.steps
    assert steps[0] == msg({"text": "Pick one"})
    elements = steps[1]["message"]["attachment"]["payload"]["elements"]
    assert len(steps) == 2
    dash = "\u2013"  # en dash
    ranges = ((1, 3), (4, 6), (7, 9), (10, 12), (13, 14))
    assert [e["title"] for e in elements] == [f"{a}{dash}{b} / 14" for a, b in ranges]
    assert elements[0]["buttons"] == [
        {"type": "postback", "title": "Choice 1", "payload": "V1"},
        {"type": "postback", "title": "Choice 2", "payload": "V2"},
        {"type": "postback", "title": "Choice 3", "payload": "V3"},
    ]
    buttons = [b["payload"] for e in elements for b in e["buttons"]]
    assert buttons == [f"V{i}" for i in range(1, 15)], "every choice stays reachable, in order"
    assert any("quick replies" in note for note in rendering.notes)
    assert_graph_accepts(steps)


def test_single_choice_over_30_choices_needs_two_carousels() -> None:
    choices = [{"title": str(i), "value": str(i)} for i in range(31)]
    steps = render({"type": "single-choice", "text": "Pick", "choices": choices})
    templates = [s["message"]["attachment"]["payload"]["elements"] for s in steps[1:]]
    assert [len(t) for t in templates] == [10, 1]
    assert_graph_accepts(steps)


def test_single_choice_long_text_puts_quick_replies_on_last_part() -> None:
    text = ("Long sentence here. " * 150).strip()
    steps = render({"type": "single-choice", "text": text, "choices": [{"title": "Ok", "value": "OK"}]})
    assert len(steps) == 2
    assert "quick_replies" not in steps[0]["message"]
    assert steps[1]["message"]["quick_replies"] == [{"content_type": "text", "title": "Ok", "payload": "OK"}]
    assert_graph_accepts(steps)


def test_single_choice_without_text_or_value_still_valid() -> None:
    steps = render({"type": "single-choice", "text": "", "choices": [{"title": "Only title"}, {"value": "V"}]})
    assert steps == [msg({"text": "…", "quick_replies": [
        {"content_type": "text", "title": "Only title", "payload": "Only title"},
        {"content_type": "text", "title": "V", "payload": "V"},
    ]})]
    assert_graph_accepts(steps)


def test_single_choice_payload_over_1000_is_cut() -> None:
    steps = render({"type": "single-choice", "text": "t", "choices": [{"title": "x", "value": "v" * 1500}]})
    assert len(steps[0]["message"]["quick_replies"][0]["payload"]) == 1000
    assert_graph_accepts(steps)


# -- media ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "video", "audio"])
def test_media_attachments(kind: str) -> None:
    assert render({"type": kind, "url": "https://cdn.example.com/a.bin"}) == [
        msg({"attachment": {"type": kind, "payload": {"url": "https://cdn.example.com/a.bin", "is_reusable": True}}})
    ]


def test_image_with_relative_url_and_title() -> None:
    steps = render({"type": "image", "image": "/assets/bot/cat.png", "title": "A cat"})
    assert steps == [
        msg({"text": "A cat"}),
        msg({"attachment": {"type": "image",
                            "payload": {"url": "https://bot.example.com/assets/bot/cat.png", "is_reusable": True}}}),
    ]


def test_absolute_url_rules() -> None:
    assert absolute_url("media/x.png", "http://h:3000/") == "http://h:3000/media/x.png"
    assert absolute_url("https://a/b", "http://h") == "https://a/b"
    assert absolute_url("//cdn/b", "http://h") == "//cdn/b"


def test_media_without_url_is_a_render_error() -> None:
    with pytest.raises(RenderError):
        render({"type": "image", "title": "no url"})


# -- card / carousel --------------------------------------------------------------------------


def test_card_exact_generic_template() -> None:
    steps = render({
        "type": "card", "title": "Shoes", "subtitle": "Red ones", "image": "/img/shoe.png",
        "actions": [
            {"action": "Open URL", "title": "Buy", "url": "https://shop.example.com/shoe"},
            {"action": "Postback", "title": "Details", "payload": "DETAILS_SHOE"},
            {"action": "Say something", "title": "Say hi", "text": "hi"},
        ],
    })
    assert steps == [msg({"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": [{
        "title": "Shoes",
        "subtitle": "Red ones",
        "image_url": "https://bot.example.com/img/shoe.png",
        "buttons": [
            {"type": "web_url", "url": "https://shop.example.com/shoe", "title": "Buy"},
            {"type": "postback", "title": "Details", "payload": "DETAILS_SHOE"},
            {"type": "postback", "title": "Say hi", "payload": "say::hi"},
        ],
    }]}}})]


def test_card_limits_titles_and_extra_buttons_continue_on_next_card() -> None:
    actions = [{"action": "Postback", "title": f"Button number {i} longer", "payload": f"P{i}"} for i in range(5)]
    steps = render({"type": "card", "title": "T" * 100, "subtitle": "S" * 100, "actions": actions})
    elements = steps[0]["message"]["attachment"]["payload"]["elements"]
    assert len(elements) == 2
    assert elements[0]["title"] == "T" * 79 + "…" and elements[0]["subtitle"] == "S" * 79 + "…"
    assert [b["payload"] for b in elements[0]["buttons"]] == ["P0", "P1", "P2"]
    assert elements[1] == {"title": "T" * 79 + "…", "buttons": [
        {"type": "postback", "title": "Button number 3 lon…", "payload": "P3"},
        {"type": "postback", "title": "Button number 4 lon…", "payload": "P4"},
    ]}
    assert_graph_accepts(steps)


def test_card_unknown_or_incomplete_actions_are_left_out() -> None:
    rendering = render_payload({"type": "card", "title": "T", "actions": [
        {"action": "Dance", "title": "x"}, {"action": "Open URL", "title": "no url"},
        {"action": "Postback", "title": "ok", "payload": "OK"}]}, USER, options=OPTIONS)
    buttons = rendering.steps[0]["message"]["attachment"]["payload"]["elements"][0]["buttons"]
    assert buttons == [{"type": "postback", "title": "ok", "payload": "OK"}]
    assert len(rendering.notes) == 2


def test_carousel_of_12_is_two_templates() -> None:
    items = [{"title": f"Card {i}", "actions": [{"action": "Postback", "title": "Go", "payload": f"GO{i}"}]}
             for i in range(12)]
    steps = render({"type": "carousel", "items": items})
    sizes = [len(s["message"]["attachment"]["payload"]["elements"]) for s in steps]
    assert sizes == [10, 2]
    assert steps[1]["message"]["attachment"]["payload"]["elements"][1]["title"] == "Card 11"
    assert_graph_accepts(steps)


def test_empty_carousel_is_a_render_error() -> None:
    with pytest.raises(RenderError):
        render({"type": "carousel", "items": []})


# -- typing -----------------------------------------------------------------------------------


def test_typing_on_pause_off() -> None:
    assert render({"type": "typing", "value": 1500}) == [
        {"recipient": {"id": USER}, "sender_action": "typing_on"},
        Pause(1500),
        {"recipient": {"id": USER}, "sender_action": "typing_off"},
    ]


def test_typing_true_means_one_second_and_is_capped() -> None:
    assert render({"type": "typing", "value": True})[1] == Pause(1000)
    assert render({"type": "typing", "value": 999_999})[1] == Pause(20000)
    assert render({"type": "typing", "value": 0}) == []


def test_typing_honours_indicators_and_disabled_actions() -> None:
    off = RenderOptions(external_url=EXT, typing_indicators=False)
    assert render({"type": "typing", "value": 500}, options=off) == [Pause(500)]
    no_on = RenderOptions(external_url=EXT, disabled_actions=frozenset({"typing_on"}))
    assert render({"type": "typing", "value": 500}, options=no_on) == [
        Pause(500), {"recipient": {"id": USER}, "sender_action": "typing_off"}]


def test_typing_bad_value() -> None:
    with pytest.raises(RenderError):
        render({"type": "typing", "value": "soon"})


# -- custom -----------------------------------------------------------------------------------


def test_custom_messenger_passthrough() -> None:
    raw = {"attachment": {"type": "template", "payload": {"template_type": "button", "text": "Call us",
                                                          "buttons": [{"type": "phone_number", "title": "Call",
                                                                       "payload": "+15105551234"}]}}}
    assert render({"type": "custom", "messenger": raw}) == [msg(raw)]
    assert render({"type": "custom", "messenger": [{"text": "a"}, {"text": "b"}]}) == [msg({"text": "a"}),
                                                                                    msg({"text": "b"})]


def test_custom_for_another_channel_sends_nothing() -> None:
    rendering = render_payload({"type": "custom", "webchat": {"x": 1}}, USER)
    assert rendering.steps == [] and rendering.notes


def test_custom_sender_action_respects_disabled_actions() -> None:
    options = RenderOptions(disabled_actions=frozenset({"mark_seen"}))
    assert render({"type": "custom", "messenger": {"sender_action": "mark_seen"}}, options=options) == []
    assert render({"type": "custom", "messenger": {"sender_action": "typing_on"}}, options=options) == [
        {"recipient": {"id": USER}, "sender_action": "typing_on"}]


@pytest.mark.parametrize("payload", [{"type": "custom", "messenger": "text"}, {"type": "location"}, "nope"])
def test_unrenderable_payloads(payload: object) -> None:
    with pytest.raises(RenderError):
        render_payload(payload, USER)  # type: ignore[arg-type]


def test_truncate_is_exact() -> None:
    assert truncate("short", 20) == "short"
    assert truncate("x" * 21, 20) == "x" * 19 + "…"
    assert fb_len(truncate("😀" * 30, 20)) <= 20


def test_emulator_would_refuse_the_unsplit_originals() -> None:
    """Guards the guard: the limits asserted above are really enforced by the emulator."""
    with pytest.raises(GraphError):
        check_message({"text": "a" * 2001})
    with pytest.raises(GraphError):
        check_message({"text": "t", "quick_replies": [
            {"content_type": "text", "title": str(i), "payload": str(i)} for i in range(14)]})
