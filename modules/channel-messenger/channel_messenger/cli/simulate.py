"""``botpress-py messenger simulate``: one message to a bot, signed as Facebook signs it, and its replies."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from botpress_py.sdk import DataFolder

from .chat_screen import terminal_width
from .conversation import Conversation
from .emulator_config import CommandError
from .terminal_render import TurnPrinter


def open_conversation(args: argparse.Namespace) -> Conversation:
    """The conversation ``simulate`` and ``chat`` hold with ``--bot`` as ``--user`` (CommandError if it cannot)."""
    return Conversation.open(DataFolder(args.data), args.bot, url=args.url, psid=args.user,
                             app_secret=args.app_secret, timeout=args.timeout, settle=args.settle)


def _shown_with(printer: TurnPrinter, out: TextIO) -> Callable[[dict[str, Any]], None]:
    def show(call: dict[str, Any]) -> None:
        for line in printer.lines_for(call):
            print(line, file=out, flush=True)

    return show


def cmd_simulate(args: argparse.Namespace) -> int:
    if sum(x is not None for x in (args.postback, args.quick_reply)) > 1:
        print("error: give --postback or --quick-reply, not both", file=sys.stderr)
        return 2
    if args.postback is None and args.quick_reply is None and not args.text:
        print("error: say something: a text, --postback PAYLOAD or --quick-reply PAYLOAD", file=sys.stderr)
        return 2
    try:
        with open_conversation(args) as conversation:
            out = sys.stdout
            printer = TurnPrinter(conversation.target.name, show_payloads=True, width=terminal_width(out))
            if args.postback is not None:
                what = f"postback {args.postback}"
                kwargs: dict[str, Any] = {"postback": args.postback, "title": args.text}
                shown = f"[tapped {args.text or args.postback}]  (postback {args.postback})"
            elif args.quick_reply is not None:
                what = f"quick reply {args.quick_reply}"
                kwargs = {"quick_reply": args.quick_reply, "title": args.text}
                shown = f"{args.text or args.quick_reply}  (quick reply {args.quick_reply})"
            else:
                what, kwargs, shown = repr(args.text), {"text": args.text}, args.text
            if not args.json:
                print(f"you: {shown}", flush=True)
            collector = conversation.turn(on_call=None if args.json else _shown_with(printer, out), **kwargs)
            if args.json:
                print(json.dumps({"bot": args.bot, "page": conversation.target.page_id, "psid": args.user,
                                  "replies": collector.messages,
                                  "refused": [c.get("error") for c in collector.refused]}, indent=2,
                                 ensure_ascii=False))
            if collector.timed_out:
                raise CommandError(conversation.no_reply_message(what))
            if collector.refused:
                raise CommandError(f"the emulator refused {len(collector.refused)} of the bot's sends as Meta "
                                   "would (see above): the bot's channel sent something over Messenger's limits")
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
