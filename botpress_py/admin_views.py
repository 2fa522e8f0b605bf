"""Admin API routes the admin page reads besides the bot controls of admin.py: a bot's config
problems, its conversations and their history, and the live event feed (a WebSocket).

Every route takes the admin token or an admin page session (admin_auth.py). History is shown
as storage holds it: a masked message stays masked, nothing is decrypted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from .admin import BOT_ID_HINT, json_error
from .bots import BotRegistry, valid_bot_id
from .event_feed import EventFeed, FeedListener, TooManyListeners
from .storage import Storage

log = logging.getLogger("botpress_py.admin")

CONVERSATIONS_DEFAULT = 50
CONVERSATIONS_MAX = 200
MESSAGES_DEFAULT = 50
MESSAGES_MAX = 500
LIVE_PING_SECONDS = 25.0
# A live view re-checks its session this often: a logout or an expiry closes it.
LIVE_SESSION_CHECK_SECONDS = 15.0
LIVE_CLOSE_SESSION_ENDED = 4401
_MAX_FIELD = 200  # ids and channel names in a query string


class AdminViews:
    def __init__(self, registry: BotRegistry, storage: Storage, feed: EventFeed,
                 check: Callable[[web.Request], None], session_alive: Callable[[web.Request], bool]) -> None:
        self.registry = registry
        self.storage = storage
        self.feed = feed
        self.check = check
        # False once the session a live view was opened with has ended (logout, expiry); always
        # True for a bearer token, which has no end.
        self._session_alive = session_alive
        self._sockets: set[web.WebSocketResponse] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/admin/bots/{botId}/problems", self.problems)
        app.router.add_get("/api/v1/admin/bots/{botId}/conversations", self.conversations)
        app.router.add_get("/api/v1/admin/bots/{botId}/messages", self.messages)
        app.router.add_get("/api/v1/admin/live", self.live)

    def _known_bot(self, bot_id: str) -> str:
        if not valid_bot_id(bot_id):
            raise json_error(web.HTTPBadRequest, "invalid bot id", hint=BOT_ID_HINT)
        if bot_id not in self.registry.records and not self.registry.bot_file(bot_id).exists():
            raise json_error(web.HTTPNotFound, f"bot {bot_id!r} not found")
        return bot_id

    async def problems(self, request: web.Request) -> web.Response:
        """Every problem in the bot's files (what ``botpress-py check`` says about it), without
        touching the running bot."""
        self.check(request)
        bot_id = self._known_bot(request.match_info["botId"])
        found = await self.registry.check_bot(bot_id)
        return web.json_response({"botId": bot_id, "problems": [
            {"file": p.file, "pointer": p.pointer, "message": p.message, "hint": p.hint} for p in found]})

    async def conversations(self, request: web.Request) -> web.Response:
        """One page of a bot's conversations, most recent first: ?channel=&limit=&cursor=."""
        self.check(request)
        bot_id = self._known_bot(request.match_info["botId"])
        channel = _text_param(request, "channel")
        limit = _int_param(request, "limit", CONVERSATIONS_DEFAULT, CONVERSATIONS_MAX)
        after = _decode_cursor(request.query.get("cursor"))
        rows = await self.storage.conversations(bot_id, channel=channel, limit=limit + 1, after=after)
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = _encode_cursor(rows[-1]) if more and rows else None
        return web.json_response({"botId": bot_id, "conversations": rows, "nextCursor": cursor})

    async def messages(self, request: web.Request) -> web.Response:
        """A conversation's history, newest page first: ?channel=&user=&thread=&before=&limit=."""
        self.check(request)
        bot_id = self._known_bot(request.match_info["botId"])
        channel, user = _text_param(request, "channel"), _text_param(request, "user")
        if channel is None or user is None:
            raise json_error(web.HTTPBadRequest, "channel and user are required",
                             hint="?channel=<channel>&user=<user id>, as the conversation list gives them")
        thread = _text_param(request, "thread")
        limit = _int_param(request, "limit", MESSAGES_DEFAULT, MESSAGES_MAX)
        before = _int_param(request, "before", 0, 2**62) or None
        rows = await self.storage.messages_for(bot_id, channel, user, limit + 1, thread_id=thread, before_seq=before)
        more = len(rows) > limit
        rows = rows[-limit:] if more else rows
        return web.json_response({"botId": bot_id, "channel": channel, "userId": user, "threadId": thread,
                                  "messages": [_message(m) for m in rows],
                                  "earlier": rows[0]["seq"] if more and rows else None})

    # -- live ---------------------------------------------------------------------------------------
    async def live(self, request: web.Request) -> web.StreamResponse:
        """A WebSocket of events as they happen: ?bot= (or a ``{"type": "filter", "bot"}`` message)."""
        self.check(request)
        bot_id = request.query.get("bot") or None
        if bot_id is not None:
            self._known_bot(bot_id)
        try:
            listener = self.feed.subscribe(bot_id)
        except TooManyListeners as exc:
            raise json_error(web.HTTPServiceUnavailable, str(exc), hint="close a live view and try again") from None
        ws = web.WebSocketResponse(heartbeat=LIVE_PING_SECONDS, max_msg_size=4096)
        try:
            await ws.prepare(request)
            self._sockets.add(ws)
            await ws.send_json({"type": "ready", "bot": bot_id})
            sender = asyncio.create_task(self._send(ws, listener, request), name="admin-live-sender")
            try:
                await self._receive(ws, listener)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await sender
        finally:
            self.feed.unsubscribe(listener)
            self._sockets.discard(ws)
        return ws

    async def _send(self, ws: web.WebSocketResponse, listener: FeedListener, request: web.Request) -> None:
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while not ws.closed:
            try:
                item = await asyncio.wait_for(listener.queue.get(), LIVE_SESSION_CHECK_SECONDS)
            except TimeoutError:
                item = None
            if loop.time() - checked >= LIVE_SESSION_CHECK_SECONDS:  # not once per event: a signature check
                checked = loop.time()
                if not self._session_alive(request):
                    await ws.close(code=LIVE_CLOSE_SESSION_ENDED, message=b"admin session ended")
                    return
            dropped = listener.take_dropped()
            if dropped:
                await ws.send_json({"type": "dropped", "count": dropped})
            if item is not None:
                await ws.send_str(item)

    async def _receive(self, ws: web.WebSocketResponse, listener: FeedListener) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                data = None
            bot_id = data.get("bot") if isinstance(data, dict) and data.get("type") == "filter" else ""
            if bot_id is not None and (not isinstance(bot_id, str) or not valid_bot_id(bot_id)):
                await ws.send_json({"type": "error", "error": "expected {\"type\": \"filter\", \"bot\": <bot id or "
                                                              "null>}"})
                continue
            listener.bot_id = bot_id
            await ws.send_json({"type": "filter", "bot": bot_id})

    async def close_all(self) -> None:
        """The server stops: close every live view (a browser reconnects to the next server)."""
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server stopping")


