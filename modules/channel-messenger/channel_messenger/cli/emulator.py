"""``botpress-py messenger emulator``: the Graph API emulator in the foreground, until Ctrl+C.

With ``--configure BOT`` it points that bot's channel at itself, and turns it off again on
exit. The same command is ``python -m channel_messenger.cli.emulator``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from typing import Any

from botpress_py.sdk import DataFolder

from ..emulator.demo import DEMO_APP_SECRET, DEMO_PAGE_ID, DEMO_PAGE_NAME, DEMO_PORT, DEMO_TOKEN
from ..emulator.graph import GraphEmulator
from ..emulator.instagram import DEMO_INSTAGRAM_ACCOUNT
from ..emulator.page_profiles import PROFILES_FILE
from .emulator_config import CommandError, configure_for_emulator, unconfigure_emulator


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


def call_line(record: dict[str, Any]) -> str:
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
    elif record.get("batch_size") is not None:  # its calls follow, each on its own line
        what = f"batch request of {record['batch_size']} calls"
    elif body and record["path"].endswith("messenger_profile"):
        what = ", ".join(body.get("fields", body) if record["method"] == "DELETE" else body)
    if error:
        what = f"{what}  {'planned fault' if record.get('fault') else 'refused'}: {error.get('message')}".strip()
    return f"{time.strftime('%H:%M:%S')}  {record['method']} {record['path']}  {status}  {what}".rstrip()


def main(argv: list[str] | None = None) -> int:
    """``python -m channel_messenger.cli.emulator``, with the same options as the ``emulator`` verb."""
    parser = argparse.ArgumentParser(prog="python -m channel_messenger.cli.emulator",
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
    folder = DataFolder(args.data)
    server = args.server.rstrip("/") if args.server else folder.server_url()
    return asyncio.run(_run_emulator(args, pages, server, folder))


async def _run_emulator(args: argparse.Namespace, pages: dict[str, dict[str, Any]], server: str,
                        folder: DataFolder) -> int:
    # The Pages keep their Messenger profile from one run to the next, as on Facebook (page_profiles.py).
    profiles_file = folder.path / PROFILES_FILE if folder.path.is_dir() else None
    emulator = GraphEmulator(pages, app_secret=args.app_secret or None, any_user=True, server_url=server,
                             seed=args.seed, profiles_file=profiles_file)
    first_page = next(iter(pages))
    emulator.instagram.link(first_page, DEMO_INSTAGRAM_ACCOUNT, "emulator_shop")  # to try "instagram": {...}
    if args.fail_rate > 0:
        emulator.add_rule(status=500, code=1200, rate=args.fail_rate, is_transient=True)
    if args.latency > 0:
        emulator.add_rule(passthrough=True, delay=args.latency)
    if not args.quiet:
        emulator.listeners.append(lambda record: print(call_line(record), flush=True))
    configured: str | None = None
    url = ""
    # Whatever ends the run (Ctrl+C, even while it starts, or an error), the emulator stops and the
    # bot it configured is turned off again.
    try:
        try:
            await emulator.start(args.port, args.host)
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
                  "(another emulator running? choose another --port)", file=sys.stderr)
            return 1
        assert emulator.port is not None
        url = _connect_url(args.host, emulator.port)
        page = next(iter(pages.values()))
        lines = [f"Graph API emulator on {url}  (Ctrl+C stops)"]
        lines += [f"  page {pid} \"{p['name']}\"  accessToken {p['token']}" for pid, p in pages.items()]
        lines.append(f"  appSecret {args.app_secret}: signs webhooks posted to {server} (POST /_emulator/send)"
                     if args.app_secret else f"  no --app-secret: webhooks cannot be signed (server {server})")
        lines.append(f"  instagram account {DEMO_INSTAGRAM_ACCOUNT} linked to page {first_page} "
                     "(POST /_emulator/instagram/send)")
        kept = [p for p in emulator.pages.values() if p.profile]
        lines += [f"  page {p.id} has its Messenger profile of the last run ({', '.join(sorted(p.profile))}; "
                  f"kept in {profiles_file})" for p in kept]
        if emulator.profiles_problem:
            print(f"warning: {emulator.profiles_problem}", file=sys.stderr, flush=True)
        if args.configure:
            try:
                path, written = configure_for_emulator(folder, args.configure, url, page["token"],
                                                       args.app_secret or "", force=args.force)
            except CommandError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            configured = args.configure
            lines.append(f"Bot '{configured}' now uses the emulator: {path}")
            lines.append(f"  ({', '.join(written) or 'already set'}; a running server reconnects the bot by "
                         "itself; the channel is turned off again when the emulator stops)")
            lines.append(f"Chat with it:  botpress-py messenger chat --bot {configured}")
        else:
            snippet = json.dumps({"enabled": True, "graphApiUrl": url, "accessToken": page["token"],
                                  "appSecret": args.app_secret or "<the bot's appSecret>"})
            lines.append("Point a bot at it in data/bots/<bot>/config/channel-messenger.json:")
            lines.append(f"  {snippet}")
            lines.append("(or restart with --configure <bot>), then:  botpress-py messenger chat --bot <bot>")
        print("\n".join(lines), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()  # serves until Ctrl+C or SIGTERM
    finally:
        if configured:
            path_off = unconfigure_emulator(folder, configured, url)
            if path_off is not None:
                print(f"Bot '{configured}': Messenger channel turned off again in {path_off}", flush=True)
        await emulator.stop()
    print("emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
