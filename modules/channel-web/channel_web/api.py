"""The REST API of one bot's web chat, under ``/api/v1/bots/<botId>/mod/channel-web/``.

| Route | Token | |
|---|---|---|
| ``GET /botInfo`` | no | name, avatar, description, info page settings |
| ``POST /visitors`` | no | a new visitor: ``{userId, token}`` (limited per client address) |
| ``POST /conversations`` | yes | a new conversation of the visitor (reset) |
| ``GET /conversations/{id}/messages`` | yes | the visitor's history in that conversation, in pages |
| ``POST /messages`` | yes | the visitor says something; 200 once stored |
| ``GET /socket`` | first message | WebSocket: replies and typing pushed to the visitor |

Every refusal is JSON ``{"error", "field"?, "hint"?}`` with a 4xx status; bad input never
reaches storage.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import TYPE_CHECKING, Any, NoReturn

from aiohttp import web

from botpress_py.sdk import BotContext

from .payloads import BadInput, client_message_id, conversation_id, incoming_event, incoming_payload, public_message

if TYPE_CHECKING:
    from .channel import WebChannel

HISTORY_MAX_PAGE = 200


def fail(status: type[web.HTTPException], error: str, **extra: Any) -> NoReturn:
    headers = extra.pop("headers", None)
    raise status(text=json.dumps({"error": error, **extra}), content_type="application/json", headers=headers)


def bad_input(exc: BadInput) -> NoReturn:
    fail(web.HTTPBadRequest, exc.message, field=exc.field)


def settings(bot: BotContext) -> dict[str, Any]:
    """The bot's config with nested defaults filled (a bot file may give part of an object)."""
    config = bot.config
    info = {"enabled": False, "description": "", **(config.get("infoPage") or {})}
    limits = {"enabled": True, "burst": 10, "perMinute": 30, "newVisitorsPerMinute": 20,
              **(config.get("rateLimit") or {})}
    return {**config, "infoPage": info, "rateLimit": limits}


