"""``botpress-py messenger emulator | simulate | chat``: try and test a Messenger bot without Facebook.

- ``emulator`` runs the Graph API emulator in the foreground (Ctrl+C stops it); with
  ``--configure BOT`` it also points that bot's channel at itself, and turns it off again on exit.
- ``simulate`` sends one message (or postback, or quick-reply tap) to a bot, signed like
  Facebook signs it, and prints the bot's replies as read back from the emulator.
- ``chat`` is the same, interactively; it reads stdin, so it can be scripted with a pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .conversation import Conversation
from .graph_emulator import GraphEmulator
from .local_config import (
    DEMO_APP_SECRET,
    DEMO_PAGE_ID,
    DEMO_PAGE_NAME,
    DEMO_PORT,
    DEMO_TOKEN,
    DEMO_USER,
    CommandError,
    configure_for_emulator,
    data_dir_from,
    server_url,
    unconfigure_emulator,
)
from .replies import ReplyCollector
from .terminal_render import TurnPrinter


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


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=DEMO_PORT, help=f"TCP port (default {DEMO_PORT}; 0: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--server", metavar="URL",
                        help="botpress-py server that POST /_emulator/send posts to (default from the data folder)")
    parser.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    parser.add_argument("--app-secret", default=DEMO_APP_SECRET,
                        help=f"the App's secret: signs webhooks and checks appsecret_proof (default {DEMO_APP_SECRET})")
    parser.add_argument("--page", action="append", default=[], metavar="ID",
                        help=f"a Page the emulator knows, with its --token (repeatable; ID:TOKEN[:NAME] also works; "
                             f"default: page {DEMO_PAGE_ID} with token {DEMO_TOKEN})")
    parser.add_argument("--token", action="append", default=[], metavar="T",
                        help="the Page Access Token of the --page in the same position")
    parser.add_argument("--configure", metavar="BOT",
                        help="point this bot's channel at the emulator (writes data/bots/BOT/config/"
                             "channel-messenger.json; turned off again when the emulator stops)")
    parser.add_argument("--force", action="store_true", help="with --configure: replace a real Page's token too")
    parser.add_argument("--fail-rate", type=float, default=0.0, metavar="R",
                        help="answer this share of Graph calls (0-1) with a transient error (HTTP 500, code 1200)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="delay every Graph answer")
    parser.add_argument("--seed", type=int, help="random seed for --fail-rate")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per Graph call")


def parse_pages(pages: list[str], tokens: list[str]) -> dict[str, dict[str, Any]]:
    """``--page ID --token T`` pairs (in order) or ``--page ID:TOKEN[:NAME]``; ValueError when malformed."""
    if not pages and not tokens:
        return {DEMO_PAGE_ID: {"token": DEMO_TOKEN, "name": DEMO_PAGE_NAME}}
    found: dict[str, dict[str, Any]] = {}
    remaining = list(tokens)
    for spec in pages:
        page_id, _, rest = spec.partition(":")
        token, _, name = rest.partition(":")
        if not token and remaining:
            token = remaining.pop(0)
        if not page_id.isdigit() or not token:
            raise ValueError(f"--page {spec!r}: expected a numeric Page id with its --token, or ID:TOKEN[:NAME]")
        found[page_id] = {"token": token, "name": name or f"Page {page_id}"}
    if remaining:
        raise ValueError(f"{len(remaining)} --token without a --page")
    return found


def _connect_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}"


def _call_line(record: dict[str, Any]) -> str:
    """One line per Graph call for the emulator's terminal."""
    body = record.get("json") if isinstance(record.get("json"), dict) else {}
    error = record.get("error")
    status = "200" if record.get("accepted") else str((error or {}).get("status", "-"))
    what = ""
    if "sender_action" in body:
        what = f"→ {body.get('recipient', {}).get('id')}  {body['sender_action']}"
    elif "message" in body:
        message = body["message"] if isinstance(body["message"], dict) else {}
        if "text" in message:
            text = str(message["text"]).replace("\n", " ")
            text = text if len(text) <= 60 else text[:59] + "…"
            what = f"text \"{text}\"" + (f" +{len(message['quick_replies'])} quick replies"
                                            if message.get("quick_replies") else "")
        elif isinstance(message.get("attachment"), dict):
            attachment = message["attachment"]
            what = str(attachment.get("type")) + (f" {attachment.get('payload', {}).get('template_type')}"
                                                  if attachment.get("type") == "template" else "")
        what = f"→ {body.get('recipient', {}).get('id')}  {what}"
    elif body and record["path"].endswith("messenger_profile"):
        what = ", ".join(body.get("fields", body) if record["method"] == "DELETE" else body)
    if error:
        what = f"{what}  {'planned fault' if record.get('fault') else 'refused'}: {error.get('message')}".strip()
    return f"{time.strftime('%H:%M:%S')}  {record['method']} {record['path']}  {status}  {what}".rstrip()


