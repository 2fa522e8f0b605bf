"""``botpress-py messenger emulator`` as a separate process: banner, --configure and its undoing, flags."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from channel_messenger.cli.emulator import parse_pages
from channel_messenger.emulator import DEMO_APP_SECRET, DEMO_PAGE_ID, DEMO_TOKEN
from emulator_testkit import REPO_ROOT, SAMPLE_BOT, emulator_process, subprocess_env

from botpress_py.testing import write_json


def sample_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "bots").mkdir(parents=True)
    for name in ("bot.config.json", "qna.json"):
        (data / "bots" / "welcome-bot").mkdir(exist_ok=True)
        (data / "bots" / "welcome-bot" / name).write_bytes((SAMPLE_BOT / name).read_bytes())
    return data


def test_pages_from_flags() -> None:
    assert parse_pages([], []) == {DEMO_PAGE_ID: {"token": DEMO_TOKEN, "name": "Emulator Page"}}
    assert parse_pages(["1001", "2002"], ["tok-a", "tok-b"]) == {
        "1001": {"token": "tok-a", "name": "Page 1001"}, "2002": {"token": "tok-b", "name": "Page 2002"}}
    assert parse_pages(["1001:tok-a:Shop"], []) == {"1001": {"token": "tok-a", "name": "Shop"}}
    for pages, tokens in ((["abc"], ["t"]), (["1001"], []), ([], ["t"])):
        with pytest.raises(ValueError):
            parse_pages(pages, tokens)


async def test_configure_then_ctrl_c_turns_the_channel_off_again(tmp_path: Path) -> None:
    data = sample_data(tmp_path)
    async with emulator_process("--data", str(data), "--configure", "welcome-bot", "--server",
                                "http://127.0.0.1:3999", until="Chat with it") as emu:
        assert emu.banner[:3] == [
            f"Graph API emulator on {emu.url}  (Ctrl+C stops)",
            f"  page {DEMO_PAGE_ID} \"Emulator Page\"  accessToken {DEMO_TOKEN}",
            f"  appSecret {DEMO_APP_SECRET}: signs webhooks posted to http://127.0.0.1:3999 (POST /_emulator/send)",
        ]
        assert emu.banner[-1] == "Chat with it:  botpress-py messenger chat --bot welcome-bot"
        bot_file = data / "bots" / "welcome-bot" / "config" / "channel-messenger.json"
        assert json.loads(bot_file.read_text()) == {
            "$schema": "../../../assets/modules/channel-messenger/config.schema.json",
            "enabled": True, "graphApiUrl": emu.url, "accessToken": DEMO_TOKEN, "appSecret": DEMO_APP_SECRET,
            "getStarted": "GET_STARTED"}
        async with aiohttp.ClientSession() as http, http.get(f"{emu.url}/_emulator") as response:
            info = await response.json()
        assert info["pages"][0]["id"] == DEMO_PAGE_ID and info["server"] == "http://127.0.0.1:3999"
        code, rest = await emu.stop()
    assert code == 0
    assert rest.splitlines()[-2:] == [f"Bot 'welcome-bot': Messenger channel turned off again in {bot_file}",
                                      "emulator stopped"]
    assert json.loads(bot_file.read_text())["enabled"] is False


async def test_configure_keeps_a_real_page_unless_forced(tmp_path: Path) -> None:
    data = sample_data(tmp_path)
    bot_file = write_json(data / "bots" / "welcome-bot" / "config" / "channel-messenger.json",
                          {"enabled": True, "accessToken": "EAAG-a-real-page-token", "greeting": "Hi!"})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "botpress_py", "messenger", "emulator", "--port", "0", "--data", str(data),
        "--configure", "welcome-bot", cwd=REPO_ROOT, env=subprocess_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert "already holds the accessToken of a real Page" in err.decode() and "--force" in err.decode()
    assert json.loads(bot_file.read_text())["accessToken"] == "EAAG-a-real-page-token"

    async with emulator_process("--data", str(data), "--configure", "welcome-bot", "--force",
                                until="Chat with it") as emu:
        config = json.loads(bot_file.read_text())
        assert config["accessToken"] == DEMO_TOKEN and config["greeting"] == "Hi!"  # other keys kept
        code, _ = await emu.stop()
    assert code == 0


async def test_unknown_bot_and_busy_port(tmp_path: Path) -> None:
    data = sample_data(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "botpress_py", "messenger", "emulator", "--port", "0", "--data", str(data),
        "--configure", "nobody", cwd=REPO_ROOT, env=subprocess_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1 and "no bot 'nobody'" in err.decode() and "welcome-bot" in err.decode()

    async with emulator_process("--data", str(data), "--quiet") as emu:
        port = emu.url.rsplit(":", 1)[1]
        busy = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "botpress_py", "messenger", "emulator", "--port", port, "--data", str(data),
            cwd=REPO_ROOT, env=subprocess_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(busy.communicate(), 30)
        assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in err.decode()
        await emu.stop()


async def test_fault_flags_and_call_log(tmp_path: Path) -> None:
    data = sample_data(tmp_path)
    async with emulator_process("--data", str(data), "--page", "1001", "--token", "tok", "--fail-rate", "1",
                                "--latency", "0.05", "--app-secret", "") as emu:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{emu.url}/_emulator/faults") as response:
                faults = (await response.json())["faults"]
            assert [(f["status"], f["code"], f["rate"], f["delay"]) for f in faults] == [
                (500, 1200, 1.0, 0.0), (None, None, 1.0, 0.05)]
            async with http.get(f"{emu.url}/v25.0/me", params={"access_token": "tok"}) as response:
                assert response.status == 500
                assert (await response.json())["error"]["code"] == 1200
            async with http.delete(f"{emu.url}/_emulator/faults"), \
                    http.get(f"{emu.url}/v25.0/me", params={"access_token": "tok"}) as response:
                assert await response.json() == {"id": "1001", "name": "Page 1001"}
        code, rest = await emu.stop()
    assert code == 0
    assert "no --app-secret: webhooks cannot be signed" in "\n".join(emu.banner)
    log = rest.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d  GET /v25\.0/me  500  planned fault: Temporary send message failure\. "
                        r"Please try again later\.", log[0]), log
    assert re.fullmatch(r"\d\d:\d\d:\d\d  GET /v25\.0/me  200", log[1]), log
