"""A terminal chat with a bot, as the person typing sees it: the banner, what each typed line asks for
(a message, a numbered choice, ``/restart``, ``/menu``, ``/quit``), the bot's replies as they arrive.

Shared by ``botpress-py messenger chat`` (which reaches the server and the emulator over HTTP)
and ``botpress-py start --emulator`` (which runs them in its own process): only the way a turn
is sent and followed differs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..emulator.replies import ReplyCollector
from .terminal_render import TurnPrinter

CHAT_HELP = ("Type a message; a number picks a choice; /restart taps Get Started; /menu shows the persistent "
             "menu; /react 👍 reacts to the bot's last message; /image URL-or-path sends a photo; /quit leaves.")
QUIT_COMMANDS = ("/quit", "/exit", "/q")
QUIT = "/quit"  # what ``ChatScreen.interpret`` answers for a line that ends the chat


@dataclass
class ChatTarget:
    """Who the user talks to, and as whom: the bot, its Page at the emulator, the user's PSID."""

    server: str
    bot_id: str
    name: str
    emulator: str
    page_id: str
    psid: str
    settle: float
    get_started: str = ""
    greeting: str = ""
    menu: list[dict[str, Any]] = field(default_factory=list)
    version: str = "v27.0"
    app_secret: str = ""
    app_secret_source: str = ""


def terminal_width(out: TextIO) -> int | None:
    """Wrap to the terminal's width; never when the output goes to a file or a pipe."""
    return shutil.get_terminal_size().columns if out.isatty() else None


def settle_for(message_delay: Any) -> float:
    """Seconds of quiet that end a bot turn: 1, or more when the bot paces its messages (messageDelay, ms)."""
    return max(1.0, float(message_delay) / 1000 + 0.5) if isinstance(message_delay, int | float) else 1.0


def _gist(message: dict[str, Any]) -> str:
    """A few words for a message of the bot: its text, a card's title, or the kind of attachment."""
    if isinstance(message.get("text"), str):
        return message["text"]
    attachment = message.get("attachment") if isinstance(message.get("attachment"), dict) else {}
    payload = attachment.get("payload") if isinstance(attachment.get("payload"), dict) else {}
    elements = payload.get("elements") if isinstance(payload.get("elements"), list) else []
    if elements and isinstance(elements[0], dict) and elements[0].get("title"):
        return str(elements[0]["title"])
    return str(payload.get("text") or f"[{attachment.get('type', 'message')}]")


class ChatScreen:
    """Prints the chat and interprets typed lines; ``interactive`` when a person types at a terminal
    (a piped line is echoed after ``you>`` instead, so a transcript reads like the chat)."""

    def __init__(self, target: ChatTarget, out: TextIO, *, interactive: bool) -> None:
        self.target = target
        self.out = out
        self.interactive = interactive
        self.printer = TurnPrinter(target.name, width=terminal_width(out))
        self.last_bot_message: tuple[str, str] | None = None  # (mid, text) of the bot's last message

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def banner(self, *extra: str) -> None:
        t = self.target
        lines = [f"Chatting with {t.name} (bot {t.bot_id}, page {t.page_id}) as user {t.psid}, through the "
                 f"emulator at {t.emulator}.", CHAT_HELP]
        if t.greeting:
            lines.append(f"(Page greeting) {t.greeting}")
        if t.get_started:
            lines.append("(This Page has a Get Started button: /restart taps it.)")
        self.say("\n".join([*lines, *extra]))

    def show_call(self, call: dict[str, Any]) -> None:
        """One Send API call of the bot's turn, as it arrives."""
        for line in self.printer.lines_for(call):
            self.say(line)
        message = (call.get("json") or {}).get("message")
        mid = (call.get("answer") or {}).get("message_id")
        if call.get("accepted") and isinstance(message, dict) and mid:
            self.last_bot_message = (str(mid), _gist(message))

    def interpret(self, line: str) -> dict[str, Any] | str | None:
        """A typed line: the keyword arguments of a turn to send, ``QUIT``, or None when it is handled here."""
        line = line.strip()
        if not line:
            return None
        if not self.interactive:
            self.say(f"you> {line}")
        if line in QUIT_COMMANDS:
            return QUIT
        request = self._request(line)
        if isinstance(request, str):
            self.say(request)
            return None
        self.printer.new_turn()
        return request

    def turn_over(self, collector: ReplyCollector, timeout: float, *, expect_reply: bool = True) -> None:
        if collector.timed_out and expect_reply:
            self.say(f"(no reply within {timeout:g} s)")

    def end_of_input(self) -> None:
        if self.interactive:
            self.say("")  # the line Ctrl+D left open

    def _request(self, line: str) -> dict[str, Any] | str:
        """What a typed line asks for: the keyword arguments of a turn, or a line to print instead."""
        target, printer = self.target, self.printer
        if line == "/help":
            return CHAT_HELP
        if line == "/restart":
            if not target.get_started:
                return "(this Page has no Get Started button: set getStarted in the bot's channel-messenger config)"
            return {"postback": target.get_started, "title": "Get Started"}
        if line == "/menu":
            if not target.menu:
                return "(this Page has no persistent menu)"
            printer.new_turn()
            lines = ["Menu:"]
            for item in target.menu:
                if item.get("type") == "postback":
                    lines.append("  " + printer.add_choice("postback", str(item.get("title")),
                                                           str(item.get("payload"))))
                else:
                    lines.append(f"  [↗] {item.get('title')}  {item.get('url', '')}")
            return "\n".join(lines)
        command, _, argument = line.partition(" ")
        if command == "/react":
            if self.last_bot_message is None:
                return "(nothing to react to yet: the bot has not written)"
            emoji = argument.strip() or "👍"
            self.say(f"  (you reacted {emoji} to \"{self.last_bot_message[1][:60]}\")")
            return {"react": emoji, "mid": self.last_bot_message[0], "expect_reply": False}
        if command == "/image":
            self.say(f"  (you sent a photo: {argument.strip() or 'a sample picture'})")
            return {"image": argument.strip(), "expect_reply": False}
        if line.isdigit() and printer.choices:
            number = int(line)
            if not 1 <= number <= len(printer.choices):
                return f"(no choice {number}: pick 1 to {len(printer.choices)}, or type a message)"
            choice = printer.choices[number - 1]
            self.say(f"  → {choice.title}")
            if choice.kind == "quick_reply":
                return {"quick_reply": choice.payload, "title": choice.title}
            return {"postback": choice.payload, "title": choice.title}
        if line.startswith("/"):
            return f"(unknown command {line}) {CHAT_HELP}"
        return {"text": line}