def emulator_main(argv: list[str] | None = None) -> int:
    """``python -m channel_messenger.graph_emulator``, with the same options as the ``emulator`` verb."""
    parser = argparse.ArgumentParser(prog="python -m channel_messenger.graph_emulator",
                                     description="A local fake of the Graph API for the Messenger channel.")
    add_emulator_arguments(parser)
    args = parser.parse_args(argv)
    try:
        parse_pages(args.page, args.token)
    except ValueError as exc:
        parser.error(str(exc))
    return cmd_emulator(args)


def cmd_emulator(args: argparse.Namespace) -> int:
    try:
        pages = parse_pages(args.page, args.token)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not 0.0 <= args.fail_rate <= 1.0:
        print("error: --fail-rate must be between 0 and 1", file=sys.stderr)
        return 2
    env = dict(os.environ)
    data_dir = data_dir_from(args.data, env)
    try:
        server = args.server.rstrip("/") if args.server else server_url(data_dir, env)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(_run_emulator(args, pages, server, data_dir))


async def _run_emulator(args: argparse.Namespace, pages: dict[str, dict[str, Any]], server: str,
                        data_dir: Path) -> int:
    emulator = GraphEmulator(pages, app_secret=args.app_secret or None, any_user=True, server_url=server,
                             seed=args.seed)
    if args.fail_rate > 0:
        emulator.add_rule(status=500, code=1200, rate=args.fail_rate, is_transient=True)
    if args.latency > 0:
        emulator.add_rule(passthrough=True, delay=args.latency)
    if not args.quiet:
        emulator.listeners.append(lambda record: print(_call_line(record), flush=True))
    try:
        await emulator.start(args.port, args.host)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
              "(another emulator running? choose another --port)", file=sys.stderr)
        await emulator.stop()
        return 1
    assert emulator.port is not None
    url = _connect_url(args.host, emulator.port)
    page = next(iter(pages.values()))
    lines = [f"Graph API emulator on {url}  (Ctrl+C stops)"]
    lines += [f"  page {pid} \"{p['name']}\"  accessToken {p['token']}" for pid, p in pages.items()]
    lines.append(f"  appSecret {args.app_secret}: signs webhooks posted to {server} (POST /_emulator/send)"
                 if args.app_secret else f"  no --app-secret: webhooks cannot be signed (server {server})")
    stop = asyncio.Event()
    configured: str | None = None
    if args.configure:
        try:
            path, written = configure_for_emulator(data_dir, args.configure, url, page["token"],
                                                   args.app_secret or "", force=args.force)
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            await emulator.stop()
            return 1
        configured = args.configure
        lines.append(f"Bot '{configured}' now uses the emulator: {path}")
        lines.append(f"  ({', '.join(written) or 'already set'}; a running server reconnects the bot by itself; "
                     "the channel is turned off again when the emulator stops)")
        lines.append(f"Chat with it:  botpress-py messenger chat --bot {configured}")
    else:
        snippet = json.dumps({"enabled": True, "graphApiUrl": url, "accessToken": page["token"],
                              "appSecret": args.app_secret or "<the bot's appSecret>"})
        lines.append("Point a bot at it in data/bots/<bot>/config/channel-messenger.json:")
        lines.append(f"  {snippet}")
        lines.append("(or restart with --configure <bot>), then:  botpress-py messenger chat --bot <bot>")
    print("\n".join(lines), flush=True)
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()  # serves until Ctrl+C or SIGTERM
    finally:
        if configured:
            path_off = unconfigure_emulator(data_dir, configured, url)
            if path_off is not None:
                print(f"Bot '{configured}': Messenger channel turned off again in {path_off}", flush=True)
        await emulator.stop()
    print("emulator stopped", flush=True)
    return 0


