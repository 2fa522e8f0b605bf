"""The sample bot on a real server: HTTP in, the real pipeline, qna answering, a real channel out."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.testing import run_server, wait_for

MODULE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = MODULE_DIR.parents[1]
FIXTURE_MODULES = Path(__file__).resolve().parent / "fixtures"
SAMPLE_BOT = REPO_ROOT / "data" / "bots" / "welcome-bot"
SAMPLE_QNA = json.loads((SAMPLE_BOT / "qna.json").read_text(encoding="utf-8"))
BOT_API = "/api/v1/bots/welcome-bot/mod/qna-test-channel"


def answers_of(entry_id: str) -> list[dict[str, Any]]:
    return next(e["answers"] for e in SAMPLE_QNA["entries"] if e["id"] == entry_id)


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, server: Any = None) -> None:
        self.session = session
        self.url = url
        self.server = server
        # The test channel's record outlives one server; users of each test are its own.
        self.prefix = uuid.uuid4().hex[:8]

    async def status(self) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/status") as resp:
            assert resp.status == 200
            return await resp.json()

    async def qna_state(self) -> dict[str, Any]:
        return (await self.status())["bots"]["welcome-bot"]["modules"]["qna"]

    async def say(self, user: str, kind: str, **payload: Any) -> None:
        async with self.session.post(
            f"{self.url}{BOT_API}/say", json={"type": kind, "user": self.prefix + user, **payload}
        ) as resp:
            assert resp.status == 202, await resp.text()

    async def sent(self, user: str) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.url}{BOT_API}/sent", params={"user": self.prefix + user}) as resp:
            assert resp.status == 200
            return await resp.json()

    async def sent_at_least(self, user: str, count: int) -> list[dict[str, Any]]:
        return await wait_for(lambda: self._at_least(user, count))

    async def _at_least(self, user: str, count: int) -> list[dict[str, Any]] | None:
        sent = await self.sent(user)
        return sent if len(sent) >= count else None


def copy_sample_bot(data: Path) -> Path:
    bot_dir = data / "bots" / "welcome-bot"
    # The sample's channel config (if any) belongs to channel-messenger, which is not loaded here.
    shutil.copytree(SAMPLE_BOT, bot_dir, ignore=shutil.ignore_patterns("config"))
    return bot_dir


@contextlib.asynccontextmanager
async def serve(data: Path, modules: tuple[str, ...] = ("qna", "qna-test-channel")) -> AsyncIterator[Client]:
    env = {"BP_MODULES_PATH": os.pathsep.join([str(REPO_ROOT / "modules"), str(FIXTURE_MODULES)])}
    async with (
        run_server(data, env, modules=list(modules)) as srv,
        aiohttp.ClientSession() as session,
    ):
        yield Client(session, srv.url, srv)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Client, Path]]:
    bot_dir = copy_sample_bot(tmp_path / "data")
    async with serve(tmp_path / "data") as client:
        yield client, bot_dir


async def test_sample_bot_mounts_with_qna_on(server: tuple[Client, Path]) -> None:
    client, _ = server
    status = await client.status()
    bot = status["bots"]["welcome-bot"]
    assert bot["state"] == "mounted"
    assert bot["modules"]["qna"] == {"state": "on"}
    assert "moduleErrors" not in status  # qna's hooks all match the core's hookspecs


async def test_sample_bot_answers_through_the_real_pipeline(server: tuple[Client, Path]) -> None:
    client, _ = server
    await client.say("u1", "text", text="Héllo!!")
    greeting = answers_of("greeting")
    assert await client.sent_at_least("u1", len(greeting)) == greeting

    await client.say("u1", "postback", payload="GET_STARTED", title="Get Started")
    started = greeting + answers_of("get-started")
    assert await client.sent_at_least("u1", len(started)) == started

    # One conversation is processed in order: once the fallback for the last text is out,
    # the image before it has been handled, and it got no answer.
    await client.say("u1", "image", image="https://example.com/cat.png")
    await client.say("u1", "quick_reply", text="Take the tour", payload="TOUR")
    await client.say("u1", "text", text="what is the airspeed of a swallow")
    expected = started + answers_of("tour") + SAMPLE_QNA["fallback"]
    assert await client.sent_at_least("u1", len(expected)) == expected
    assert await client.sent("u2") == []


async def test_broken_edit_keeps_the_last_good_answers_and_a_fix_takes_effect(
    server: tuple[Client, Path],
) -> None:
    client, bot_dir = server
    qna_file = bot_dir / "qna.json"
    broken = json.loads(json.dumps(SAMPLE_QNA))
    broken["entries"][0]["answers"][0]["type"] = "txt"
    qna_file.write_text(json.dumps(broken), encoding="utf-8")

    async def refused() -> dict[str, Any] | None:
        bot = (await client.status())["bots"]["welcome-bot"]
        return bot if "error" in bot else None

    bot = await wait_for(refused)
    assert f"{qna_file}#/entries/0/answers/0/type" in bot["error"]
    assert bot["modules"]["qna"] == {"state": "on"}
    await client.say("u3", "text", text="hi")
    assert await client.sent_at_least("u3", 2) == answers_of("greeting")

    fixed = json.loads(json.dumps(SAMPLE_QNA))
    fixed["entries"][1]["answers"] = [{"type": "text", "text": "Edited hello"}]
    qna_file.write_text(json.dumps(fixed), encoding="utf-8")

    async def remounted() -> bool:
        return "error" not in (await client.status())["bots"]["welcome-bot"]

    await wait_for(remounted)
    await client.say("u4", "text", text="hi")
    assert await client.sent_at_least("u4", 1) == [{"type": "text", "text": "Edited hello"}]


async def test_broken_qna_at_startup_shows_qna_error_and_answers_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    qna_file = copy_sample_bot(data) / "qna.json"
    broken = json.loads(json.dumps(SAMPLE_QNA))
    broken["entries"][2]["id"] = broken["entries"][0]["id"]
    broken["fallback"][0] = {"type": "text"}
    qna_file.write_text(json.dumps(broken), encoding="utf-8")
    async with serve(data) as client:
        bot = (await client.status())["bots"]["welcome-bot"]
        # The bot itself stays up (its channels work); only qna is off the air.
        assert bot["state"] == "mounted"
        assert bot["modules"]["qna"]["state"] == "error"
        assert bot["modules"]["qna"]["reason"] == (
            f"{qna_file}#/entries/2/id: duplicate entry id 'get-started' (already used by /entries/0) "
            "(give every entry its own id) (+1 more)"
        )
        await client.say("u1", "text", text="hello")
        await client.say("u1", "postback", payload="GET_STARTED")
        await client.say("u1", "text", text="__ping__")
        assert await client.sent_at_least("u1", 1) == [{"type": "text", "text": "pong"}]


async def test_two_servers_in_one_process_answer_each_from_their_own_qna_file(tmp_path: Path) -> None:
    """No module state is shared between servers: the same bot id in two data folders, two answers."""
    folders = []
    for name in ("one", "two"):
        qna_file = copy_sample_bot(tmp_path / name) / "qna.json"
        doc = json.loads(json.dumps(SAMPLE_QNA))
        doc["entries"][1]["answers"] = [{"type": "text", "text": f"Hello from server {name}"}]
        qna_file.write_text(json.dumps(doc), encoding="utf-8")
        folders.append(tmp_path / name)
    second = shutil.copytree(folders[1] / "bots" / "welcome-bot", folders[1] / "bots" / "second-bot")
    (second / "bot.config.json").write_text('{"name": "Second"}', encoding="utf-8")
    async with serve(folders[0]) as one:
        async with serve(folders[1]) as two:
            await one.say("u1", "text", text="hi")
            await two.say("u1", "text", text="hi")
            assert await one.sent_at_least("u1", 1) == [{"type": "text", "text": "Hello from server one"}]
            assert await two.sent_at_least("u1", 1) == [{"type": "text", "text": "Hello from server two"}]
            # Each server's qna holds the indexes of its own bots only.
            qna_one = one.server.loader.modules["qna"].plugin
            qna_two = two.server.loader.modules["qna"].plugin
            assert sorted(qna_one.indexes) == ["welcome-bot"]
            assert sorted(qna_two.indexes) == ["second-bot", "welcome-bot"]
        # The second server stopped and unmounted its welcome-bot: the first one's still answers.
        assert sorted(qna_one.indexes) == ["welcome-bot"]
        await one.say("u2", "text", text="hi")
        assert await one.sent_at_least("u2", 1) == [{"type": "text", "text": "Hello from server one"}]


async def test_an_answer_from_another_module_keeps_the_qna_fallback_quiet(tmp_path: Path) -> None:
    """qna is listed first but runs last (trylast): a message another module answered, or marked
    handled, gets no fallback; qna still answers the rest, its fallback included."""
    data = tmp_path / "data"
    copy_sample_bot(data)
    async with serve(data, ("qna", "qna-test-channel", "qna-test-logic")) as client:
        await client.say("u1", "text", text="weather in Paris")
        await client.say("u1", "text", text="human please")
        await client.say("u1", "text", text="what is the airspeed of a swallow")
        await client.say("u1", "text", text="hi")
        await client.say("u1", "text", text="__ping__")
        expected = [{"type": "text", "text": "Sunny, 21°C"}, *SAMPLE_QNA["fallback"], *answers_of("greeting"),
                    {"type": "text", "text": "pong"}]
        assert await client.sent_at_least("u1", len(expected)) == expected
