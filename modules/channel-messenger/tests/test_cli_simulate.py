"""``botpress-py messenger simulate``: signed webhooks to the real server, replies read back from the
emulator and printed for a terminal; and an error that says what to do for each usual mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from emulator_testkit import PAGE, SECRET, USER, cli_env, rig, run_cli  # noqa: F401  (cli_env: a fixture)

from botpress_py.testing import free_port, make_bot, wait_for, write_json

pytestmark = pytest.mark.usefixtures("cli_env")
SETTLE = "0.4"  # seconds of quiet that end a bot turn (default 1): keeps the tests quick


def simulate(r, *args: str) -> list[str]:
    return ["messenger", "simulate", "--data", str(r.data), "--url", r.server.url, "--user", USER,
            "--settle", SETTLE, *args]


async def test_text_quick_reply_get_started_and_carousel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with rig(tmp_path) as r:
        code, out, err = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot", "Hello!"))
        assert (code, err) == (0, "")
        assert out.splitlines() == [
            "you: Hello!",
            "Welcome Bot: Hi there! 😊 Good to see you.",
            "Welcome Bot: What would you like to do?",
            "             [1] Take the tour  (quick reply TOUR)",
            "             [2] What can you do?  (quick reply HELP)",
            "             [3] About you  (quick reply ABOUT)",
        ]

        code, out, err = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot", "--quick-reply", "TOUR",
                                                           "Take the tour"))
        assert (code, err) == (0, "")
        assert out.splitlines() == [
            "you: Take the tour  (quick reply TOUR)",
            "Welcome Bot: Here's the short tour. Swipe through the cards 👉",
            "Welcome Bot: ┌─ 1/3 ─ Bots are folders",
            "             │ Each bot is a folder in data/bots/ with a few JSON files.",
            "             │ [1] How do I edit you?  (postback EDIT_ME)",
            "             ├─ 2/3 ─ Drop-in modules",
            "             │ Channels and bot logic are modules you drop into modules/.",
            "             │ [2] About you  (postback say::about)",
            "             ├─ 3/3 ─ Messenger built in",
            "             │ Connect a Facebook Page with a token and an app secret.",
            "             │ [↗] Messenger docs  https://developers.facebook.com/docs/messenger-platform",
            "             │ [3] Back to the menu  (postback HELP)",
            "             └─",
        ]
        # The quick reply reached the bot as Messenger sends it: the title as text, plus the payload.
        incoming = [m for m in await r.server.storage.messages_for("welcome-bot", "messenger", USER)
                    if m["direction"] == "incoming"]
        assert incoming[-1]["payload"]["payload"] == "TOUR"

        code, out, err = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot", "--postback", "GET_STARTED",
                                                           "Get Started"))
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[:3] == ["you: [tapped Get Started]  (postback GET_STARTED)",
                             "Welcome Bot: Welcome! 👋 I'm Welcome Bot, a small demo of botpress-py.",
                             "Welcome Bot: …"]
        assert lines[3] == "Welcome Bot: ┌─ Nice to meet you!"
        assert "             │ [1] Take the tour  (postback TOUR)" in lines
        assert lines[-1] == "             └─"

        # A Say something button (postback say::about) makes the bot hear "about".
        code, out, _ = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot", "--postback", "say::about"))
        assert code == 0 and "Welcome Bot: I'm Welcome Bot 🤖" in out

        code, out, _ = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot", "--json", "help"))
        assert code == 0
        answer = json.loads(out)
        assert answer["page"] == PAGE and answer["psid"] == USER and answer["refused"] == []
        assert [q["payload"] for q in answer["replies"][0]["message"]["quick_replies"]] == ["TOUR", "ABOUT", "EDIT_ME"]


async def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with rig(tmp_path) as r:
        code, _, err = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot"))
        assert code == 2 and "say something" in err
        code, _, err = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot", "--postback", "A",
                                                       "--quick-reply", "B"))
        assert code == 2 and "not both" in err


async def test_server_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with rig(tmp_path) as r:
        code, out, err = await run_cli(capsys, "messenger", "simulate", "--data", str(r.data), "--url",
                                       "http://127.0.0.1:9", "--bot", "welcome-bot", "hi")
    assert (code, out) == (1, "")
    assert err == ("error: no botpress-py server answers at http://127.0.0.1:9: start it with 'botpress-py start' "
                   "(or give its address with --url)\n")


async def test_server_url_from_the_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with rig(tmp_path) as r:
        data = r.data
    # No --url: the port comes from data/global/botpress.config.json, like the server reads it. A port
    # nobody listens on (never the default 3000: a developer's server may be running there).
    port = free_port()
    config_file = data / "global" / "botpress.config.json"
    config = json.loads(config_file.read_text())
    write_json(config_file, {**config, "httpServer": {**config.get("httpServer", {}), "port": port}})
    code, _, err = await run_cli(capsys, "messenger", "simulate", "--data", str(data), "--bot", "welcome-bot", "hi")
    assert code == 1 and f"no botpress-py server answers at http://127.0.0.1:{port}" in err


async def test_bot_unknown_disabled_or_channel_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with rig(tmp_path) as r:
        make_bot(r.data, "sleepy", disabled=True)
        make_bot(r.data, "quiet", qna={"entries": [], "fallback": []},
                 module_configs={"channel-messenger": {"enabled": False}})
        async def known() -> bool:
            async with r.http.get(r.server.url + "/status") as response:
                bots = (await response.json())["bots"]
            return "sleepy" in bots and bots.get("quiet", {}).get("state") == "mounted"

        await wait_for(known, timeout=10)

        code, _, err = await run_cli(capsys, *simulate(r, "--bot", "nobody", "hi"))
        assert code == 1
        assert err == f"error: the server at {r.server.url} has no bot 'nobody' (bots: quiet, sleepy, welcome-bot)\n"

        code, _, err = await run_cli(capsys, *simulate(r, "--bot", "sleepy", "hi"))
        assert code == 1 and "bot 'sleepy' is disabled: enable it with 'botpress-py bots enable sleepy'" in err

        code, _, err = await run_cli(capsys, *simulate(r, "--bot", "quiet", "hi"))
        assert code == 1
        assert "the Messenger channel of bot 'quiet' is off (enabled is false in" in err
        assert "botpress-py messenger emulator --configure quiet" in err


async def test_signature_refused_says_the_app_secret_differs(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # The server was started with another appSecret in its environment than the files say
    # (the shell running simulate does not have it): the bot file leaves appSecret to the global level.
    async with rig(tmp_path, bot_config={"appSecret": None}, global_config={"appSecret": SECRET}, app_secret=None,
                   server_env={"BP_MODULE_CHANNEL_MESSENGER_APPSECRET": "secret-only-the-server-knows"}) as r:
        assert await r.module_status() == {"state": "on"}
        code, _, err = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot", "hi"))
    assert code == 1
    assert "the server refused the webhook signature (403)" in err
    assert "appSecret used to sign it (from " in err and "channel-messenger.json) differs" in err
    assert "BP_MODULE_CHANNEL_MESSENGER_APPSECRET" in err


async def test_emulator_not_running_and_real_graph_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with rig(tmp_path) as r:
        await r.emulator.stop()  # the bot is connected, then the emulator goes away
        code, _, err = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot", "hi"))
        assert code == 1
        assert f"no emulator answers at {r.emu} (the graphApiUrl of bot 'welcome-bot', from" in err
        assert "start it with 'botpress-py messenger emulator'" in err


async def test_a_bot_on_the_real_graph_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The server got graphApiUrl from its environment; the files (what simulate reads) leave Meta's default.
    async with rig(tmp_path, bot_config={"graphApiUrl": None},
                   server_env={"BP_MODULE_CHANNEL_MESSENGER_GRAPHAPIURL": "{emulator}"}) as r:
        assert await r.module_status() == {"state": "on"}
        code, _, err = await run_cli(capsys, *simulate(r, "--bot", "welcome-bot", "hi"))
    assert code == 1
    global_file = r.data / "global" / "config" / "channel-messenger.json"
    assert err == (f"error: bot 'welcome-bot' sends its replies to the real Graph API (https://graph.facebook.com, "
                   f"graphApiUrl from {global_file}), where this command cannot read them; to try it with the "
                   "emulator: botpress-py messenger emulator --configure welcome-bot\n")


async def test_no_reply_within_the_timeout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with rig(tmp_path, bot="mute", qna={"entries": [], "fallback": []}) as r:
        code, out, err = await run_cli(capsys, *simulate(r, "--bot", "mute", "--timeout", "1", "--postback",
                                                         "NOBODY_HANDLES_THIS"))
    assert code == 1
    assert out == "you: [tapped NOBODY_HANDLES_THIS]  (postback NOBODY_HANDLES_THIS)\n"
    assert "error: no reply from bot 'mute' within 1 s to postback NOBODY_HANDLES_THIS" in err


async def test_replies_the_emulator_refuses_are_shown_and_fail(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    qna = {"entries": [{"id": "raw", "questions": ["raw"], "answers": [
        {"type": "custom", "messenger": {"text": "x" * 2001}}]}], "fallback": []}
    async with rig(tmp_path, bot="rawbot", qna=qna) as r:
        code, out, err = await run_cli(capsys, *simulate(r, "--bot", "rawbot", "raw"))
    assert code == 1
    assert ("  ⚠ the emulator refused a message as Meta would: (#100) Length of param message[text] must be less "
            "than or equal to 2000 (code 100)") in out.splitlines()
    assert "the emulator refused 1 of the bot's sends" in err
