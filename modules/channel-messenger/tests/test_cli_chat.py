"""``botpress-py messenger chat`` with piped input: type, pick by number, /restart, /menu, /quit, EOF."""

from __future__ import annotations

import asyncio
import io
import queue
from pathlib import Path

import pytest
from emulator_testkit import USER, botpress_py, cli_env, rig, run_cli  # noqa: F401  (cli_env: a fixture)

from botpress_py.testing import wait_for

pytestmark = pytest.mark.usefixtures("cli_env")
SETTLE = "0.4"  # seconds of quiet that end a bot turn (default 1): keeps the tests quick

MENU = [{"type": "postback", "title": "Help", "payload": "HELP"},
        {"type": "web_url", "title": "Docs", "url": "https://example.com/docs"}]


def chat_args(r) -> list[str]:
    return ["messenger", "chat", "--data", str(r.data), "--url", r.server.url, "--bot", "welcome-bot", "--user", USER,
            "--settle", SETTLE]


async def test_chat_with_piped_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig(tmp_path, bot_config={"greeting": "Hi {{user_first_name}}!", "persistentMenu": MENU}) as r:
        typed = ["hello", "1", "3", "/menu", "1", "7", "/restart", "/nope", "", "/quit", "never sent"]
        monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(typed) + "\n"))
        code, out, err = await run_cli(capsys, *chat_args(r))
        # What the bot received: a text, a quick-reply tap, postbacks (button, menu, Get Started).
        incoming = [m["payload"] for m in await r.server.storage.messages_for("welcome-bot", "messenger", USER)
                    if m["direction"] == "incoming"]
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:4] == [
        f"Chatting with Welcome Bot (bot welcome-bot, page 100000000000001) as user {USER}, through the emulator "
        f"at {r.emu}.",
        "Type a message; a number picks a choice; /restart taps Get Started; /menu shows the persistent menu; "
        "/react 👍 reacts to the bot's last message; /image URL-or-path sends a photo; /quit leaves.",
        "(Page greeting) Hi {{user_first_name}}!",
        "(This Page has a Get Started button: /restart taps it.)",
    ]
    transcript = "\n".join(lines[4:])
    # hello → greeting and three quick replies; 1 → the tour carousel; 3 → its third postback button.
    assert transcript.startswith("you> hello\nWelcome Bot: Hi there! 😊 Good to see you.\n"
                                 "Welcome Bot: What would you like to do?\n"
                                 "             [1] Take the tour\n"
                                 "             [2] What can you do?\n"
                                 "             [3] About you\n"
                                 "you> 1\n  → Take the tour\n"
                                 "Welcome Bot: Here's the short tour. Swipe through the cards 👉\n"
                                 "Welcome Bot: ┌─ 1/3 ─ Bots are folders\n")
    assert "you> 3\n  → Back to the menu\nWelcome Bot: I can show you around" in transcript
    assert "you> /menu\nMenu:\n  [1] Help\n  [↗] Docs  https://example.com/docs\nyou> 1\n  → Help\n" in transcript
    assert "you> 7\n(no choice 7: pick 1 to 3, or type a message)\n" in transcript
    assert "you> /restart\nWelcome Bot: Welcome! 👋 I'm Welcome Bot, a small demo of botpress-py.\n" \
           "Welcome Bot: …\nWelcome Bot: ┌─ Nice to meet you!\n" in transcript
    assert "you> /nope\n(unknown command /nope)" in transcript
    assert transcript.endswith("you> /quit\nbye")
    assert "never sent" not in transcript
    assert [(p.get("type"), p.get("payload")) for p in incoming] == [
        ("text", None), ("quick_reply", "TOUR"), ("postback", "HELP"), ("postback", "HELP"),
        ("postback", "GET_STARTED")]


