"""``botpress-py messenger chat``: chat with a bot in the terminal, through a running server and emulator.

Synchronous (``requests``): the command has no event loop to share. It reads stdin, so it can
be scripted with a pipe; end of input, ``/quit`` and Ctrl+C end it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .chat_screen import QUIT, ChatScreen
from .emulator_config import CommandError
from .simulate import open_conversation


def _read_line(stdin: TextIO, interactive: bool) -> str | None:
    if interactive:
        try:
            return input("you> ")
        except EOFError:
            return None
    line = stdin.readline()
    return None if line == "" else line.rstrip("\r\n")


def cmd_chat(args: argparse.Namespace) -> int:
    stdin, out = sys.stdin, sys.stdout
    interactive = stdin.isatty() and out.isatty()
    try:
        conversation = open_conversation(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with conversation:
        screen = ChatScreen(conversation.target, out, interactive=interactive)
        screen.banner()
        while True:
            line = _read_line(stdin, interactive)
            if line is None:
                screen.end_of_input()
                break
            request = screen.interpret(line)
            if request == QUIT:
                break
            if not isinstance(request, dict):
                continue
            try:
                collector = conversation.turn(on_call=screen.show_call, **request)
            except CommandError as exc:
                screen.say(f"error: {exc}")
                continue
            screen.turn_over(collector, conversation.timeout, expect_reply=request.get("expect_reply", True))
    screen.say("bye")
    return 0
