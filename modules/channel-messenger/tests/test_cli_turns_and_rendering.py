"""When a bot's turn is over (ReplyCollector) and how a turn looks in a terminal (TurnPrinter)."""

from __future__ import annotations

from typing import Any

from channel_messenger.cli.terminal_render import Choice, TurnPrinter
from channel_messenger.emulator.replies import MAX_TYPING, RETRY_SETTLE, ReplyCollector

USER, PAGE = "42", "1001"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def call(body: dict[str, Any], *, accepted: bool = True, fault: bool = False, psid: str = USER,
         page: str | None = PAGE, error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"method": "POST", "path": "/v27.0/me/messages", "json": {"recipient": {"id": psid}, **body},
            "accepted": accepted, "fault": fault, "page": page, "error": error}


def action(name: str, **kw: Any) -> dict[str, Any]:
    return call({"sender_action": name}, **kw)


def text(value: str, **kw: Any) -> dict[str, Any]:
    return call({"messaging_type": "RESPONSE", "message": {"text": value}}, **kw)


def test_a_turn_ends_after_settle_seconds_of_quiet() -> None:
    clock = Clock()
    turn = ReplyCollector(USER, PAGE, timeout=10, settle=1.0, clock=clock)
    turn.feed([action("mark_seen")])
    clock.now += 5
    assert not turn.done()  # seen, but nothing said yet
    assert turn.feed([text("hi"), text("other user", psid="7"), text("other page", page="2002")]) == [
        text("hi")]
    clock.now += 0.9
    assert not turn.done() and abs(turn.wait_hint() - 0.1) < 1e-9
    clock.now += 0.1
    assert turn.done() and not turn.timed_out and turn.messages == [text("hi")["json"]]


def test_typing_and_pending_retries_keep_the_turn_open() -> None:
    clock = Clock()
    turn = ReplyCollector(USER, PAGE, settle=1.0, clock=clock)
    turn.feed([text("first"), action("typing_on")])
    clock.now += 5
    assert not turn.done()  # a typing pause is on
    turn.feed([action("typing_off"), text("card")])
    clock.now += 1
    assert turn.done()

    turn = ReplyCollector(USER, PAGE, settle=1.0, clock=clock)
    turn.feed([text("first"), text("second", accepted=False, fault=True, error={"code": 1200})])
    clock.now += RETRY_SETTLE - 0.5
    assert not turn.done()  # the channel retries after its backoff
    turn.feed([text("second")])
    clock.now += 1
    assert turn.done() and [m["message"]["text"] for m in turn.messages] == ["first", "second"]

    turn = ReplyCollector(USER, PAGE, settle=1.0, clock=clock)
    turn.feed([text("first"), action("typing_on")])
    clock.now += MAX_TYPING
    assert turn.done()  # a typing indicator left on forever does not hang the command


def test_no_reply_times_out_and_a_refusal_is_an_answer() -> None:
    clock = Clock()
    turn = ReplyCollector(USER, PAGE, timeout=3, clock=clock)
    clock.now += 2.9
    assert not turn.done()
    clock.now += 0.1
    assert turn.done() and turn.timed_out

    turn = ReplyCollector(USER, PAGE, timeout=3, clock=clock)
    refused = text("x" * 2001, accepted=False, error={"code": 100, "message": "(#100) too long"})
    turn.feed([refused])
    assert not turn.timed_out and turn.refused == [refused]


def test_turn_printer_numbers_choices_across_a_turn() -> None:
    printer = TurnPrinter("Bot")
    lines = printer.lines_for(call({"message": {"text": "Pick\none", "quick_replies": [
        {"content_type": "text", "title": "Red", "payload": "RED"},
        {"content_type": "user_email"}]}}))
    assert lines == ["Bot: Pick", "     one", "     [1] Red", "     [2] test.user@example.com"]
    lines = printer.lines_for(call({"message": {"attachment": {"type": "template", "payload": {
        "template_type": "button", "text": "Or", "buttons": [
            {"type": "postback", "title": "Blue", "payload": "BLUE"},
            {"type": "phone_number", "title": "Call", "payload": "+1555"}]}}}}))
    assert lines == ["Bot: Or", "     [3] Blue", "     [☎] Call  +1555"]
    assert printer.choices[2] == Choice(3, "postback", "Blue", "BLUE")
    assert printer.lines_for(call({"message": {"attachment": {"type": "image",
                                                              "payload": {"url": "https://x/cat.png"}}}})) == [
        "Bot: [image] https://x/cat.png"]
    assert printer.lines_for(action("typing_on")) == ["Bot: …"]
    assert printer.lines_for(action("mark_seen")) == []
    assert printer.lines_for(text("retried later", accepted=False, fault=True)) == []
    printer.new_turn()
    assert printer.choices == []


def test_turn_printer_wraps_to_the_terminal_width() -> None:
    printer = TurnPrinter("Bot", width=30)
    assert printer.lines_for(text("one two three four five six seven eight nine ten")) == [
        "Bot: one two three four five", "     six seven eight nine ten"]
    assert TurnPrinter("Bot").lines_for(text("a " * 40))[0] == "Bot: " + ("a " * 40).rstrip()
