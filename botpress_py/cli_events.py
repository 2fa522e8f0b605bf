"""``botpress-py events failed|retry|discard``: failed events, through the running server's admin API.

With no server answering, the same operations run on the storage directly (what a retry puts
back to pending is then processed at the next start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bots import valid_bot_id
from .cli_common import admin_arguments, admin_target, data_dir_from, refusal
from .wording import plural

if TYPE_CHECKING:
    from .failed_events import FailedEvents
    from .storage import OutboxRow

_PAGE = 500
_ERROR_CHARS = 120


def add_events_parser(sub: Any) -> None:
    events = sub.add_parser("events", help="list, retry or discard failed events",
                            description="Failed events: incoming events whose processing failed after every "
                                        "retry, and outgoing events that could not be delivered. Talks to the "
                                        "running server's admin API (token from --token, $BP_ADMIN_TOKEN, "
                                        "admin.token or <data>/secrets/admin.token); with no server running, "
                                        "works on the storage directly.")
    verbs = events.add_subparsers(dest="verb", metavar="VERB", required=True)
    failed = verbs.add_parser("failed", help="list failed events",
                              description="List failed events, incoming ones first, oldest first.")
    failed.add_argument("--bot", help="only this bot's")
    failed.add_argument("--direction", choices=["incoming", "outgoing"], help="only this direction")
    failed.add_argument("--limit", type=int, default=100, help="list at most this many (default 100)")
    failed.add_argument("--json", action="store_true", help="print the events as JSON")
    admin_arguments(failed)
    failed.set_defaults(func=cmd_events)
    for verb, what in (("retry", "put failed events back to pending and process or send them again"),
                       ("discard", "mark failed events discarded (kept until storage.retention.failed)")):
        parser = verbs.add_parser(verb, help=what, description=f"{what[0].upper()}{what[1:]}: the events named "
                                                                 "by id, or with --bot ID --all every failed "
                                                                 "event of a bot.")
        parser.add_argument("ids", nargs="*", metavar="ID", help="event ids (from 'botpress-py events failed')")
        parser.add_argument("--bot", help="with --all: the bot whose failed events to take")
        parser.add_argument("--all", action="store_true", help="every failed event of --bot")
        parser.add_argument("--direction", choices=["incoming", "outgoing"], help="with --all: only this direction")
        admin_arguments(parser)
        parser.set_defaults(func=cmd_events)


def cmd_events(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    data_dir = data_dir_from(args)
    url, token = admin_target(args, data_dir)
    try:
        return _Online(url, token).run(args)
    except _Offline:
        pass
    print(f"(no server at {url}: working on the storage of {data_dir} directly)", file=sys.stderr)
    try:
        return asyncio.run(_run_offline(data_dir, args))
    except Exception as exc:
        print(f"error: cannot open the storage: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.bot is not None and not valid_bot_id(args.bot):
        return f"invalid bot id {args.bot!r} (ids match ^[a-z0-9][a-z0-9_-]{{0,49}}$)"
    if args.verb == "failed":
        return None if args.limit >= 1 else "--limit must be at least 1"
    if args.all and args.ids:
        return "give event ids or --bot ID --all, not both"
    if args.all and not args.bot:
        return "--all needs --bot ID"
    if not args.all and not args.ids:
        return f"name the events to {args.verb} (ids from 'botpress-py events failed') or use --bot ID --all"
    if args.ids and (args.bot or args.direction):
        return "--bot and --direction go with --all; ids name their events already"
    return None


class _Offline(Exception):
    pass


class _Online:
    """The verbs over the admin API; raises _Offline when nothing answers at ``url``."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, params: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        import requests

        try:
            response = requests.request(method, f"{self.url}{path}", params=params, headers=self.headers,
                                        timeout=60)
        except requests.ConnectionError:
            raise _Offline() from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text}
        return response.status_code, body if isinstance(body, dict) else {"error": str(body)}

    def run(self, args: argparse.Namespace) -> int:
        if args.verb == "failed":
            events: list[dict[str, Any]] = []
            cursor: str | None = None
            while len(events) < args.limit:
                params = {"limit": str(min(_PAGE, args.limit - len(events))), "bot": args.bot,
                          "direction": args.direction, "cursor": cursor}
                status, body = self.call("GET", "/api/v1/admin/events/failed",
                                         {k: v for k, v in params.items() if v})
                if status != 200:
                    return _http_error(self.url, status, body)
                events += body["events"]
                cursor = body.get("nextCursor")
                if not cursor:
                    break
            return _print_failed(events, args.json, more=bool(cursor))
        if args.all:
            return self._bulk(args)
        code = 0
        for event_id in args.ids:
            status, body = self.call("POST", f"/api/v1/admin/events/{_quote(event_id)}/{args.verb}")
            if status != 200:
                code = 1
                print(f"error: {event_id}: {body.get('error')}", file=sys.stderr)
                continue
            print(_done_line(args.verb, body))
        return code

    def _bulk(self, args: argparse.Namespace) -> int:
        total = skipped = 0
        params = {"direction": args.direction} if args.direction else {}
        while True:
            status, body = self.call("POST", f"/api/v1/admin/bots/{args.bot}/events/failed/{args.verb}", params)
            if status != 200:
                return _http_error(self.url, status, body)
            done = int(body.get("retried" if args.verb == "retry" else "discarded", 0))
            total += done
            skipped = int(body.get("skipped", 0))
            if not done or not body.get("remaining"):
                break
        print(f"{_past(args.verb)} {plural(total, 'failed event')} of bot {args.bot}")
        if skipped:
            print(f"({plural(skipped, 'masked outgoing event')} cannot be sent again: discard them)", file=sys.stderr)
        return 0


