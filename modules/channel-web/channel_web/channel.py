"""The web channel of one server: visitor tokens, rate limits, sockets, and what each hook does."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from botpress_py.sdk import BotContext, IOEvent, LogThrottle, ServerContext

from .api import BotApi, settings
from .page import chat_page, unknown_bot_page
from .payloads import CHANNEL, BadInput, conversation_id, public_message
from .ratelimit import RateLimiter
from .sockets import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_GOING_AWAY,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE,
    SocketHub,
)
from .visitors import VisitorTokens

AUTH_TIMEOUT = 10.0  # seconds a new socket has to send its token
CATCH_UP_LIMIT = 200  # messages sent on (re)connect; the browser pages through the rest over REST
MAX_TYPING_MS = 5_000  # a typing indicator holds the next reply at most this long
HEARTBEAT = 25.0  # ping period: proxies close idle connections, and a dead peer is noticed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebChannel:
    def __init__(self) -> None:
        self.server: ServerContext | None = None
        self.tokens = VisitorTokens(b"")
        self.limiter = RateLimiter()
        self.hub = SocketHub()
        # Lines a visitor can trigger (a bad token) at most once a minute each, per server.
        self.log_throttle = LogThrottle(60)

    # -- server --------------------------------------------------------------------------------
    def start(self, server: ServerContext) -> None:
        self.server = server
        self.tokens = VisitorTokens(server.secret("visitor-tokens"))
        server.site_router.add_get("/s/{botId}", self.page)

    async def stopping(self) -> None:
        await self.hub.close_all(CLOSE_GOING_AWAY, "server stopping")

    async def page(self, request: web.Request) -> web.Response:
        assert self.server is not None
        bot_id = request.match_info["botId"]
        if self.server.bot_state(bot_id) is None:
            return unknown_bot_page(bot_id)
        bot = self.server.get_bot(bot_id)
        if bot is None:
            # Disabled, in error, or the web chat is off for it: the page says the bot is
            # unavailable and waits for it to come back.
            return chat_page(bot_id, bot_id)
        return chat_page(bot_id, bot.name, str(settings(bot).get("extraStylesheet") or ""))

    # -- bots ------------------------------------------------------------------------------------
    def mount(self, bot: BotContext) -> None:
        if not bot.config.get("enabled", True):
            bot.set_status("off", "disabled in config/channel-web.json (enabled: false)")
            return
        BotApi(self, bot).add_routes()
        bot.set_status("on")

    async def unmount(self, bot: BotContext) -> None:
        await self.hub.close_bot(bot.id, CLOSE_UNAVAILABLE, "bot unavailable")

    async def erase_user(self, bot: BotContext, user_id: str, channel: str) -> None:
        if channel != CHANNEL:
            return
        self.limiter.forget(f"{bot.id}:user:{user_id}")
        await self.hub.close_visitor((bot.id, user_id), CLOSE_UNAUTHORIZED, "visitor erased")

    # -- delivery ---------------------------------------------------------------------------------
    async def send(self, event: IOEvent, bot: BotContext) -> bool | None:
        """Deliver a "web" event (module.json declares the channel: no other reaches here)."""
        key = (bot.id, event.target)
        if event.payload.get("type") == "typing":
            value = event.payload.get("value")
            millis = min(MAX_TYPING_MS, max(0, int(value))) if isinstance(value, int | float) else 1000
            if self.hub.connected(key):
                await self.hub.push(key, {"type": "typing", "conversationId": event.threadId, "value": millis},
                                    remember=False)
                await self._pause(key, millis / 1000)
            return True
        message = public_message(event.to_dict())
        if message is not None:
            # Delivered whether or not the visitor is connected: a visitor away now reads it from
            # history when the chat opens again.
            await self.hub.push(key, {"type": "message", "message": message})
        return True

    async def _pause(self, key: tuple[str, str], seconds: float) -> None:
        """The typing delay, cut short when the visitor's sockets close (unmount, leaving)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while self.hub.connected(key):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(0.1, left))

    # -- sockets ----------------------------------------------------------------------------------
    def socket_handler(self, bot: BotContext) -> Handler:
        async def socket(request: web.Request) -> web.StreamResponse:
            if self.hub.closing:
                raise web.HTTPServiceUnavailable(text='{"error": "the server is stopping"}',
                                                 content_type="application/json")
            ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=16 * 1024)
            await ws.prepare(request)
            hello = await self._authenticate(ws, bot)
            if hello is None:
                return ws
            user_id, conversation, after = hello
            key = (bot.id, user_id)
            # Registered before reading history: a reply delivered from now on is pushed, one
            # delivered before is in history or in the hub's recent deliveries.
            await self.hub.add(key, ws)
            try:
                await self._catch_up(ws, bot, key, conversation, after)
                async for message in ws:
                    if message.type == WSMsgType.TEXT and message.data == '{"type":"ping"}':
                        await ws.send_str('{"type":"pong"}')
            finally:
                self.hub.remove(key, ws)
            return ws

        return socket

    async def _authenticate(self, ws: web.WebSocketResponse, bot: BotContext) -> tuple[str, str, int] | None:
        """The first message: ``{"type": "auth", "token", "conversationId", "after"}``."""
        try:
            message = await ws.receive(timeout=AUTH_TIMEOUT)
        except TimeoutError:
            await ws.close(code=CLOSE_AUTH_TIMEOUT, message=b"no auth message")
            return None
        if message.type != WSMsgType.TEXT:
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"expected an auth message")
            return None
        try:
            hello = json.loads(message.data)
            if not isinstance(hello, dict) or hello.get("type") != "auth":
                raise BadInput("type", "the first message must be {\"type\": \"auth\", ...}")
            user_id = self.tokens.verify(bot.id, hello.get("token"))
            if user_id is None:
                await ws.close(code=CLOSE_UNAUTHORIZED, message=b"invalid visitor token")
                return None
            conversation = conversation_id(hello.get("conversationId"))
            after = hello.get("after") or 0
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                raise BadInput("after", "must be the seq of the last message seen, or 0")
        except (ValueError, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, BadInput) else "the auth message is not JSON"
            await ws.close(code=CLOSE_UNAUTHORIZED, message=reason.encode()[:120])
            return None
        return user_id, conversation, after

    async def _not_yet_in_history(self, bot: BotContext, key: tuple[str, str], conversation: str,
                                  read: set[str]) -> list[dict[str, Any]]:
        """Recent deliveries the history does not hold yet (their sent mark is still being written)."""
        recent = [m for m in self.hub.recent(key, conversation) if m["id"] not in read]
        if not recent:
            return []
        # Those already in history are at or before the browser's cursor: it has them.
        latest = await bot.users.history(key[1], CHANNEL, thread_id=conversation, limit=CATCH_UP_LIMIT)
        stored = {row["id"] for row in latest}
        return [m for m in recent if m["id"] not in stored]

    async def _catch_up(self, ws: web.WebSocketResponse, bot: BotContext, key: tuple[str, str],
                        conversation: str, after: int) -> None:
        rows = await bot.users.history(key[1], CHANNEL, thread_id=conversation, after=after,
                                       limit=CATCH_UP_LIMIT + 1)
        more = len(rows) > CATCH_UP_LIMIT
        rows = rows[:CATCH_UP_LIMIT]
        messages = [m for row in rows if (m := public_message(row, row.get("seq"))) is not None]
        if not more:
            messages += await self._not_yet_in_history(bot, key, conversation, {row["id"] for row in rows})
        cursor = rows[-1]["seq"] if rows else after
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_json({"type": "ready", "conversationId": conversation, "messages": messages,
                                "cursor": cursor, "more": more})
