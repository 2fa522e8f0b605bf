"""The qna hooks driven through a real BotContext; the host behind it records what the bot sends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import botpress_qna
import pytest
from botpress_qna import QnaModule

from botpress_py.sdk import BotContext, IOEvent, ModuleRouter, ModuleState

MODULE_DIR = Path(__file__).resolve().parents[1]
DEFAULTS = {
    key: prop["default"]
    for key, prop in json.loads((MODULE_DIR / "config.schema.json").read_text())["properties"].items()
}

QNA = {
    "entries": [
        {
            "id": "greet",
            "questions": ["hello", "hi"],
            "payloads": ["GET_STARTED"],
            "answers": [
                {"type": "text", "text": "Hi! How can I help?"},
                {
                    "type": "single-choice",
                    "text": "Pick one",
                    "choices": [{"title": "Help", "value": "HELP"}, {"title": "Tour", "value": "TOUR"}],
                },
            ],
        },
        {
            "id": "help",
            "questions": ["help", "what can you do"],
            "payloads": ["HELP"],
            "answers": [{"type": "text", "text": "I can help."}],
        },
        {
            "id": "tour",
            "questions": ["Take the tour"],
            "payloads": ["TOUR"],
            "answers": [{"type": "carousel", "items": [{"title": "One"}, {"title": "Two"}]}],
        },
    ],
    "fallback": [{"type": "text", "text": "Sorry, I did not get that."}],
}


class MemoryKV:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)


class RecordingHost:
    """Stands in for the core behind a BotContext (the BotHost protocol) and records sends and statuses."""

    def __init__(self) -> None:
        self.sent: list[IOEvent] = []
        self.status: dict[tuple[str, str], tuple[ModuleState, str | None]] = {}
        self._kv: dict[str, MemoryKV] = {}

    async def receive(self, events: list[IOEvent]) -> list[IOEvent]:
        return events

    async def send(self, events: list[IOEvent]) -> None:
        self.sent.extend(events)

    def set_module_status(self, bot_id: str, module: str, state: ModuleState, reason: str | None) -> None:
        self.status[(bot_id, module)] = (state, reason)

    def kv(self, namespace: str) -> MemoryKV:
        return self._kv.setdefault(namespace, MemoryKV())

    def users(self, bot_id: str) -> Any:
        return None  # qna never looks users up

    def texts(self) -> list[str]:
        return [e.preview for e in self.sent]


MountBot = Callable[..., Awaitable[BotContext]]


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


@pytest.fixture
def qna() -> QnaModule:
    """The module as one server gets it from create_module()."""
    return botpress_qna.create_module()


@pytest.fixture
async def mount(tmp_path: Path, host: RecordingHost, qna: QnaModule) -> AsyncIterator[MountBot]:
    """Write a bot folder (qna=None: no qna file) and mount it with the qna hooks."""
    mounted: list[BotContext] = []
    module = qna  # the closure's own ``qna`` argument is the document

    async def _mount(
        bot_id: str = "b1", qna: Any = QNA, config: dict[str, Any] | None = None, raw: str | None = None
    ) -> BotContext:
        resolved = {**DEFAULTS, **(config or {})}
        data_dir = tmp_path / "bots" / bot_id
        data_dir.mkdir(parents=True, exist_ok=True)
        target = data_dir / resolved["file"]
        if raw is not None:
            target.write_text(raw, encoding="utf-8")
        elif qna is not None:
            target.write_text(json.dumps(qna), encoding="utf-8")
        bot = BotContext(
            host=host,
            bot_id=bot_id,
            module="qna",
            bot_config={"id": bot_id},
            config=resolved,
            data_dir=data_dir,
            external_url="http://localhost:3000",
            router=ModuleRouter(),
        )
        await module.on_bot_mount(bot)
        mounted.append(bot)
        return bot

    yield _mount
    for bot in mounted:
        module.on_bot_unmount(bot)


def incoming(kind: str = "text", bot_id: str = "b1", **payload: Any) -> IOEvent:
    return IOEvent(
        type=kind,
        channel="messenger",
        direction="incoming",
        botId=bot_id,
        target="user-1",
        threadId="page-1",
        payload={"type": kind, **payload},
    )


def test_on_incoming_runs_after_the_other_modules() -> None:
    """trylast: qna sees what other bot logic did first, and leaves fallbacks out when it answered."""
    assert QnaModule.on_incoming.botpress_py_impl["trylast"] is True  # type: ignore[attr-defined]


# --- mounting ----------------------------------------------------------------------------


async def test_valid_file_turns_qna_on(mount: MountBot, host: RecordingHost) -> None:
    await mount()
    assert host.status[("b1", "qna")] == ("on", None)


async def test_disabled_in_config_is_off_and_silent(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount(config={"enabled": False})
    state, reason = host.status[("b1", "qna")]
    assert state == "off"
    assert "enabled" in (reason or "")
    await qna.on_incoming(incoming(text="hello"), bot)
    assert host.sent == []


async def test_missing_file_is_off_with_the_path_in_the_reason(
    mount: MountBot, host: RecordingHost, qna: QnaModule,
) -> None:
    bot = await mount(qna=None)
    state, reason = host.status[("b1", "qna")]
    assert state == "off"
    assert str(bot.data_dir / "qna.json") in (reason or "")
    await qna.on_incoming(incoming(text="anything"), bot)
    assert host.sent == []


async def test_invalid_file_is_an_error_naming_the_first_problem_and_counting_the_rest(
    mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    broken = json.loads(json.dumps(QNA))
    broken["entries"][0]["answers"][1]["type"] = "choice"
    broken["entries"][2]["id"] = "greet"
    broken["fallback"] = [{"type": "text"}]
    bot = await mount(qna=broken)
    state, reason = host.status[("b1", "qna")]
    assert state == "error"
    assert reason is not None
    assert reason.startswith(f"{bot.data_dir / 'qna.json'}#/entries/0/answers/1/type: 'choice' is not one of")
    assert reason.endswith(" (+2 more)")
    # A broken file answers nothing at all, not even the entries that were fine.
    await qna.on_incoming(incoming(text="help"), bot)
    assert host.sent == []


async def test_single_problem_has_no_count(mount: MountBot, host: RecordingHost) -> None:
    await mount(raw='{"entries": [}')
    state, reason = host.status[("b1", "qna")]
    assert state == "error"
    assert "invalid JSON at line 1, column" in (reason or "")
    assert "more)" not in (reason or "")


async def test_file_name_comes_from_config(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount(config={"file": "faq.json"})
    assert host.status[("b1", "qna")] == ("on", None)
    await qna.on_incoming(incoming(text="help"), bot)
    assert host.texts() == ["I can help."]


# --- answering ---------------------------------------------------------------------------


async def test_text_matches_a_question_after_normalisation(
    mount: MountBot, host: RecordingHost, qna: QnaModule,
) -> None:
    bot = await mount()
    event = incoming(text="  Héllo!! ")
    await qna.on_incoming(event, bot)
    assert [e.payload for e in host.sent] == QNA["entries"][0]["answers"]
    for reply in host.sent:
        assert reply.direction == "outgoing"
        assert reply.incomingEventId == event.id
        assert (reply.channel, reply.target, reply.threadId, reply.botId) == (
            "messenger",
            "user-1",
            "page-1",
            "b1",
        )


async def test_answers_are_copies_so_a_middleware_cannot_corrupt_the_index(
    mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount()
    await qna.on_incoming(incoming(text="hi"), bot)
    host.sent[1].payload["choices"][0]["title"] = "changed downstream"
    host.sent.clear()
    await qna.on_incoming(incoming(text="hi"), bot)
    assert host.sent[1].payload["choices"][0]["title"] == "Help"


async def test_unknown_text_gets_the_fallback(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount()
    await qna.on_incoming(incoming(text="what is the meaning of life"), bot)
    assert host.texts() == ["Sorry, I did not get that."]


async def test_text_that_is_only_punctuation_gets_the_fallback(
    mount: MountBot, host: RecordingHost, qna: QnaModule,
) -> None:
    bot = await mount()
    await qna.on_incoming(incoming(text="?!"), bot)
    assert host.texts() == ["Sorry, I did not get that."]


async def test_no_fallback_means_no_answer(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount(qna={"entries": QNA["entries"]})
    await qna.on_incoming(incoming(text="unknown"), bot)
    await qna.on_incoming(incoming("postback", payload="UNKNOWN"), bot)
    assert host.sent == []
    await qna.on_incoming(incoming(text="hi"), bot)
    assert host.texts()[0] == "Hi! How can I help?"


async def test_postback_payload_matches_exactly(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount()
    await qna.on_incoming(incoming("postback", payload="GET_STARTED", title="Get Started"), bot)
    assert host.texts() == ["Hi! How can I help?", "Pick one"]
    host.sent.clear()
    await qna.on_incoming(incoming("postback", payload="get_started"), bot)
    assert host.texts() == ["Sorry, I did not get that."]


async def test_quick_reply_payload_matches(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount()
    await qna.on_incoming(incoming("quick_reply", text="Tour", payload="TOUR"), bot)
    assert [e.type for e in host.sent] == ["carousel"]


async def test_quick_reply_falls_back_to_its_text(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount()
    await qna.on_incoming(incoming("quick_reply", text="What can you do?", payload="OLD_PAYLOAD"), bot)
    assert host.texts() == ["I can help."]


async def test_quick_reply_matching_nothing_gets_the_fallback(
    mount: MountBot, host: RecordingHost, qna: QnaModule,
) -> None:
    bot = await mount()
    await qna.on_incoming(incoming("quick_reply", text="Nope", payload="NOPE"), bot)
    assert host.texts() == ["Sorry, I did not get that."]


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("image", {"image": "https://cdn/x.png"}),
        ("reaction", {"reaction": "love", "emoji": "❤️", "text": "hello"}),
        ("sticker", {"url": "https://cdn/s.png"}),
        ("referral", {"ref": "ad-1"}),
        ("file", {"url": "https://cdn/f.pdf"}),
    ],
)
async def test_other_event_types_get_no_answer(
    mount: MountBot, host: RecordingHost, kind: str, payload: dict[str, Any], qna: QnaModule) -> None:
    bot = await mount()
    await qna.on_incoming(incoming(kind, **payload), bot)
    assert host.sent == []


async def test_silent_and_outgoing_events_get_no_answer(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount()
    echo = incoming(text="hello")
    echo.flags["silent"] = True
    await qna.on_incoming(echo, bot)
    own = incoming(text="hello")
    own.direction = "outgoing"
    await qna.on_incoming(own, bot)
    assert host.sent == []


async def test_answer_payloads_off_leaves_payloads_alone(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount(config={"answerPayloads": False})
    await qna.on_incoming(incoming("postback", payload="HELP"), bot)
    await qna.on_incoming(incoming("postback", payload="UNKNOWN"), bot)
    assert host.sent == []
    # A quick reply is still what the user said: its text is answered, and so is nonsense.
    await qna.on_incoming(incoming("quick_reply", text="help", payload="TOUR"), bot)
    await qna.on_incoming(incoming("quick_reply", text="Nope", payload="HELP"), bot)
    assert host.texts() == ["I can help.", "Sorry, I did not get that."]


async def test_bots_have_separate_indexes(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    one = await mount("one")
    other_qna = {"entries": [{"id": "x", "questions": ["hello"], "answers": [{"type": "text", "text": "Other"}]}]}
    two = await mount("two", qna=other_qna)
    await qna.on_incoming(incoming(text="hello", bot_id="one"), one)
    await qna.on_incoming(incoming(text="hello", bot_id="two"), two)
    assert host.texts() == ["Hi! How can I help?", "Pick one", "Other"]


async def test_two_servers_hosting_the_same_bot_id_do_not_mix(tmp_path: Path, host: RecordingHost) -> None:
    """Each server has its own module instance (create_module), so the same bot id in two data
    folders answers from its own qna.json, and unmounting one leaves the other answering."""
    servers = [botpress_qna.create_module(), botpress_qna.create_module()]
    bots = []
    for name, answer in (("server-a", "From A"), ("server-b", "From B")):
        data_dir = tmp_path / name / "bots" / "b1"
        data_dir.mkdir(parents=True)
        doc = {"entries": [{"id": "x", "questions": ["hello"], "answers": [{"type": "text", "text": answer}]}]}
        (data_dir / "qna.json").write_text(json.dumps(doc), encoding="utf-8")
        bots.append(_context(host, data_dir))
    for module, bot in zip(servers, bots, strict=True):
        await module.on_bot_mount(bot)
    await servers[0].on_incoming(incoming(text="hello"), bots[0])
    await servers[1].on_incoming(incoming(text="hello"), bots[1])
    servers[1].on_bot_unmount(bots[1])
    await servers[0].on_incoming(incoming(text="hello"), bots[0])
    await servers[1].on_incoming(incoming(text="hello"), bots[1])
    assert host.texts() == ["From A", "From B", "From A"]


# --- unmount and remount -------------------------------------------------------------------


async def test_unmount_stops_answers(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount()
    qna.on_bot_unmount(bot)
    await qna.on_incoming(incoming(text="hello"), bot)
    assert host.sent == []


async def test_remount_reads_the_edited_file(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    bot = await mount()
    qna.on_bot_unmount(bot)
    edited = json.loads(json.dumps(QNA))
    edited["entries"][1]["answers"] = [{"type": "text", "text": "Edited help."}]
    bot = await mount(qna=edited)
    await qna.on_incoming(incoming(text="help"), bot)
    assert host.texts() == ["Edited help."]


async def test_remount_with_a_broken_file_keeps_no_stale_answers(
    mount: MountBot, host: RecordingHost, qna: QnaModule,
) -> None:
    await mount()
    bot = await mount(raw="{")  # reload without an unmount in between
    assert host.status[("b1", "qna")][0] == "error"
    await qna.on_incoming(incoming(text="help"), bot)
    assert host.sent == []


# --- check_bot ---------------------------------------------------------------------------


def _context(host: RecordingHost, data_dir: Path, **config: Any) -> BotContext:
    return BotContext(
        host=host,
        bot_id="b1",
        module="qna",
        bot_config={},
        config={**DEFAULTS, **config},
        data_dir=data_dir,
        external_url="",
        router=ModuleRouter(),
    )


def test_check_bot_names_the_file_relative_to_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: RecordingHost, qna: QnaModule) -> None:
    monkeypatch.chdir(tmp_path)
    data_dir = Path("data/bots/b1")
    data_dir.mkdir(parents=True)
    bad = json.loads(json.dumps(QNA))
    bad["entries"].append(dict(bad["entries"][0]))
    (data_dir / "qna.json").write_text(json.dumps(bad), encoding="utf-8")
    problems = qna.check_bot(_context(host, data_dir))
    assert [(p.file, p.pointer) for p in problems] == [
        ("data/bots/b1/qna.json", "/entries/3/id"),
        ("data/bots/b1/qna.json", "/entries/3/payloads/0"),
        ("data/bots/b1/qna.json", "/entries/3/questions/0"),
        ("data/bots/b1/qna.json", "/entries/3/questions/1"),
    ]
    assert host.status == {}  # checking mounts nothing


def test_check_bot_accepts_a_valid_file_a_missing_one_and_a_disabled_module(
    tmp_path: Path, host: RecordingHost, qna: QnaModule) -> None:
    assert qna.check_bot(_context(host, tmp_path)) == []
    (tmp_path / "qna.json").write_text("{oops", encoding="utf-8")
    assert qna.check_bot(_context(host, tmp_path, enabled=False)) == []
    problems = qna.check_bot(_context(host, tmp_path))
    assert len(problems) == 1 and "invalid JSON at line 1" in problems[0].message
    (tmp_path / "qna.json").write_text(json.dumps(QNA), encoding="utf-8")
    assert qna.check_bot(_context(host, tmp_path)) == []


async def test_welcome_back_is_said_first_when_the_session_expired(
    mount: MountBot, host: RecordingHost, qna: QnaModule,
) -> None:
    doc = {**QNA, "welcomeBack": [{"type": "text", "text": "Welcome back!"}]}
    bot = await mount(qna=doc)
    fresh = incoming(text="hello")
    fresh.flags["session"] = {"new": False, "expired": False}
    await qna.on_incoming(fresh, bot)
    returning = incoming(text="hello")
    returning.flags["session"] = {"new": False, "expired": True}
    await qna.on_incoming(returning, bot)
    answer = [e.preview for e in host.sent if e.incomingEventId == fresh.id]
    assert "Welcome back!" not in answer
    assert next(e.preview for e in host.sent if e.incomingEventId == returning.id) == "Welcome back!"
    assert len([e for e in host.sent if e.incomingEventId == returning.id]) == len(answer) + 1


async def test_handover_answer_is_valid_and_sent(mount: MountBot, host: RecordingHost, qna: QnaModule) -> None:
    doc = {"entries": [{"id": "human", "questions": ["talk to a human"],
                        "answers": [{"type": "text", "text": "Passing you to our team."},
                                    {"type": "handover", "target": "inbox"}]}]}
    bot = await mount(qna=doc)
    await qna.on_incoming(incoming(text="Talk to a human!"), bot)
    assert [e.payload["type"] for e in host.sent] == ["text", "handover"]


async def test_an_event_answered_by_another_module_gets_no_fallback_and_no_welcome_back(
    mount: MountBot, host: RecordingHost, qna: QnaModule
) -> None:
    bot = await mount(qna={**QNA, "welcomeBack": [{"type": "text", "text": "Welcome back!"}]})
    for text in ("what is the meaning of life", "help"):
        event = incoming(text=text)
        event.flags["session"] = {"new": False, "expired": True}
        event.mark_handled("weather")
        await qna.on_incoming(event, bot)
    # The entry the operator wrote for "help" still answers; the fallback and the welcome back do not.
    assert host.texts() == ["I can help."]


async def test_replying_marks_the_event_handled(mount: MountBot, qna: QnaModule) -> None:
    bot = await mount()
    event = incoming(text="help")
    assert not event.handled
    await qna.on_incoming(event, bot)
    assert event.handled and event.handled_by == "qna"
