"""A restarted ``messenger emulator`` still has the Messenger profile the server pushed to its Page, as a Facebook
Page keeps it: the server pushes a profile only when it changed since its last push, so without this a chat
after the restart would show no Get Started button."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.emulator import DEMO_PAGE_ID, GraphEmulator
from channel_messenger.emulator.page_profiles import PROFILES_FILE
from emulator_testkit import botpress_py, cli_env, emulator_process, shipped_data  # noqa: F401

from botpress_py.testing import run_server, wait_for

GET_STARTED = {"payload": "GET_STARTED"}


async def emulator_info(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/_emulator") as response:
        return await response.json()


async def profile_calls(http: aiohttp.ClientSession, url: str) -> list[str]:
    async with http.get(f"{url}/_emulator/calls") as response:
        calls = (await response.json())["calls"]
    return [f"{c['method']} {c['path']}" for c in calls if c["path"].endswith("/messenger_profile")]


async def channel_state(http: aiohttp.ClientSession, server_url: str) -> str:
    async with http.get(server_url + "/status") as response:
        return (await response.json())["bots"]["welcome-bot"]["modules"]["channel-messenger"]["state"]


@pytest.mark.usefixtures("cli_env")
async def test_after_a_restart_of_the_emulator_the_chat_still_has_the_get_started_button(tmp_path: Path) -> None:
    data = shipped_data(tmp_path)
    async with run_server(data) as server, aiohttp.ClientSession() as http:
        pushed_per_run = []
        for run in range(2):
            async with emulator_process("--data", str(data), "--configure", "welcome-bot", "--server", server.url,
                                        until="Chat with it") as emu:
                kept = f"  page {DEMO_PAGE_ID} has its Messenger profile of the last run ("
                assert any(line.startswith(kept) for line in emu.banner) == (run == 1), emu.banner

                async def has_get_started(url: str = emu.url) -> bool:
                    return (await emulator_info(http, url))["pages"][0]["profile"].get("get_started") == GET_STARTED

                async def connected() -> bool:
                    return await channel_state(http, server.url) == "on"

                await wait_for(connected, timeout=15)
                await wait_for(has_get_started, timeout=15)
                code, out, err = await botpress_py("messenger", "chat", "--data", str(data), "--url", server.url,
                                                   "--bot", "welcome-bot", stdin=b"/restart\n/quit\n")
                assert code == 0, err
                assert "(This Page has a Get Started button: /restart taps it.)" in out
                assert "you> /restart\nWelcome Bot: Welcome! 👋" in out
                pushed_per_run.append(await profile_calls(http, emu.url))
                code, _ = await emu.stop()
                assert code == 0

            async def off(url: str = server.url) -> bool:
                return await channel_state(http, url) == "off"

            await wait_for(off, timeout=15)
    assert pushed_per_run[0] and all(c.startswith("POST ") for c in pushed_per_run[0]), pushed_per_run
    assert pushed_per_run[1] == [], "the second run's emulator had the profile already: the server pushed nothing"
    saved = json.loads((data / PROFILES_FILE).read_text(encoding="utf-8"))
    assert saved[DEMO_PAGE_ID]["get_started"] == GET_STARTED


async def test_profiles_are_loaded_for_the_pages_the_emulator_knows_and_others_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / PROFILES_FILE
    path.parent.mkdir(parents=True)
    other = {"greeting": [{"locale": "default", "text": "another page's"}]}
    path.write_text(json.dumps({"111": {"get_started": GET_STARTED}, "222": other}), encoding="utf-8")
    async with GraphEmulator({"111": {"token": "t1"}}, profiles_file=path) as graph, aiohttp.ClientSession() as http:
        assert graph.pages["111"].profile == {"get_started": GET_STARTED}
        greeting = [{"locale": "default", "text": "hi"}]
        async with http.post(f"{graph.url}/v19.0/me/messenger_profile", params={"access_token": "t1"},
                             json={"greeting": greeting}) as response:
            assert response.status == 200, await response.text()
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "111": {"get_started": GET_STARTED, "greeting": greeting}, "222": other}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"111": "not an object"}'])
async def test_an_unreadable_profiles_file_is_said_and_the_pages_start_without_a_profile(
        tmp_path: Path, content: str) -> None:
    path = tmp_path / PROFILES_FILE
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    graph = GraphEmulator({"111": {"token": "t1"}}, profiles_file=path)
    assert graph.pages["111"].profile == {}
    assert graph.profiles_problem is not None and str(path) in graph.profiles_problem
