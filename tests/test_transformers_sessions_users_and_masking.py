"""Around bot logic: transformers (hooks and the bot's own file), sessions, users and contacts, masked events, and
erasing a user (the CLI and the admin API)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from botpress_py.cli import main
from botpress_py.events import IOEvent, now_ms
from botpress_py.testing import make_bot, run_server, wait_for

from .test_pipeline import say, texts


def event_for(bot: str, user: str, text: str, **kw: Any) -> IOEvent:
    return IOEvent(type="text", channel="test", direction="incoming", botId=bot, target=user, threadId="t",
                   payload={"text": text}, **kw)


async def test_hook_transform_input_changes_and_drops(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        await say(s, srv, "alpha", "u1", "secret plan")  # dropped by the module's transform_input
        await say(s, srv, "alpha", "u1", "shout quiet")
        await wait_for(lambda: texts(echo, "u1") == ["echo: QUIET"])
        assert srv.metrics.counters["bp_events_dropped_total"] == 1


async def test_hook_transform_output_drops_a_reply(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        await say(s, srv, "alpha", "u1", "shout drop reply")
        await say(s, srv, "alpha", "u1", "after")
        await wait_for(lambda: texts(echo, "u1") == ["echo: after"])
        assert await srv.storage.outbox_pending() == []


async def test_bot_transformers_file_runs_around_bot_logic(data_dir: Path, env: dict, echo: Any) -> None:
    folder = make_bot(data_dir, "alpha")
    (folder / "transformers.py").write_text(
        "async def transform_input(event, bot):\n"
        "    if event.payload.get('text') == 'crash':\n"
        "        raise RuntimeError('transformer bug')\n"
        "    event.payload['text'] = event.payload['text'] + '!'\n"
        "def transform_output(event, bot):\n"
        "    event.payload['text'] = '[' + event.payload['text'] + ']'\n")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        status = srv.registry.status()["alpha"]["transformers"]
        assert status == {"state": "on", "hooks": ["transform_input", "transform_output"]}
        await say(s, srv, "alpha", "u1", "hi")
        await say(s, srv, "alpha", "u1", "crash")  # contained: the event goes on unchanged
        await wait_for(lambda: texts(echo, "u1") == ["[echo: hi!]", "[echo: crash]"])
        # a broken edit is reported and the bot keeps running without transformers
        (folder / "transformers.py").write_text("def transform_input(event, bot):\n    return (\n")
        await wait_for(lambda: srv.registry.status()["alpha"].get("transformers", {}).get("state") == "error", 3)
        assert "SyntaxError" in srv.registry.status()["alpha"]["transformers"]["reason"]
        await say(s, srv, "alpha", "u1", "plain")
        await wait_for(lambda: texts(echo, "u1")[-1:] == ["echo: plain"])


async def test_session_new_then_expired_after_timeout(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha", sessionTimeout="30m")
    base = now_ms() + 86_400_000  # platform timestamps ahead of the replies' own clock
    async with run_server(data_dir, env, modules=["echo"]) as srv:
        ctx = srv.registry.records["alpha"].contexts["echo"]
        first = event_for("alpha", "u1", "session?", createdOn=base)
        await ctx.receive([first])
        await wait_for(lambda: len(texts(echo, "u1")) == 1)
        assert "'new': True, 'expired': False" in texts(echo, "u1")[0]
        # 10 minutes later: same session
        await ctx.receive([event_for("alpha", "u1", "session?", createdOn=base + 600_000)])
        await wait_for(lambda: len(texts(echo, "u1")) == 2)
        assert "'new': False, 'expired': False" in texts(echo, "u1")[1]
        # two hours after the last activity: expired
        await ctx.receive([event_for("alpha", "u1", "session?", createdOn=base + 8_000_000)])
        await wait_for(lambda: len(texts(echo, "u1")) == 3)
        assert "'new': False, 'expired': True" in texts(echo, "u1")[2]
        # a channel's own timeout (seconds, in flags) wins over the bot's
        await ctx.receive([event_for("alpha", "u1", "session?", createdOn=base + 8_000_000 + 5_000,
                                     flags={"sessionTimeout": 1})])
        await wait_for(lambda: len(texts(echo, "u1")) == 4)
        assert "'expired': True" in texts(echo, "u1")[3]


async def test_users_profiles_and_contacts_reach_bot_logic(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    make_bot(data_dir, "beta")
    async with run_server(data_dir, env, modules=["echo"]) as srv:
        alpha = srv.registry.records["alpha"].contexts["echo"]
        await alpha.users.save("u1", "test", {"first_name": "Ada"})
        contact = await alpha.users.link("u1", "test", [("beta", "test", "b-7")])
        await alpha.receive([event_for("alpha", "u1", "who am i?")])
        await wait_for(lambda: len(texts(echo, "u1")) == 1)
        reply = texts(echo, "u1")[0]
        assert "'first_name': 'Ada'" in reply and contact in reply and "'b-7'" in reply
        beta = srv.registry.records["beta"].contexts["echo"]
        linked = await beta.users.get("b-7", "test")  # linked: visible from the other bot too
        assert linked is not None and linked["contactId"] == contact and linked["profile"] is None
        counts = await alpha.users.erase("u1", "test")
        assert counts["users"] == 1 and counts["contacts"] == 1


async def test_masked_events_are_stored_without_text(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv:
        ctx = srv.registry.records["alpha"].contexts["echo"]
        await ctx.receive([event_for("alpha", "u1", "my iban is DE89", flags={"mask": True, "maskReplies": True})])
        await wait_for(lambda: texts(echo, "u1") == ["echo: my iban is DE89"])  # bot logic saw the real text

        async def history() -> list[dict[str, Any]]:
            found = await srv.storage.messages_for("alpha", "test", "u1")
            return found if len(found) == 2 else []

        stored = await wait_for(history)
        assert "DE89" not in repr(stored)
        assert [m["payload"] for m in stored] == [{"text": "***"}, {"type": "text", "text": "***"}]


async def test_users_erase_cli(data_dir: Path, env: dict, echo: Any, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)  # the CLI must open the test server's SQLite storage
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": "t"}) as srv, \
            aiohttp.ClientSession() as s:
        await say(s, srv, "alpha", "u1", "hello")
        await wait_for(lambda: len(echo.SENT) == 1)
        await srv.registry.records["alpha"].contexts["echo"].users.save("u1", "test", {"first_name": "Bo"})
        code = await asyncio.to_thread(main, ["users", "erase", "--bot", "alpha", "--user", "u1", "--channel",
                                              "test", "--data", str(data_dir), "--url", srv.url, "--token", "t"])
        assert code == 0
        assert "erased user u1 of bot alpha" in capsys.readouterr().out
        assert await srv.storage.messages_for("alpha", "test", "u1") == []
        assert await srv.storage.user_get("alpha", "test", "u1") is None
    assert main(["users", "erase", "--bot", "../x", "--user", "u1", "--data", str(data_dir)]) == 2


async def test_hook_on_user_erase_via_admin_api_and_offline_cli(data_dir: Path, env: dict, echo: Any,
                                                                capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("BP_MODULES_PATH", env["BP_MODULES_PATH"])
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": "t"}) as srv, aiohttp.ClientSession() as s:
        ctx = srv.registry.records["alpha"].contexts["echo"]
        await ctx.state.set("seen/u1", True)
        await ctx.users.save("u1", "test", {"first_name": "Cy"})
        async with s.delete(f"{srv.url}/api/v1/admin/bots/alpha/users/test/u1") as r:
            assert r.status == 401
        code = await asyncio.to_thread(main, ["users", "erase", "--bot", "alpha", "--user", "u1", "--channel", "test",
                                              "--data", str(data_dir), "--url", srv.url, "--token", "t"])
        assert code == 0 and "via the running server" in capsys.readouterr().out
        assert ("on_user_erase", "alpha/test/u1") in echo.CALLS
        assert await ctx.state.get("seen/u1") is None and await ctx.users.get("u1", "test") is None
        await ctx.state.set("seen/u2", True)
    echo.CALLS.clear()
    # no server: the CLI opens the storage and the modules itself
    assert await asyncio.to_thread(main, ["users", "erase", "--bot", "alpha", "--user", "u2", "--channel", "test",
                                          "--data", str(data_dir), "--url", "http://127.0.0.1:9"]) == 0
    assert "no server at" in capsys.readouterr().out
    assert ("on_user_erase", "alpha/test/u2") in echo.CALLS