async def test_chat_ends_cleanly_at_end_of_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig(tmp_path, bot_config={"getStarted": None}) as r:
        monkeypatch.setattr("sys.stdin", io.StringIO("thanks\n/restart"))  # no newline at the very end
        code, out, err = await run_cli(capsys, *chat_args(r))
    assert (code, err) == (0, "")
    assert "Get Started" not in out.splitlines()[2]
    assert "you> thanks\nWelcome Bot: You're welcome! 🙌" in out
    assert out.endswith("you> /restart\n(this Page has no Get Started button: set getStarted in the bot's "
                        "channel-messenger config)\nbye\n")


class TypedInput(io.StringIO):
    """stdin fed line by line by the test while the chat runs."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: queue.Queue[str] = queue.Queue()

    def type(self, line: str) -> None:
        self.lines.put(line + "\n")

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        return self.lines.get(timeout=30)


async def test_chat_reports_a_server_that_went_away_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig(tmp_path) as r:
        stdin = TypedInput()
        monkeypatch.setattr("sys.stdin", stdin)
        chat = asyncio.create_task(run_cli(capsys, *chat_args(r)))
        stdin.type("hello")
        await r.emulator.wait_for(lambda e: len(e.sent_messages) >= 2, timeout=10)
        url = r.server.url
        await r.server.stop()
        stdin.type("hello again")
        stdin.type("/quit")
        code, out, err = await asyncio.wait_for(chat, 30)
    assert (code, err) == (0, "")
    assert "you> hello\nWelcome Bot: Hi there!" in out
    assert (f"you> hello again\nerror: no botpress-py server answers at {url} any more; start it with "
            "'botpress-py start'\nyou> /quit\nbye\n") in out


async def test_chat_needs_a_running_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with rig(tmp_path) as r:
        args = chat_args(r)
        url = r.server.url
    code, out, err = await run_cli(capsys, *args)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: no botpress-py server answers at {url}: start it with 'botpress-py start'")


async def test_chat_as_a_separate_process(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        code, out, err = await botpress_py(*chat_args(r), stdin=b"hi\n2\n")
    assert code == 0, err
    assert "you> hi\nWelcome Bot: Hi there! 😊 Good to see you." in out
    assert "you> 2\n  → What can you do?\nWelcome Bot: I can show you around" in out
    assert out.endswith("bye\n")


async def test_chat_sends_a_reaction_and_photos_and_shows_them(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "cat.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"a cat" * 100)
    async with rig(tmp_path) as r:
        typed = ["/react 👍", "hello", "/react 👍", f"/image {photo}", "/image", "/image /no/such/file.png", "/quit"]
        monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(typed) + "\n"))
        code, out, err = await run_cli(capsys, *chat_args(r))
        history = await r.server.storage.messages_for("welcome-bot", "messenger", USER)
        incoming = [m for m in history if m["direction"] == "incoming"]
        assert (code, err) == (0, "")
        assert "you> /react 👍\n(nothing to react to yet: the bot has not written)\n" in out
        assert "you> /react 👍\n  (you reacted 👍 to \"What would you like to do?\")\n" in out
        assert f"you> /image {photo}\n  (you sent a photo: {photo})\n" in out
        assert "you> /image\n  (you sent a photo: a sample picture)\n" in out
        assert "error: no file /no/such/file.png: give a URL (https://...) or the path of an image" in out
        assert "(no reply within" not in out, "a reaction or a photo needs no answer"
        # The server got them as Meta delivers them: a reaction to the bot's message, and two photos kept.
        assert [m["type"] for m in incoming] == ["text", "reaction", "image", "image"]
        assert incoming[1]["payload"]["emoji"] == "👍" and incoming[1]["payload"]["mid"].startswith("m_emulated_")
        kept = []
        for image in incoming[2:]:
            url = r.server.url + "/api/v1/bots/welcome-bot/media/" + image["payload"]["media"]["id"]

            async def stored(url: str = url) -> bytes:
                async with r.http.get(url) as response:
                    return await response.read() if response.status == 200 else b""

            kept.append(await wait_for(stored, timeout=15))
        assert kept[0] == photo.read_bytes() and kept[1].startswith(b"\x89PNG"), "the file, then the sample picture"
