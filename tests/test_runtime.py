"""The running server: routing, runtime enable/disable/reload, admin API, HTTP limits."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.cli import main as cli_main
from botpress_py.testing import make_bot, run_server, wait_for, write_json

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def get_json(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.get(url, **kw) as r:
        return r.status, await r.json(content_type=None)


async def post_json(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.post(url, **kw) as r:
        return r.status, await r.json(content_type=None)


def three_bots(data_dir: Path) -> None:
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "alpha hi"}})
    make_bot(data_dir, "beta")
    make_bot(data_dir, "gamma", disabled=True)


async def test_hook_on_bot_mount_routes_per_bot_with_resolved_config(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/hello")
        assert (status, body["greeting"], body["bot"]) == (200, "alpha hi", "alpha")
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/beta/mod/echo/hello")
        assert (status, body["greeting"]) == (200, "hi")
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/items/42")
        assert body == {"id": "42"}
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/gamma/mod/echo/hello")
        assert (status, body["error"]) == (404, "bot is disabled")
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/nobody/mod/echo/hello")
        assert status == 404 and "not found" in body["error"]
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/nowhere")
        assert status == 404
        async with s.delete(f"{srv.url}/api/v1/bots/alpha/mod/echo/hello") as r:
            assert r.status == 405
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/unknown-mod/x")
        assert status == 404 and "not loaded" in body["error"]
    assert ("on_bot_mount", "alpha") in echo.CALLS and ("on_bot_mount", "gamma") not in echo.CALLS


async def test_hook_on_server_started_registers_any_bot_routes(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/___/mod/echo/ping")
        assert status == 200 and body == {"pong": True, "bots": ["alpha", "beta"]}


async def test_hook_on_server_ready_runs_after_every_mount(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"]):
        hooks = [h for h, _ in echo.CALLS]
        assert hooks.index("on_server_started") < hooks.index("on_bot_mount")
        last_mount = max(i for i, h in enumerate(hooks) if h == "on_bot_mount")
        assert last_mount < hooks.index("on_server_ready")
        assert hooks.count("on_server_ready") == 1


async def test_hook_on_bot_unmount_on_disable_removes_routes(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        await srv.registry.set_disabled("alpha", True)
        assert ("on_bot_unmount", "alpha") in echo.CALLS and ("on_bot_unmount", "beta") not in echo.CALLS
        assert "alpha" not in srv.module_contexts["echo"].bots()
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/hello")
        assert (status, body["error"]) == (404, "bot is disabled")


async def test_hook_on_server_stopped_once_after_bots_at_shutdown(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"]):
        pass
    hooks = [h for h, _ in echo.CALLS]
    assert hooks.count("on_server_stopped") == 1
    assert max(i for i, h in enumerate(hooks) if h == "on_bot_unmount") < hooks.index("on_server_stopped")
    assert sorted(b for h, b in echo.CALLS if h == "on_bot_unmount") == ["alpha", "beta"]


async def test_status_lists_every_bot_and_module_state(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    make_bot(data_dir, "delta", module_configs={"echo": {"failMount": True}})
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        status, body = await get_json(s, f"{srv.url}/status")
        assert status == 200 and body["status"] == "ok" and body["version"]
        bots = body["bots"]
        assert bots["alpha"] == {"state": "mounted", "modules": {"echo": {"state": "on"}}}
        assert bots["gamma"]["state"] == "disabled"
        assert bots["delta"]["modules"]["echo"]["state"] == "error"
        assert "failMount is set" in bots["delta"]["modules"]["echo"]["reason"]
        async with s.get(f"{srv.url}/metrics") as r:
            text = await r.text()
        assert "bp_bots_mounted 3" in text and "# TYPE bp_http_requests_total counter" in text


async def test_invalid_bot_files_are_reported_while_other_bots_run(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    broken = data_dir / "bots" / "broken"
    broken.mkdir()
    (broken / "bot.config.json").write_text('{"name": "x",')
    make_bot(data_dir, "badconf", module_configs={"echo": {"level": "high"}})
    make_bot(data_dir, "wrongid", id="other")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        _, body = await get_json(s, f"{srv.url}/status")
        assert body["bots"]["broken"]["state"] == "error"
        assert "bot.config.json" in body["bots"]["broken"]["error"] and "line 1" in body["bots"]["broken"]["error"]
        # a schema violation in a bot's module config turns that module off for that bot only
        reason = body["bots"]["badconf"]["modules"]["echo"]["reason"]
        assert "bots/badconf/config/echo.json#/level" in reason
        assert body["bots"]["wrongid"]["state"] == "error" and "/id" in body["bots"]["wrongid"]["error"]
        status, _ = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/hello")
        assert status == 200


async def test_half_written_file_keeps_last_good_state(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        conf = data_dir / "bots" / "alpha" / "config" / "echo.json"
        conf.write_text('{"greeting": "new hi"')  # an editor saved half of it
        await wait_for(lambda: "reload refused" in (srv.registry.records["alpha"].error or ""), 3)
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/hello")
        assert (status, body["greeting"]) == (200, "alpha hi")  # still the last good config
        _, st = await get_json(s, f"{srv.url}/status")
        assert "echo.json" in st["bots"]["alpha"]["error"] and st["bots"]["alpha"]["state"] == "mounted"
        conf.write_text('{"greeting": "new hi", "level": -1}')  # valid JSON, schema violation
        await wait_for(lambda: "/level" in (srv.registry.records["alpha"].error or ""), 3)
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/hello")
        assert body["greeting"] == "alpha hi"
        conf.write_text('{"greeting": "new hi"}')  # finished saving
        await wait_for(lambda: srv.registry.records["alpha"].error is None, 3)
        status, body = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/hello")
        assert body["greeting"] == "new hi"


async def _hammer(s: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[int]:
    """Requests to a bot that is not being flipped, until told to stop."""
    statuses: list[int] = []
    while not stop.is_set():
        async with s.get(url) as r:
            statuses.append(r.status)
    return statuses


async def _flip_scenario(srv: Any, s: aiohttp.ClientSession, disable: Any, enable: Any, data_dir: Path) -> None:
    hello = f"{srv.url}/api/v1/bots/alpha/mod/echo/hello"
    stop = asyncio.Event()
    load = [asyncio.create_task(_hammer(s, f"{srv.url}/api/v1/bots/beta/mod/echo/hello", stop)) for _ in range(4)]
    try:
        for round_ in range(2):
            loop = asyncio.get_running_loop()
            started = loop.time()
            await disable()
            await wait_for(lambda: srv.registry.records["alpha"].state == "disabled", 2)
            assert loop.time() - started < 2
            async with s.get(hello) as r:
                assert r.status == 404 and (await r.json())["error"] == "bot is disabled"
            assert json.loads((data_dir / "bots/alpha/bot.config.json").read_text())["disabled"] is True
            write_json(data_dir / "bots/alpha/config/echo.json", {"greeting": f"fresh {round_}"})
            started = loop.time()
            await enable()
            await wait_for(lambda: srv.registry.records["alpha"].state == "mounted", 2)
            assert loop.time() - started < 2
            async with s.get(hello) as r:
                body = await r.text()
                assert r.status == 200 and json.loads(body)["greeting"] == f"fresh {round_}", body  # fresh config
    finally:
        stop.set()
        statuses = [x for t in load for x in await t]
    assert statuses and set(statuses) == {200}, f"other bot disturbed: {set(statuses)}"


async def test_disable_enable_via_admin_api(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        async def flip(action: str) -> None:
            status, body = await post_json(s, f"{srv.url}/api/v1/admin/bots/alpha/{action}", headers=AUTH)
            assert status == 200, body

        await _flip_scenario(srv, s, lambda: flip("disable"), lambda: flip("enable"), data_dir)
        status, body = await get_json(s, f"{srv.url}/api/v1/admin/bots", headers=AUTH)
        assert status == 200 and body["bots"]["alpha"]["state"] == "mounted"


async def test_disable_enable_via_cli(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        async def cli(action: str) -> None:
            code = await asyncio.to_thread(cli_main, ["bots", action, "alpha", "--data", str(data_dir),
                                                      "--url", srv.url, "--token", TOKEN])
            assert code == 0

        await _flip_scenario(srv, s, lambda: cli("disable"), lambda: cli("enable"), data_dir)


async def test_disable_enable_via_file_edit(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        path = data_dir / "bots/alpha/bot.config.json"

        async def edit(disabled: bool) -> None:
            write_json(path, {"id": "alpha", "name": "alpha", "disabled": disabled})

        await _flip_scenario(srv, s, lambda: edit(True), lambda: edit(False), data_dir)


async def test_reload_via_admin_applies_edited_config(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN},
                          watch={"enabled": False}) as srv, aiohttp.ClientSession() as s:
        write_json(data_dir / "bots/alpha/config/echo.json", {"greeting": "reloaded"})
        status, body = await post_json(s, f"{srv.url}/api/v1/admin/bots/alpha/reload", headers=AUTH)
        assert status == 200 and body["state"] == "mounted"
        _, hello = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/hello")
        assert hello["greeting"] == "reloaded"


async def test_new_and_removed_bot_folders_are_picked_up(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        make_bot(data_dir, "newbie")
        await wait_for(lambda: "newbie" in srv.registry.records
                       and srv.registry.records["newbie"].state == "mounted", 3)
        status, _ = await get_json(s, f"{srv.url}/api/v1/bots/newbie/mod/echo/hello")
        assert status == 200
        (data_dir / "bots/newbie/bot.config.json").unlink()
        await wait_for(lambda: "newbie" not in srv.registry.records, 3)


async def test_admin_api_refuses_a_missing_or_wrong_token(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        status, body = await get_json(s, f"{srv.url}/api/v1/admin/bots")
        assert status == 401 and "Authorization: Bearer" in body["hint"]
        status, body = await get_json(s, f"{srv.url}/api/v1/admin/bots", headers={"Authorization": "Bearer nope"})
        assert status == 403 and body["error"] == "invalid admin token"
        status, _ = await post_json(s, f"{srv.url}/api/v1/admin/bots/alpha/disable",
                                    headers={"Authorization": "Basic abc"})
        assert status == 401
        assert srv.registry.records["alpha"].state == "mounted"
        status, body = await get_json(s, f"{srv.url}/api/v1/admin/modules", headers=AUTH)
        assert status == 200 and [m["name"] for m in body["modules"]] == ["echo"]
        # modules can protect their own routes with the same token
        status, _ = await get_json(s, f"{srv.url}/api/v1/bots/___/mod/echo/admin-only")
        assert status == 401
        status, _ = await get_json(s, f"{srv.url}/api/v1/bots/___/mod/echo/admin-only", headers=AUTH)
        assert status == 200
    # No token set: the server uses the one it generated in the data folder, and says so to a wrong one.
    async with run_server(data_dir, env, modules=["echo"], admin={"token": ""}) as srv, \
            aiohttp.ClientSession() as s:
        status, body = await get_json(s, f"{srv.url}/api/v1/admin/bots", headers=AUTH)
        assert status == 403 and body["error"] == "invalid admin token" and body["tokenSource"] == "file"
        assert "<data>/secrets/admin.token" in body["hint"] and str(data_dir) not in json.dumps(body)
        generated = (data_dir / "secrets" / "admin.token").read_text().strip()
        status, body = await get_json(s, f"{srv.url}/api/v1/admin/bots",
                                      headers={"Authorization": f"Bearer {generated}"})
        assert status == 200 and "alpha" in body["bots"]


@pytest.mark.parametrize("bot_path", ["..%2Fx", "%2e%2e", "%2E%2E", "..", "UPPER", "a%00b", "___x"])
async def test_bot_id_path_traversal_is_rejected(data_dir: Path, env: dict, echo: Any, bot_path: str) -> None:
    three_bots(data_dir)
    (data_dir / "x").mkdir()
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        for url in (f"{srv.url}/api/v1/bots/{bot_path}/mod/echo/hello",
                    f"{srv.url}/api/v1/admin/bots/{bot_path}/disable"):
            async with s.request("POST" if "admin" in url else "GET", aiohttp.helpers.URL(url, encoded=True),
                                 headers=AUTH) as r:
                assert r.status in (400, 404), (url, r.status)
        assert not (data_dir / "x" / "bot.config.json").exists()
        assert not (data_dir / "bot.config.json").exists()


async def test_body_limit_gives_413(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"],
                          httpServer={"bodyLimit": "1kb"}) as srv, aiohttp.ClientSession() as s:
        url = f"{srv.url}/api/v1/bots/alpha/mod/echo/in"
        async with s.post(url, data=b"x" * 2048, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 413 and (await r.json())["limit"] == "1kb"

        async def chunks() -> Any:  # no Content-Length: the limit holds while reading
            for _ in range(4):
                yield b'{"a": "' + b"y" * 600 + b'"}'

        async with s.post(url, data=chunks()) as r:
            assert r.status == 413
        async with s.post(url, json={"user": "u1", "text": "small"}) as r:
            assert r.status == 200


async def test_existing_module_error_does_not_block_fixes_elsewhere(data_dir: Path, env: dict, echo: Any) -> None:
    """A bot started with a module in error still takes edits; fixing the module brings it on."""
    make_bot(data_dir, "alpha", module_configs={"echo": {"level": "high"}})
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}, watch={"enabled": False}) as srv, \
            aiohttp.ClientSession() as s:
        assert srv.registry.records["alpha"].modules["echo"]["state"] == "error"
        write_json(data_dir / "bots/alpha/bot.config.json", {"name": "Alpha renamed"})
        status, body = await post_json(s, f"{srv.url}/api/v1/admin/bots/alpha/reload", headers=AUTH)
        assert status == 200 and "error" not in body  # not refused
        assert srv.registry.records["alpha"].config["name"] == "Alpha renamed"
        write_json(data_dir / "bots/alpha/config/echo.json", {"level": 3})
        status, body = await post_json(s, f"{srv.url}/api/v1/admin/bots/alpha/reload", headers=AUTH)
        assert body["modules"]["echo"] == {"state": "on"}
        _, hello = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/hello")
        assert hello["level"] == 3


async def test_global_module_config_edit_reaches_bots_and_server_context(data_dir: Path, env: dict, echo: Any) -> None:
    three_bots(data_dir)
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        write_json(data_dir / "global" / "config" / "echo.json", {"greeting": "from global", "level": 7})
        await wait_for(lambda: srv.module_contexts["echo"].config.get("level") == 7, 3)
        await wait_for(lambda: srv.registry.records["beta"].contexts.get("echo") is not None
                       and srv.registry.records["beta"].contexts["echo"].config["greeting"] == "from global", 3)
        _, body = await get_json(s, f"{srv.url}/api/v1/bots/alpha/mod/echo/hello")
        assert body["greeting"] == "alpha hi" and body["level"] == 7  # the bot's own file still wins
