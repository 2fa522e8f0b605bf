"""``botpress-py start --emulator``: the server, the Graph API emulator and a chat in one terminal, as a
newcomer runs it on a fresh clone; /quit, end of input and Ctrl+C stop all of it and put the bot's file
back. Ctrl+C in ``messenger chat`` ends it quietly too."""

from __future__ import annotations

import json
import re
from pathlib import Path

from emulator_testkit import rig, shipped_data, terminal

from botpress_py.testing import free_port, write_json

MESSENGER_FILE = Path("bots/welcome-bot/config/channel-messenger.json")
BANNER_END = "Ctrl+C stops the server.)"


def start_args(data: Path, *extra: str) -> list[str]:
    return ["start", "--emulator", "--port", str(free_port()), "--emulator-port", "0", "--data", str(data), *extra]


async def test_chat_with_the_sample_bot_in_one_terminal(tmp_path: Path) -> None:
    data = shipped_data(tmp_path)
    assert not (data / MESSENGER_FILE).exists(), "a fresh clone has no Messenger settings for the sample bot"
    async with terminal(*start_args(data)) as term:
        banner = await term.expect(BANNER_END)
        assert "Chatting with Welcome Bot (bot welcome-bot, page 100000000000001) as user 2000000000000001" in banner
        assert "(This Page has a Get Started button: /restart taps it.)" in banner
        assert f"(The server's log: {data / 'logs' / 'start-emulator.log'}." in banner
        # For this run, the bot's file points at the emulator the process runs.
        during = json.loads((data / MESSENGER_FILE).read_text())
        assert during["enabled"] is True and re.fullmatch(r"http://127\.0\.0\.1:[0-9]+", during["graphApiUrl"])
        assert during["graphApiUrl"] in banner

        await term.type("hello")
        turn = await term.expect("[3] About you")
        assert turn == ("\nyou> hello\n"
                        "Welcome Bot: Hi there! 😊 Good to see you.\n"
                        "Welcome Bot: What would you like to do?\n"
                        "             [1] Take the tour\n"
                        "             [2] What can you do?\n"
                        "             [3] About you")
        await term.type("1")
        turn = await term.expect("Back to the menu")
        assert turn.startswith("\nyou> 1\n  → Take the tour\nWelcome Bot: Here's the short tour.")
        # The user reacts to the bot's last message and sends a photo: the chat shows both.
        await term.type("/react 👍")
        await term.expect("you> /react 👍\n  (you reacted 👍 to \"")
        await term.type("/image")
        await term.expect("you> /image\n  (you sent a photo: a sample picture)")
        await term.type("/quit")
        code, rest, err = await term.finish()
    assert code == 0, err
    assert rest.endswith("you> /quit\nbye\nBot 'welcome-bot': "
                         f"{data / MESSENGER_FILE} removed again (it was written for this run only)\n")
    assert "Traceback" not in err
    # The server's lines while chatting went to the log file, not into the chat.
    assert "connected bot 'welcome-bot'" not in err and "mounted" not in err
    log = (data / "logs" / "start-emulator.log").read_text()
    assert "channel-messenger connected bot 'welcome-bot' to page 100000000000001" in log
    assert "stop requested: module channel-messenger: the chat ended" in log
    assert not (data / MESSENGER_FILE).exists(), "the bot's file is as before: there was none"
    # The Page keeps the profile the server pushed for the next run, as a Facebook Page does.
    kept = json.loads((data / "emulator" / "page-profiles.json").read_text())
    assert kept["100000000000001"]["get_started"] == {"payload": "GET_STARTED"}


async def test_end_of_input_stops_everything(tmp_path: Path) -> None:
    data = shipped_data(tmp_path)
    async with terminal(*start_args(data)) as term:
        await term.expect(BANNER_END)
        await term.type("/restart")
        assert term.process.stdin is not None
        term.process.stdin.close()  # Ctrl+D, or the end of a piped script
        code, rest, err = await term.finish()
    assert code == 0 and "Traceback" not in err, err
    assert "you> /restart\nWelcome Bot: Welcome! 👋 I'm Welcome Bot, a small demo of botpress-py." in term.out
    assert "\nbye\n" in rest
    assert not (data / MESSENGER_FILE).exists()


async def test_ctrl_c_stops_everything_and_puts_the_bots_file_back(tmp_path: Path) -> None:
    data = shipped_data(tmp_path)
    before = {"$schema": "../../../assets/modules/channel-messenger/config.schema.json", "enabled": False,
              "greeting": "Hello from the file", "typingIndicators": False}
    write_json(data / MESSENGER_FILE, before)
    async with terminal(*start_args(data)) as term:
        banner = await term.expect(BANNER_END)
        assert "(Page greeting) Hello from the file" in banner
        during = json.loads((data / MESSENGER_FILE).read_text())
        assert during["greeting"] == "Hello from the file" and during["enabled"] is True
        await term.type("hello")
        await term.expect("Welcome Bot: Hi there!")
        await term.ctrl_c()  # while the bot's turn may still be going on
        code, rest, err = await term.finish()
    assert code == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert rest.endswith(f"Bot 'welcome-bot': {data / MESSENGER_FILE} is back as it was before this run\n")
    assert json.loads((data / MESSENGER_FILE).read_text()) == before


async def test_a_bot_that_does_not_exist_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    data = shipped_data(tmp_path)
    async with terminal(*start_args(data, "--emulator-bot", "nobody")) as term:
        code, out, err = await term.finish()
    assert code == 1, err  # the server stops at once, and a script sees the refusal; the error says why
    assert f"error: start --emulator: --emulator-bot nobody: no such bot in {data / 'bots'} (bots: welcome-bot)" in err
    assert "Chatting with" not in out
    assert not (data / MESSENGER_FILE).exists()


async def test_a_bot_on_a_real_page_is_not_taken_over(tmp_path: Path) -> None:
    data = shipped_data(tmp_path)
    # pageId set and no profile to push: the server makes no Graph call for it while it stops.
    real = {"enabled": True, "accessToken": "EAA-a-real-page-token", "appSecret": "a-real-app-secret",
            "pageId": "123456789"}
    write_json(data / MESSENGER_FILE, real)
    async with terminal(*start_args(data)) as term:
        code, _, err = await term.finish()
    assert code == 1, err
    assert "error: start --emulator: bot 'welcome-bot' is connected to a real Page" in err
    assert "chat with another bot (--emulator-bot ID)" in err
    assert "EAA-a-real-page-token" not in err
    assert json.loads((data / MESSENGER_FILE).read_text()) == real


async def test_ctrl_c_ends_a_running_messenger_chat_quietly(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, terminal("messenger", "chat", "--data", str(r.data), "--url", r.server.url,
                                            "--bot", "welcome-bot") as term:
        await term.expect("/restart taps it.)")
        await term.type("hello")
        await term.expect("Welcome Bot: Hi there!")
        await term.ctrl_c()
        code, _, err = await term.finish()
    assert code == 130  # what a shell expects of a command stopped by Ctrl+C
    assert err == "\n", "no traceback: only the line the ^C left open"
