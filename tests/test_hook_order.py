"""The order hooks run in (pluggy's tryfirst and trylast honoured), each module's call on its own,
wrappers refused at load, and outgoing events routed to the module that declares their channel."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.loader import ModuleLoader
from botpress_py.sdk import IOEvent
from botpress_py.testing import make_bot, run_server, wait_for

# Each module appends "<hook> <module>" to <data>/calls.log, from every hook it implements.
RECORDER = '''
from pathlib import Path

from botpress_py.sdk import hookimpl

NAME = {name!r}
MARK = hookimpl({marker})


def _log(folder, hook):
    with open(Path(folder) / "calls.log", "a", encoding="utf-8") as out:
        out.write(f"{{hook}} {{NAME}}\\n")


def _data(bot):
    return Path(bot.data_dir).parent.parent


@MARK
def on_server_started(server):
    _log(server.data_dir, "on_server_started")


@MARK
def on_server_stopped(server):
    _log(server.data_dir, "on_server_stopped")


@MARK
def on_bot_mount(bot):
    _log(_data(bot), "on_bot_mount")


@MARK
def on_bot_unmount(bot):
    _log(_data(bot), "on_bot_unmount")


@MARK
def transform_input(event, bot):
    _log(_data(bot), "transform_input")


@MARK
async def on_incoming(event, bot):
    _log(_data(bot), "on_incoming")
    if {fails}:
        raise RuntimeError("this module fails on every event")
    if NAME.startswith("{replier}"):
        await bot.reply(event, {{"type": "text", "text": "ok"}})


@MARK
def transform_output(event, bot):
    _log(_data(bot), "transform_output")
'''

CHANNEL = '''
from aiohttp import web

from botpress_py.sdk import IOEvent, hookimpl

SENT = []


@hookimpl
def on_bot_mount(bot):
    async def say(request):
        body = await request.json()
        await bot.receive([IOEvent(type="text", channel=body["channel"], direction="incoming", botId=bot.id,
                                   target="u1", payload={{"type": "text", "text": body["text"]}})])
        return web.json_response({{}}, status=202)

    async def sent(request):
        return web.json_response(SENT)

    bot.router.add_post("/say", say)
    bot.router.add_get("/sent", sent)


@hookimpl
async def on_incoming(event, bot):
    if {answers}:
        await bot.reply(event, {{"type": "text", "text": "re: " + event.payload["text"]}})


@hookimpl
def on_outgoing(event, bot):
    SENT.append([{name!r}, event.channel, event.payload["text"]])  # sends whatever it is offered
    return True
'''


def write_module(root: Path, name: str, source: str, **manifest: Any) -> str:
    """A module folder under ``root``; its python package gets a unique name (packages stay imported)."""
    package = f"{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    (root / name / package).mkdir(parents=True)
    (root / name / "module.json").write_text(json.dumps({"name": name, "entry": package, **manifest}))
    (root / name / package / "__init__.py").write_text(source)
    return package


def recorder(name: str, marker: str = "", *, fails: bool = False, replier: str = "") -> str:
    return RECORDER.format(name=name, marker=marker, fails=fails, replier=replier or "-")


def calls(data: Path, hook: str) -> list[str]:
    lines = (data / "calls.log").read_text(encoding="utf-8").splitlines()
    return [line.split()[1] for line in lines if line.split()[0] == hook]


async def test_hooks_run_tryfirst_then_plain_then_trylast_each_group_in_config_order(tmp_path: Path) -> None:
    modules, data = tmp_path / "modules", tmp_path / "data"
    write_module(modules, "late", recorder("late", "trylast=True"))
    write_module(modules, "plain-b", recorder("plain-b", fails=True))
    write_module(modules, "early", recorder("early", "tryfirst=True"))
    write_module(modules, "plain-d", recorder("plain-d", replier="plain-d"))
    make_bot(data, "alpha")
    order = ["late", "plain-b", "early", "plain-d"]  # the config file's order
    async with run_server(data, {"BP_MODULES_PATH": str(modules)}, modules=order) as srv:
        ctx = srv.registry.records["alpha"].contexts["plain-d"]
        await ctx.receive([IOEvent(type="text", channel="none", direction="incoming", botId="alpha", target="u",
                                   payload={"type": "text", "text": "hi"})])
        await wait_for(lambda: len(calls(data, "transform_output")) == 4)
        await wait_for(lambda: srv.metrics.counters.get("bp_events_error_total") == 1)
    expected = ["early", "plain-b", "plain-d", "late"]
    for hook in ("on_server_started", "on_bot_mount", "transform_input", "on_incoming", "transform_output",
                 "on_server_stopped"):
        assert calls(data, hook) == expected, hook
    # A teardown releases in the reverse module order within each group.
    assert calls(data, "on_bot_unmount") == ["early", "plain-d", "plain-b", "late"]
    # plain-b raised on the event: the modules after it still ran (plain-d replied, late was called).


def test_loader_call_order_matches_the_documented_rule(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    write_module(modules, "z-last", recorder("z-last", "trylast=True"))
    write_module(modules, "a-plain", recorder("a-plain"))
    write_module(modules, "m-first", recorder("m-first", "tryfirst=True"))
    write_module(modules, "b-plain", recorder("b-plain"))
    loader = ModuleLoader(tmp_path / "data", {"BP_MODULES_PATH": str(modules)})
    loader.load_all([{"location": f"MODULES_ROOT/{name}"} for name in ("z-last", "a-plain", "m-first", "b-plain")])
    assert loader.errors == []
    assert loader.call_order("on_incoming") == ["m-first", "a-plain", "b-plain", "z-last"]
    assert loader.call_order("on_bot_unmount") == ["m-first", "b-plain", "a-plain", "z-last"]
    assert loader.call_order("on_incoming", {"z-last", "a-plain"}) == ["a-plain", "z-last"]
    # A hook a module does not implement leaves it with the plain ones, in config order.
    assert loader.call_order("on_user_erase") == ["z-last", "a-plain", "m-first", "b-plain"]


@pytest.mark.parametrize("marker", ["hookwrapper=True", "wrapper=True"])
def test_a_hook_wrapper_is_refused_at_load_naming_module_and_hook(tmp_path: Path, marker: str) -> None:
    modules = tmp_path / "modules"
    write_module(modules, "wrapping", f'''
from botpress_py.sdk import hookimpl


@hookimpl({marker})
def on_incoming(event, bot):
    return (yield)
''')
    write_module(modules, "fine", recorder("fine"))
    loader = ModuleLoader(tmp_path / "data", {"BP_MODULES_PATH": str(modules)})
    loader.load_all([{"location": "MODULES_ROOT/wrapping"}, {"location": "MODULES_ROOT/fine"}])
    assert list(loader.modules) == ["fine"]
    [error] = loader.errors
    assert error.location == "MODULES_ROOT/wrapping"
    assert str(modules / "wrapping") in error.reason
    assert f"hook 'on_incoming' is marked {marker}" in error.reason and "tryfirst=True" in error.reason
    assert loader.pm.get_plugin("wrapping") is None


# -- channels -------------------------------------------------------------------------------------
def load(tmp_path: Path, *names: str) -> ModuleLoader:
    loader = ModuleLoader(tmp_path / "data", {"BP_MODULES_PATH": str(tmp_path / "modules")})
    loader.load_all([{"location": f"MODULES_ROOT/{name}"} for name in names])
    return loader


def test_two_modules_claiming_one_channel_the_second_is_refused(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    write_module(modules, "chat-a", CHANNEL.format(name="chat-a", answers=False), kind="channel", channels=["chat"])
    write_module(modules, "chat-b", CHANNEL.format(name="chat-b", answers=False), kind="channel",
                 channels=["other", "chat"])
    loader = load(tmp_path, "chat-a", "chat-b")
    assert list(loader.modules) == ["chat-a"] and loader.channel_senders == {"chat": "chat-a"}
    [error] = loader.errors
    assert error.location == "MODULES_ROOT/chat-b"
    assert "channel 'chat' is already sent by module 'chat-a'" in error.reason
    assert str(modules / "chat-b" / "module.json") in error.reason


def test_channels_are_validated_and_only_for_channel_modules(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    write_module(modules, "bad-name", CHANNEL.format(name="x", answers=False), kind="channel", channels=["Chat Room"])
    write_module(modules, "not-a-list", CHANNEL.format(name="x", answers=False), kind="channel", channels="chat")
    write_module(modules, "logic", recorder("logic"), kind="logic", channels=["chat"])
    loader = load(tmp_path, "bad-name", "not-a-list", "logic")
    assert loader.modules == {}
    reasons = {e.location.split("/")[-1]: e.reason for e in loader.errors}
    assert "bad manifest" in reasons["bad-name"] and "#/channels/0" in reasons["bad-name"]
    assert "bad manifest" in reasons["not-a-list"] and "#/channels" in reasons["not-a-list"]
    assert '"channels" is only for modules of "kind": "channel"' in reasons["logic"]


def test_a_sender_without_declared_channels_loads_with_a_warning(tmp_path: Path, caplog: Any) -> None:
    write_module(tmp_path / "modules", "legacy", CHANNEL.format(name="legacy", answers=False), kind="channel")
    with caplog.at_level(logging.WARNING, logger="botpress_py"):
        loader = load(tmp_path, "legacy")
    assert list(loader.modules) == ["legacy"] and loader.errors == []
    assert loader.senders_of("anything") == ["legacy"]
    assert any("legacy implements on_outgoing but declares no \"channels\"" in r.getMessage() for r in caplog.records)


async def test_hook_on_outgoing_goes_to_the_module_declaring_the_events_channel(tmp_path: Path) -> None:
    """Each sender would send whatever it is offered: only the declared one is asked."""
    modules, data = tmp_path / "modules", tmp_path / "data"
    write_module(modules, "chan-a", CHANNEL.format(name="chan-a", answers=True), kind="channel", channels=["a"])
    write_module(modules, "chan-b", CHANNEL.format(name="chan-b", answers=False), kind="channel", channels=["b"])
    write_module(modules, "chan-c", CHANNEL.format(name="chan-c", answers=False), kind="channel", channels=["c"])
    make_bot(data, "alpha", module_configs={})
    async with run_server(data, {"BP_MODULES_PATH": str(modules)}, modules=["chan-a", "chan-b", "chan-c"]) as srv, \
            aiohttp.ClientSession() as http:
        base = f"{srv.url}/api/v1/bots/alpha/mod"
        for channel in ("b", "a", "c"):
            async with http.post(f"{base}/chan-a/say", json={"channel": channel, "text": channel}) as response:
                assert response.status == 202

        async def sent() -> list[list[str]]:
            found = []
            for module in ("chan-a", "chan-b", "chan-c"):
                async with http.get(f"{base}/{module}/sent") as response:
                    found += await response.json()
            return found if len(found) == 3 else []

        assert sorted(await wait_for(sent)) == [["chan-a", "a", "re: a"], ["chan-b", "b", "re: b"],
                                                ["chan-c", "c", "re: c"]]


async def test_an_event_whose_channel_module_is_off_for_the_bot_fails_at_once(tmp_path: Path) -> None:
    modules, data = tmp_path / "modules", tmp_path / "data"
    write_module(modules, "chan-a", CHANNEL.format(name="chan-a", answers=True), kind="channel", channels=["a"])
    write_module(modules, "chan-b", CHANNEL.format(name="chan-b", answers=False), kind="channel", channels=["b"])
    (modules / "chan-b" / "config.schema.json").write_text(json.dumps(
        {"type": "object", "properties": {"mustBeSet": {"type": "string"}}, "required": ["mustBeSet"]}))
    make_bot(data, "alpha")
    async with run_server(data, {"BP_MODULES_PATH": str(modules)}, modules=["chan-a", "chan-b"]) as srv, \
            aiohttp.ClientSession() as http:
        assert srv.registry.records["alpha"].modules["chan-b"]["state"] == "error"
        async with http.post(f"{srv.url}/api/v1/bots/alpha/mod/chan-a/say", json={"channel": "b", "text": "x"}):
            pass
        await wait_for(lambda: srv.metrics.counters.get("bp_events_send_failed_total") == 1)
        [failed] = await srv.storage.failed_events("outgoing")
        assert "no mounted module sends on channel 'b' for bot alpha" in (failed.error or "")
        async with http.get(f"{srv.url}/api/v1/bots/alpha/mod/chan-a/sent") as response:
            assert await response.json() == []  # chan-a was not asked to send b's event