async def _run_offline(data_dir: Path, args: argparse.Namespace) -> int:
    from .failed_events import FailedCounts, FailedEvents
    from .storage import open_storage

    storage = open_storage(data_dir, dict(os.environ))
    await storage.open()
    try:
        tools = FailedEvents(storage, _StoredOnly(), FailedCounts())
        tools.counts.replace(await storage.failed_counts())
        if args.verb == "failed":
            return await _list_offline(tools, args)
        if args.all:
            action = tools.retry_bot if args.verb == "retry" else tools.discard_bot
            total = 0
            while done := (await action(args.bot, args.direction))["retried" if args.verb == "retry" else
                                                                       "discarded"]:
                total += done
            print(f"{_past(args.verb)} {plural(total, 'failed event')} of bot {args.bot}"
                  + (" (processed or sent at the next start)" if args.verb == "retry" else ""))
            return 0
        return await _each_offline(tools, args)
    finally:
        await storage.close()


async def _list_offline(tools: FailedEvents, args: argparse.Namespace) -> int:
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(events) < args.limit:
        page, cursor = await tools.list(bot_id=args.bot, direction=args.direction, cursor=cursor,
                                        limit=min(_PAGE, args.limit - len(events)))
        events += page
        if not cursor:
            break
    return _print_failed(events, args.json, more=bool(cursor))


async def _each_offline(tools: FailedEvents, args: argparse.Namespace) -> int:
    from .failed_events import EventNotFailed, EventNotFound, EventNotRetryable

    action: Callable[[str], Awaitable[dict[str, Any]]] = tools.retry if args.verb == "retry" else tools.discard
    code = 0
    for event_id in args.ids:
        try:
            print(_done_line(args.verb, await action(event_id)))
        except EventNotFound:
            code = 1
            print(f"error: {event_id}: no event with this id is stored", file=sys.stderr)
        except (EventNotFailed, EventNotRetryable) as exc:
            code = 1
            print(f"error: {event_id}: {exc}", file=sys.stderr)
    return code


class _StoredOnly:
    """No server runs: retried events are pending in storage, and the next start takes them up."""

    def requeue_incoming(self, bot_ids: Iterable[str]) -> None:
        pass

    def requeue_outgoing(self, rows: list[OutboxRow]) -> None:
        pass


def _print_failed(events: list[dict[str, Any]], as_json: bool, *, more: bool) -> int:
    if as_json:
        print(json.dumps(events, indent=2))
    else:
        for event in events:
            when = datetime.fromtimestamp(event["failedAt"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") \
                if event.get("failedAt") else "-"
            error = (event.get("error") or "").replace("\n", " ")
            if len(error) > _ERROR_CHARS:
                error = error[: _ERROR_CHARS - 1] + "…"
            print(f"{event['id']}  {event['direction']:<8} {event['botId']:<20} user {event['userId']:<20} "
                  f"{plural(event['attempts'], 'attempt')}  {when}  {error}")
        print(plural(len(events), "failed event") + (" shown" if events else ""), file=sys.stderr)
    if more:
        print("(more failed events: raise --limit, or narrow with --bot / --direction)", file=sys.stderr)
    return 0


def _done_line(verb: str, body: dict[str, Any]) -> str:
    then = "pending again" if verb == "retry" else "discarded"
    return f"{body['id']}: {body['direction']} event of bot {body['botId']} {then}"


def _past(verb: str) -> str:
    return "retried" if verb == "retry" else "discarded"


def _quote(event_id: str) -> str:
    from urllib.parse import quote

    return quote(event_id, safe="")


def _http_error(url: str, status: int, body: dict[str, Any]) -> int:
    print(refusal(url, status, body), file=sys.stderr)
    return 1