class BotApi:
    """The handlers of one mounted bot (a fresh one per mount, with that mount's config)."""

    def __init__(self, channel: WebChannel, bot: BotContext) -> None:
        self.channel = channel
        self.bot = bot
        self.config = settings(bot)

    def add_routes(self) -> None:
        router = self.bot.router
        router.add_get("/botInfo", self.bot_info)
        router.add_post("/visitors", self.new_visitor)
        router.add_post("/conversations", self.new_conversation)
        router.add_get("/conversations/{conversationId}/messages", self.history)
        router.add_post("/messages", self.send_message)
        router.add_get("/socket", self.channel.socket_handler(self.bot))

    # -- helpers --------------------------------------------------------------------------------
    def visitor(self, request: web.Request) -> str:
        """The user id the request's bearer token proves, or 401."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            fail(web.HTTPUnauthorized, "missing visitor token", headers={"WWW-Authenticate": "Bearer"},
                 hint="send 'Authorization: Bearer <token>' with the token from POST .../visitors")
        user_id = self.channel.tokens.verify(self.bot.id, token.strip())
        if user_id is None:
            self.channel.log_throttle.log(self.bot.logger, 30, "bad-token", "web chat: refused a request with an "
                                          "invalid visitor token (bot %s)", self.bot.id)
            fail(web.HTTPUnauthorized, "invalid visitor token", headers={"WWW-Authenticate": "Bearer"},
                 hint="get a new identity with POST .../visitors")
        return user_id

    def limit(self, key: str, burst: float, per_minute: float) -> None:
        limits = self.config["rateLimit"]
        if not limits["enabled"]:
            return
        wait = self.channel.limiter.allow(f"{self.bot.id}:{key}", int(burst), per_minute)
        if wait:
            retry = max(1, math.ceil(wait))
            fail(web.HTTPTooManyRequests, "too many requests, slow down", retryAfter=retry,
                 headers={"Retry-After": str(retry)})

    def limit_visitor(self, user_id: str) -> None:
        limits = self.config["rateLimit"]
        self.limit(f"user:{user_id}", limits["burst"], limits["perMinute"])

    @staticmethod
    async def json_body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            fail(web.HTTPBadRequest, "the body is not valid JSON", hint="send Content-Type: application/json")
        except RecursionError:
            fail(web.HTTPBadRequest, "the body is nested too deeply")
        if not isinstance(body, dict):
            fail(web.HTTPBadRequest, "the body must be a JSON object")
        return body

    # -- handlers -------------------------------------------------------------------------------
    async def bot_info(self, request: web.Request) -> web.Response:
        bot_config = self.bot.bot_config
        details = dict(bot_config.get("details") or {})
        info = self.config["infoPage"]
        return web.json_response({
            "id": self.bot.id,
            "name": self.bot.name,
            "description": info["description"] or bot_config.get("description", ""),
            "avatarUrl": details.get("avatarUrl", ""),
            "details": details,
            "languages": [bot_config.get("defaultLanguage", "en"), *bot_config.get("languages", [])],
            "showBotInfoPage": bool(info["enabled"] or self.config.get("showBotInfoPage")),
            "maxMessageLength": self.config["maxMessageLength"],
            "maxMessagesHistory": self.config["maxMessagesHistory"],
            "extraStylesheet": self.config.get("extraStylesheet", ""),
        }, headers={"Cache-Control": "no-cache"})

    async def new_visitor(self, request: web.Request) -> web.Response:
        per_minute = self.config["rateLimit"]["newVisitorsPerMinute"]
        self.limit(f"address:{request.remote}", per_minute, per_minute)
        user_id, token = self.channel.tokens.new_visitor(self.bot.id)
        return web.json_response({"userId": user_id, "token": token}, status=201)

    async def new_conversation(self, request: web.Request) -> web.Response:
        user_id = self.visitor(request)
        self.limit_visitor(user_id)
        # Conversations live inside the visitor's own space (storage keys include the user id):
        # an id is only a name, and guessing another visitor's opens nothing of theirs.
        return web.json_response({"conversationId": "c" + secrets.token_urlsafe(12)}, status=201)

    async def history(self, request: web.Request) -> web.Response:
        user_id = self.visitor(request)
        try:
            conversation = conversation_id(request.match_info["conversationId"])
            after = _position(request.query.get("after"), "after")
            before = _position(request.query.get("before"), "before")
            limit = _position(request.query.get("limit"), "limit")
        except BadInput as exc:
            bad_input(exc)
        if limit is None:
            limit = self.config["maxMessagesHistory"]
        if not 1 <= limit <= HISTORY_MAX_PAGE:
            fail(web.HTTPBadRequest, f"must be between 1 and {HISTORY_MAX_PAGE}", field="limit")
        # One more than asked: tells the browser whether there is more to page through.
        rows = await self.bot.users.history(user_id, "web", thread_id=conversation, after=after, before=before,
                                            limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit] if after is not None else rows[-limit:]
        messages = [m for row in rows if (m := public_message(row, row.get("seq"))) is not None]
        cursor = rows[-1]["seq"] if rows else after
        return web.json_response({"conversationId": conversation, "messages": messages, "more": more,
                                  "first": rows[0]["seq"] if rows else None, "cursor": cursor})

    async def send_message(self, request: web.Request) -> web.Response:
        user_id = self.visitor(request)
        body = await self.json_body(request)
        try:
            conversation = conversation_id(body.get("conversationId"))
            client_id = client_message_id(body.get("clientMessageId"))
            payload, preview = incoming_payload(body.get("payload"), self.config["maxMessageLength"])
        except BadInput as exc:
            bad_input(exc)
        self.limit_visitor(user_id)
        event = incoming_event(self.bot.id, user_id, conversation, payload, preview, client_id)
        try:
            accepted = await self.bot.receive([event])
        except RuntimeError:
            fail(web.HTTPServiceUnavailable, "the server is stopping, send again in a moment",
                 headers={"Retry-After": "5"})
        except Exception:
            # Not stored, so not acknowledged: the browser keeps the message and sends it again.
            self.bot.logger.exception("web chat: could not store a visitor's message")
            fail(web.HTTPServiceUnavailable, "the message could not be stored, send again in a moment",
                 headers={"Retry-After": "2"})
        return web.json_response({"id": event.id, "conversationId": conversation, "duplicate": not accepted,
                                  "clientMessageId": client_id})


def _position(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise BadInput(name, "must be a whole number")
    return int(raw)
