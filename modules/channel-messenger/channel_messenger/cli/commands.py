"""``botpress-py messenger emulator | simulate | chat | doctor`` and ``botpress-py start --emulator``: the options.

- ``emulator`` runs the Graph API emulator in the foreground (Ctrl+C stops it); with
  ``--configure BOT`` it also points that bot's channel at itself, and turns it off again on exit.
- ``simulate`` sends one message (or postback, or quick-reply tap) to a bot, signed like
  Facebook signs it, and prints the bot's replies as read back from the emulator.
- ``chat`` is the same, interactively; it reads stdin, so it can be scripted with a pipe.
- ``doctor`` checks a bot's setup as Meta sees it (cli/doctor.py), ``--fix`` repairs what it can.
- ``start --emulator`` runs the server, the emulator and a chat with one bot in one terminal.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..emulator.demo import DEMO_PORT, DEMO_USER
from .emulator import add_emulator_arguments, cmd_emulator


# simulate and chat (and ``requests``) are imported when one runs, not whenever ``botpress-py``
# builds its parser: every command line starts faster, and a Ctrl+C that comes while they load
# ends as quietly as one that comes later.
def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import cmd_simulate as run

    return run(args)


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import cmd_chat as run

    return run(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import cmd_doctor as run

    return run(args)


def register(subparsers: Any) -> None:
    """Add the ``messenger`` verb and its sub-verbs to ``botpress-py``."""
    messenger = subparsers.add_parser(
        "messenger", help="try and test Messenger bots without Facebook (emulator, simulate, chat)",
        description="Try and test a bot's Messenger channel on this machine: a local Graph API emulator, "
                    "one-shot messages and an interactive chat. See docs/channels/messenger.md.")
    verbs = messenger.add_subparsers(dest="messenger_command", metavar="COMMAND")
    messenger.set_defaults(func=lambda args: _usage(messenger))

    emulator = verbs.add_parser(
        "emulator", help="run a local fake of the Graph API until Ctrl+C",
        description="Run a local fake of the Graph API (Send API, Messenger profile, user profiles) with Meta's "
                    "answers, limits and errors, in the foreground until Ctrl+C. Point a bot's graphApiUrl at it "
                    "(or use --configure BOT). Control API: GET /_emulator, GET /_emulator/calls, "
                    "POST /_emulator/faults, POST /_emulator/send.")
    add_emulator_arguments(emulator)
    emulator.set_defaults(func=cmd_emulator)

    simulate = verbs.add_parser(
        "simulate", help="send one message to a bot and print its replies",
        description="Post a correctly signed webhook for the bot's Page to the running server, as Facebook "
                    "would, and print the bot's replies as the emulator received them. Needs the server and "
                    "the emulator running, and the bot's graphApiUrl pointing at the emulator.")
    _common(simulate)
    simulate.add_argument("text", nargs="?", help="what the user types (with --quick-reply/--postback: the title)")
    simulate.add_argument("--postback", metavar="PAYLOAD", help="tap a postback button with this payload")
    simulate.add_argument("--quick-reply", metavar="PAYLOAD", help="tap a quick reply with this payload")
    simulate.add_argument("--json", action="store_true", help="print the replies as Send API bodies in JSON")
    simulate.set_defaults(func=cmd_simulate)

    chat = verbs.add_parser(
        "chat", help="chat with a bot in the terminal, through the emulator",
        description="Chat with a bot as a Messenger user, through the emulator: type a message, a number to "
                    "pick a quick reply or button, /restart to tap Get Started, /menu for the persistent menu, "
                    "/quit to leave. Reads stdin, so input can be piped.")
    _common(chat)
    chat.set_defaults(func=cmd_chat)

    doctor = verbs.add_parser(
        "doctor", help="check a bot's Messenger setup (webhook, token, subscription, version, profile)",
        description="Check what Meta sees of a bot's Messenger setup, each check with its fix: externalUrl is https "
                    "and answers Meta's verification, the access token is valid and the Page's, the Page is "
                    "subscribed to the webhook fields the channel reads, appSecret is set, graphApiVersion is not "
                    "retired or about to be, the Messenger profile on Meta equals the config. Exit status 1 when a "
                    "check fails. Works against the emulator too (the bot's graphApiUrl).")
    _doctor_arguments(doctor)
    doctor.set_defaults(func=cmd_doctor)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bot", required=True, help="bot id")
    parser.add_argument("--user", default=DEMO_USER, metavar="PSID", help=f"the user's PSID (default {DEMO_USER})")
    parser.add_argument("--url", help="server URL (default $BP_URL, else from data/global/botpress.config.json)")
    parser.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    parser.add_argument("--app-secret", help="sign with this secret instead of the bot's appSecret")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long to wait for the first reply (default 10)")
    parser.add_argument("--settle", type=float, default=None, metavar="SECONDS",
                        help="how long the bot must stay quiet before its turn is over (default 1, or more "
                             "with messageDelay)")


def add_start_options(parser: argparse.ArgumentParser) -> None:
    """``botpress-py start --emulator [--emulator-bot ID] [--emulator-port N]`` (cli/one_terminal.py)."""
    group = parser.add_argument_group(
        "Messenger emulator (channel-messenger)",
        "Chat with a bot over Messenger in this terminal, with no Facebook account: the server, a local Graph API "
        "emulator and the chat run together; /quit, end of input or Ctrl+C stops all three.")
    group.add_argument("--emulator", action="store_true",
                       help="run the Messenger emulator and chat with a bot in this terminal (the bot's "
                            "channel-messenger config points at the emulator for this run only)")
    group.add_argument("--emulator-bot", metavar="ID",
                       help="the bot to chat with (default: welcome-bot, or the only bot)")
    group.add_argument("--emulator-port", type=int, default=DEMO_PORT, metavar="N",
                       help=f"the emulator's port (default {DEMO_PORT}, or any free one when it is taken; "
                            "0: any free port)")


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--bot", help="bot id")
    which.add_argument("--all", action="store_true", help="every bot with channel-messenger enabled")
    parser.add_argument("--fix", action="store_true",
                        help="subscribe the Page to the missing webhook fields and push the config's Messenger "
                             "profile when it differs")
    parser.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    parser.add_argument("--external-url", metavar="URL",
                        help="the public URL to test (default: httpServer.externalUrl, as the server computes it)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="per request (default 10)")