# -- simulate and chat ------------------------------------------------------------------------------
def _open(args: argparse.Namespace) -> Conversation:
    env = dict(os.environ)
    return Conversation.open(data_dir_from(args.data, env), args.bot, env=env, url=args.url, psid=args.user,
                             app_secret=args.app_secret, timeout=args.timeout, settle=args.settle)


def _width(out: TextIO) -> int | None:
    """Wrap to the terminal's width; never when the output goes to a file or a pipe."""
    return shutil.get_terminal_size().columns if out.isatty() else None


def _printer_for(printer: TurnPrinter, out: TextIO) -> Callable[[dict[str, Any]], None]:
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
        with _open(args) as conversation:
            out = sys.stdout
            printer = TurnPrinter(conversation.target.name, show_payloads=True, width=_width(out))
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
            collector = conversation.turn(on_call=None if args.json else _printer_for(printer, out), **kwargs)
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


CHAT_HELP = ("Type a message; a number picks a choice; /restart taps Get Started; /menu shows the persistent "
             "menu; /quit leaves.")


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
        conversation = _open(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with conversation:
        t = conversation.target
        printer = TurnPrinter(t.name, width=_width(out))
        show = _printer_for(printer, out)
        print(f"Chatting with {t.name} (bot {t.bot_id}, page {t.page_id}) as user {t.psid}, "
              f"through the emulator at {t.emulator}.", file=out)
        print(CHAT_HELP, file=out)
        if t.greeting:
            print(f"(Page greeting) {t.greeting}", file=out)
        if t.get_started:
            print("(This Page has a Get Started button: /restart taps it.)", file=out)
        out.flush()
        while True:
            line = _read_line(stdin, interactive)
            if line is None:
                if interactive:
                    print(file=out)
                break
            line = line.strip()
            if not line:
                continue
            if not interactive:
                print(f"you> {line}", file=out, flush=True)
            if line in ("/quit", "/exit", "/q"):
                break
            request = _chat_request(line, printer, t, out)
            if isinstance(request, str):
                print(request, file=out, flush=True)
                continue
            printer.new_turn()
            try:
                collector: ReplyCollector = conversation.turn(on_call=show, **request)
            except CommandError as exc:
                print(f"error: {exc}", file=out, flush=True)
                continue
            if collector.timed_out:
                print(f"(no reply within {conversation.timeout:g} s)", file=out, flush=True)
    print("bye", file=out, flush=True)
    return 0


def _chat_request(line: str, printer: TurnPrinter, target: Any, out: TextIO) -> dict[str, Any] | str:
    """What a typed line asks for: the keyword arguments of a turn, or a line to print instead."""
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
                lines.append("  " + printer.add_choice("postback", str(item.get("title")), str(item.get("payload"))))
            else:
                lines.append(f"  [↗] {item.get('title')}  {item.get('url', '')}")
        return "\n".join(lines)
    if line.isdigit() and printer.choices:
        number = int(line)
        if not 1 <= number <= len(printer.choices):
            return f"(no choice {number}: pick 1 to {len(printer.choices)}, or type a message)"
        choice = printer.choices[number - 1]
        print(f"  → {choice.title}", file=out, flush=True)
        if choice.kind == "quick_reply":
            return {"quick_reply": choice.payload, "title": choice.title}
        return {"postback": choice.payload, "title": choice.title}
    if line.startswith("/"):
        return f"(unknown command {line}) {CHAT_HELP}"
    return {"text": line}
