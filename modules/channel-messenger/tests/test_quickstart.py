"""The README's Messenger quickstart: its commands exist as written, and its scripted path works on a copy of
the shipped data folder (the shipped default shows the channel off; the emulator's --configure connects the
sample bot; chat and simulate work; Ctrl+C undoes it). The one-terminal command itself is driven in
test_start_with_emulator.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.cli.one_terminal import LOG_FILE
from channel_messenger.emulator import DEMO_APP_SECRET, DEMO_PORT, DEMO_TOKEN
from emulator_testkit import REPO_ROOT, botpress_py, cli_env, emulator_process, shipped_data  # noqa: F401

from botpress_py.testing import parse_cli, run_server, wait_for

README = REPO_ROOT / "README.md"


def quickstart() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Quickstart.*?(?=^## )", text, re.S | re.M)
    assert match, "README.md has no Quickstart section"
    return match.group(0)


async def channel_state(http: aiohttp.ClientSession, server_url: str) -> dict:
    async with http.get(server_url + "/status") as response:
        return (await response.json())["bots"]["welcome-bot"]["modules"]["channel-messenger"]


def test_readme_commands_exist_and_values_match() -> None:
    section = quickstart()
    commands = [c.strip() for line in re.findall(r"botpress-py [^\n`]*", section) for c in [line]]
    assert commands[0] == "botpress-py start --emulator", "the quickstart is one command, in one terminal"
    messenger = [c for c in commands if c.startswith("botpress-py messenger")]
    assert {shlex.split(c)[2] for c in messenger} == {"emulator", "chat", "simulate"}
    for command in commands:
        argv = shlex.split(command)[1:]
        parse_cli(argv)  # exits (SystemExit) on an unknown verb or option
    for value in (DEMO_TOKEN, DEMO_APP_SECRET, f"http://127.0.0.1:{DEMO_PORT}", '"enabled": false',
                  "https://graph.facebook.com", f"data/{LOG_FILE.as_posix()}", "--emulator-bot ID"):
        assert value in section
    assert "**Then, a real Facebook Page:**" in section
    # The two original commands are still there, unchanged.
    text = README.read_text(encoding="utf-8")
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && botpress-py start" in text
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m pytest -q" in text


@pytest.mark.usefixtures("cli_env")
async def test_the_quickstart_on_a_fresh_data_folder(tmp_path: Path) -> None:
    data = shipped_data(tmp_path)
    async with run_server(data) as server, aiohttp.ClientSession() as http:
        # Terminal 1: a plain start. The channel is off for the sample bot, not in error.
        state = await channel_state(http, server.url)
        assert state["state"] == "off", state

        # Terminal 2: the emulator, connecting welcome-bot to itself; the running server picks it up.
        async with emulator_process("--data", str(data), "--configure", "welcome-bot", "--server", server.url,
                                    until="Chat with it") as emu:

            async def connected() -> bool:
                return (await channel_state(http, server.url)).get("state") == "on"

            await wait_for(connected, timeout=15)

            # Terminal 3: chat, as typed by a user (here: piped).
            code, out, err = await botpress_py("messenger", "chat", "--data", str(data), "--url", server.url,
                                               "--bot", "welcome-bot", stdin=b"hello\n1\n/restart\n/quit\n")
            assert code == 0, err
            assert "you> hello\nWelcome Bot: Hi there! 😊 Good to see you." in out
            assert "you> 1\n  → Take the tour\nWelcome Bot: Here's the short tour." in out
            assert "you> /restart\nWelcome Bot: Welcome! 👋" in out
            assert out.endswith("you> /quit\nbye\n")

            code, out, err = await botpress_py("messenger", "simulate", "--data", str(data), "--url", server.url,
                                               "--bot", "welcome-bot", "hello")
            assert code == 0, err
            assert "Welcome Bot: What would you like to do?" in out

            # Ctrl+C on the emulator: the channel goes back to off (not error) by itself.
            code, _ = await emu.stop()
            assert code == 0

        async def off_again() -> bool:
            return (await channel_state(http, server.url)).get("state") == "off"

        await wait_for(off_again, timeout=15)
