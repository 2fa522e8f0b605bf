"""The qna hooks driven through a real BotContext; the host behind it records what the bot sends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import botpress_qna
import pluggy
import pytest

from botpress_py import hookspecs
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
    """Stands in for the core's bot registry (the BotHost protocol) and records sends and statuses."""

    def __init__(self) -> None:
        self.sent: list[IOEvent] = []
        self.status: dict[tuple[str, str], tuple[ModuleState, str | None]] = {}
        self._kv: dict[str, MemoryKV] = {}

    async def receive(self, bot_id: str, events: list[IOEvent]) -> list[IOEvent]:
        return events

    async def send(self, bot_id: str, events: list[IOEvent]) -> None:
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
async def mount(tmp_path: Path, host: RecordingHost) -> AsyncIterator[MountBot]:
    """Write a bot folder (qna=None: no qna file) and mount it with the qna hooks."""
    mounted: list[BotContext] = []

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
        await botpress_qna.on_bot_mount(bot)
        mounted.append(bot)
        return bot

    yield _mount
    for bot in mounted:
        botpress_qna.on_bot_unmount(bot)


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


def test_hooks_register_against_the_core_hookspecs() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(botpress_qna)
    pm.check_pending()  # every hook implemented exists in hookspecs.py
    for name in ("on_bot_mount", "on_bot_unmount", "on_incoming", "check_bot"):
        plugins = [impl.plugin for impl in getattr(pm.hook, name).get_hookimpls()]
        assert plugins == [botpress_qna], name


# --- mounting ----------------------------------------------------------------------------


async def test_valid_file_turns_qna_on(mount: MountBot, host: RecordingHost) -> None:
    await mount()
    assert host.status[("b1", "qna")] == ("on", None)