def _message(row: dict[str, Any]) -> dict[str, Any]:
    """A history row as stored (masked rows hold masked text), without channel internals."""
    flags = row.get("flags") or {}
    return {"seq": row.get("seq"), "id": row.get("id"), "direction": row.get("direction"), "type": row.get("type"),
            "preview": row.get("preview", ""), "payload": row.get("payload", {}), "createdOn": row.get("createdOn"),
            "masked": bool(flags.get("mask")), "channelMessageId": row.get("channelMessageId")}


def _storable(value: str) -> bool:
    """Text both backends take as a parameter: PostgreSQL refuses NUL, and neither binds a lone surrogate."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text_param(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > _MAX_FIELD:
        raise json_error(web.HTTPBadRequest, f"?{name} is too long", hint=f"at most {_MAX_FIELD} characters")
    if not _storable(value):
        raise json_error(web.HTTPBadRequest, f"?{name} holds a character no id has (NUL or a lone surrogate)")
    return value


def _int_param(request: web.Request, name: str, default: int, most: int) -> int:
    value = request.query.get(name)
    if not value:
        return default
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise json_error(web.HTTPBadRequest, f"invalid ?{name} {value[:50]!r}", hint=f"a whole number from 1 to {most}")
    return int(value)


def _encode_cursor(row: dict[str, Any]) -> str:
    key = [row["lastEventAt"], row["channel"], row["userId"], row["threadId"] or ""]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _decode_cursor(text: str | None) -> tuple[int, str, str, str] | None:
    if not text:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if not (isinstance(key, list) and len(key) == 4 and type(key[0]) is int and 0 <= key[0] < 2**62
            and all(isinstance(k, str) and len(k) <= _MAX_FIELD and _storable(k) for k in key[1:])):
        raise json_error(web.HTTPBadRequest, "invalid ?cursor", hint="pass back the nextCursor of the last page")
    return key[0], key[1], key[2], key[3]