async def test_disabled_in_config_is_off_and_silent(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount(config={"enabled": False})
    state, reason = host.status[("b1", "qna")]
    assert state == "off"
    assert "enabled" in (reason or "")
    await botpress_qna.on_incoming(incoming(text="hello"), bot)
    assert host.sent == []


async def test_missing_file_is_off_with_the_path_in_the_reason(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount(qna=None)
    state, reason = host.status[("b1", "qna")]
    assert state == "off"
    assert str(bot.data_dir / "qna.json") in (reason or "")
    await botpress_qna.on_incoming(incoming(text="anything"), bot)
    assert host.sent == []


async def test_invalid_file_is_an_error_naming_the_first_problem_and_counting_the_rest(
    mount: MountBot, host: RecordingHost
) -> None:
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
    await botpress_qna.on_incoming(incoming(text="help"), bot)
    assert host.sent == []


async def test_single_problem_has_no_count(mount: MountBot, host: RecordingHost) -> None:
    await mount(raw='{"entries": [}')
    state, reason = host.status[("b1", "qna")]
    assert state == "error"
    assert "invalid JSON at line 1, column" in (reason or "")
    assert "more)" not in (reason or "")


async def test_file_name_comes_from_config(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount(config={"file": "faq.json"})
    assert host.status[("b1", "qna")] == ("on", None)
    await botpress_qna.on_incoming(incoming(text="help"), bot)
    assert host.texts() == ["I can help."]


# --- answering ---------------------------------------------------------------------------


async def test_text_matches_a_question_after_normalisation(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    event = incoming(text="  Héllo!! ")
    await botpress_qna.on_incoming(event, bot)
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
    mount: MountBot, host: RecordingHost
) -> None:
    bot = await mount()
    await botpress_qna.on_incoming(incoming(text="hi"), bot)
    host.sent[1].payload["choices"][0]["title"] = "changed downstream"
    host.sent.clear()
    await botpress_qna.on_incoming(incoming(text="hi"), bot)
    assert host.sent[1].payload["choices"][0]["title"] == "Help"


async def test_unknown_text_gets_the_fallback(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    await botpress_qna.on_incoming(incoming(text="what is the meaning of life"), bot)
    assert host.texts() == ["Sorry, I did not get that."]


async def test_text_that_is_only_punctuation_gets_the_fallback(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    await botpress_qna.on_incoming(incoming(text="?!"), bot)
    assert host.texts() == ["Sorry, I did not get that."]


async def test_no_fallback_means_no_answer(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount(qna={"entries": QNA["entries"]})
    await botpress_qna.on_incoming(incoming(text="unknown"), bot)
    await botpress_qna.on_incoming(incoming("postback", payload="UNKNOWN"), bot)
    assert host.sent == []
    await botpress_qna.on_incoming(incoming(text="hi"), bot)
    assert host.texts()[0] == "Hi! How can I help?"


async def test_postback_payload_matches_exactly(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    await botpress_qna.on_incoming(incoming("postback", payload="GET_STARTED", title="Get Started"), bot)
    assert host.texts() == ["Hi! How can I help?", "Pick one"]
    host.sent.clear()
    await botpress_qna.on_incoming(incoming("postback", payload="get_started"), bot)
    assert host.texts() == ["Sorry, I did not get that."]


async def test_quick_reply_payload_matches(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    await botpress_qna.on_incoming(incoming("quick_reply", text="Tour", payload="TOUR"), bot)
    assert [e.type for e in host.sent] == ["carousel"]


async def test_quick_reply_falls_back_to_its_text(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    await botpress_qna.on_incoming(incoming("quick_reply", text="What can you do?", payload="OLD_PAYLOAD"), bot)
    assert host.texts() == ["I can help."]


async def test_quick_reply_matching_nothing_gets_the_fallback(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    await botpress_qna.on_incoming(incoming("quick_reply", text="Nope", payload="NOPE"), bot)
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
    mount: MountBot, host: RecordingHost, kind: str, payload: dict[str, Any]
) -> None:
    bot = await mount()
    await botpress_qna.on_incoming(incoming(kind, **payload), bot)
    assert host.sent == []


async def test_silent_and_outgoing_events_get_no_answer(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    echo = incoming(text="hello")
    echo.flags["silent"] = True
    await botpress_qna.on_incoming(echo, bot)
    own = incoming(text="hello")
    own.direction = "outgoing"
    await botpress_qna.on_incoming(own, bot)
    assert host.sent == []


async def test_answer_payloads_off_leaves_payloads_alone(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount(config={"answerPayloads": False})
    await botpress_qna.on_incoming(incoming("postback", payload="HELP"), bot)
    await botpress_qna.on_incoming(incoming("postback", payload="UNKNOWN"), bot)
    assert host.sent == []
    # A quick reply is still what the user said: its text is answered, and so is nonsense.
    await botpress_qna.on_incoming(incoming("quick_reply", text="help", payload="TOUR"), bot)
    await botpress_qna.on_incoming(incoming("quick_reply", text="Nope", payload="HELP"), bot)
    assert host.texts() == ["I can help.", "Sorry, I did not get that."]


async def test_bots_have_separate_indexes(mount: MountBot, host: RecordingHost) -> None:
    one = await mount("one")
    other_qna = {"entries": [{"id": "x", "questions": ["hello"], "answers": [{"type": "text", "text": "Other"}]}]}
    two = await mount("two", qna=other_qna)
    await botpress_qna.on_incoming(incoming(text="hello", bot_id="one"), one)
    await botpress_qna.on_incoming(incoming(text="hello", bot_id="two"), two)
    assert host.texts() == ["Hi! How can I help?", "Pick one", "Other"]


async def test_same_bot_id_in_two_data_folders_does_not_mix(tmp_path: Path, host: RecordingHost) -> None:
    # Two servers in one process (integration tests) may both host "b1".
    bots = []
    for name, answer in (("server-a", "From A"), ("server-b", "From B")):
        data_dir = tmp_path / name / "bots" / "b1"
        data_dir.mkdir(parents=True)
        qna = {"entries": [{"id": "x", "questions": ["hello"], "answers": [{"type": "text", "text": answer}]}]}
        (data_dir / "qna.json").write_text(json.dumps(qna), encoding="utf-8")
        bot = _context(host, data_dir)
        await botpress_qna.on_bot_mount(bot)
        bots.append(bot)
    try:
        await botpress_qna.on_incoming(incoming(text="hello"), bots[0])
        botpress_qna.on_bot_unmount(bots[1])
        await botpress_qna.on_incoming(incoming(text="hello"), bots[0])
        await botpress_qna.on_incoming(incoming(text="hello"), bots[1])
        assert host.texts() == ["From A", "From A"]
    finally:
        for bot in bots:
            botpress_qna.on_bot_unmount(bot)


# --- unmount and remount -------------------------------------------------------------------


async def test_unmount_stops_answers(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    botpress_qna.on_bot_unmount(bot)
    await botpress_qna.on_incoming(incoming(text="hello"), bot)
    assert host.sent == []


async def test_remount_reads_the_edited_file(mount: MountBot, host: RecordingHost) -> None:
    bot = await mount()
    botpress_qna.on_bot_unmount(bot)
    edited = json.loads(json.dumps(QNA))
    edited["entries"][1]["answers"] = [{"type": "text", "text": "Edited help."}]
    bot = await mount(qna=edited)
    await botpress_qna.on_incoming(incoming(text="help"), bot)
    assert host.texts() == ["Edited help."]


async def test_remount_with_a_broken_file_keeps_no_stale_answers(mount: MountBot, host: RecordingHost) -> None:
    await mount()
    bot = await mount(raw="{")  # reload without an unmount in between
    assert host.status[("b1", "qna")][0] == "error"
    await botpress_qna.on_incoming(incoming(text="help"), bot)
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: RecordingHost
) -> None:
    monkeypatch.chdir(tmp_path)
    data_dir = Path("data/bots/b1")
    data_dir.mkdir(parents=True)
    bad = json.loads(json.dumps(QNA))
    bad["entries"].append(dict(bad["entries"][0]))
    (data_dir / "qna.json").write_text(json.dumps(bad), encoding="utf-8")
    problems = botpress_qna.check_bot(_context(host, data_dir))
    assert [(p.file, p.pointer) for p in problems] == [
        ("data/bots/b1/qna.json", "/entries/3/id"),
        ("data/bots/b1/qna.json", "/entries/3/payloads/0"),
        ("data/bots/b1/qna.json", "/entries/3/questions/0"),
        ("data/bots/b1/qna.json", "/entries/3/questions/1"),
    ]
    assert host.status == {}  # checking mounts nothing


def test_check_bot_accepts_a_valid_file_a_missing_one_and_a_disabled_module(
    tmp_path: Path, host: RecordingHost
) -> None:
    assert botpress_qna.check_bot(_context(host, tmp_path)) == []
    (tmp_path / "qna.json").write_text("{oops", encoding="utf-8")
    assert botpress_qna.check_bot(_context(host, tmp_path, enabled=False)) == []
    problems = botpress_qna.check_bot(_context(host, tmp_path))
    assert len(problems) == 1 and "invalid JSON at line 1" in problems[0].message
    (tmp_path / "qna.json").write_text(json.dumps(QNA), encoding="utf-8")
    assert botpress_qna.check_bot(_context(host, tmp_path)) == []


async def test_welcome_back_is_said_first_when_the_session_expired(mount: MountBot, host: RecordingHost) -> None:
    qna = {**QNA, "welcomeBack": [{"type": "text", "text": "Welcome back!"}]}
    bot = await mount(qna=qna)
    fresh = incoming(text="hello")
    fresh.flags["session"] = {"new": False, "expired": False}
    await botpress_qna.on_incoming(fresh, bot)
    returning = incoming(text="hello")
    returning.flags["session"] = {"new": False, "expired": True}
    await botpress_qna.on_incoming(returning, bot)
    answer = [e.preview for e in host.sent if e.incomingEventId == fresh.id]
    assert "Welcome back!" not in answer
    assert next(e.preview for e in host.sent if e.incomingEventId == returning.id) == "Welcome back!"
    assert len([e for e in host.sent if e.incomingEventId == returning.id]) == len(answer) + 1


async def test_handover_answer_is_valid_and_sent(mount: MountBot, host: RecordingHost) -> None:
    qna = {"entries": [{"id": "human", "questions": ["talk to a human"],
                        "answers": [{"type": "text", "text": "Passing you to our team."},
                                    {"type": "handover", "target": "inbox"}]}]}
    bot = await mount(qna=qna)
    await botpress_qna.on_incoming(incoming(text="Talk to a human!"), bot)
    assert [e.payload["type"] for e in host.sent] == ["text", "handover"]
