"""The channel's admin HTTP API for one bot: notify, inject and handover.

Served under ``/api/v1/bots/<botId>/mod/channel-messenger/``; every route needs the admin
token (``Authorization: Bearer <token>``: 401 without it, 403 with a wrong one).

- ``POST /notify`` ``{"userId", "payload", "tag"?, "bulk"?}``: a proactive message. ``UPDATE`` within 24 h
  of the user's last message, ``MESSAGE_TAG`` with an allowed tag outside it; refused with 422
  otherwise (409 while another app owns the conversation). 202 once stored. ``"bulk": true`` (a
  broadcast) sends it after replies and other notifies of the Page (pacing.py).
- ``POST /inject`` ``{"userId", "text" | "payload", "title"?}``: a message fed to the bot as if
  the user had typed it (or tapped a postback button). 202 once stored.
- ``POST /handover`` ``{"userId", "action": "pass"|"take"|"request"|"release", "targetAppId"?,
  "metadata"?}``: conversation routing through the Graph API. 200 with the new owner.
- ``GET /handover?userId=PSID``: who owns the conversation now, as far as the channel knows.

Bodies are checked field by field: a problem answers 400 ``{"error", "field", "reason"}``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from botpress_py.sdk import STANDARD_PAYLOAD_TYPES, BotContext, IOEvent, ServerContext

from .graph_client import GraphApiError
from .handover import HANDOVER_ACTIONS, Handover
from .incoming import CHANNEL, apply_incoming_flags
from .owner_text import describe, metadata_text, owner_view
from .pages import PageBinding, PageRegistry
from .rendering import RenderError, render_payload
from .window import MESSAGE_TAGS, MessagingWindow, messaging_type_for


class BadBody(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadBody("(body)", "the body must be JSON") from None
    if not isinstance(body, dict):
        raise BadBody("(body)", "the body must be a JSON object")
    return body


def _user_id(body: dict[str, Any]) -> str:
    value = body.get("userId")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadBody("userId", "required: the user's PSID (a string of digits)")
    if not value.strip().isdigit():
        raise BadBody("userId", "must be a Messenger PSID (digits only)")
    return value.strip()


def _unknown(body: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(body) - known)
    if extra:
        raise BadBody(extra[0], f"unknown field; known: {', '.join(sorted(known))}")


class MessengerApi:
    """The handlers, bound to one bot id (the bot's current context is looked up per request)."""

    def __init__(self, bot_id: str, *, server: ServerContext, registry: PageRegistry, handover: Handover,
                 window: MessagingWindow) -> None:
        self.bot_id = bot_id
        self.server = server
        self.registry = registry
        self.handover = handover
        self.window = window

    def add_routes(self, bot: BotContext) -> None:
        bot.router.add_post("/notify", self.notify)
        bot.router.add_post("/inject", self.inject)
        bot.router.add_post("/handover", self.change_thread_owner)
        bot.router.add_get("/handover", self.handover_state)

    def _context(self, request: web.Request) -> tuple[BotContext, PageBinding]:
        self.server.require_admin(request)
        binding = self.registry.by_bot(self.bot_id)
        bot = self.server.get_bot(self.bot_id)
        if binding is None or bot is None:
            raise web.HTTPConflict(
                text=json.dumps({"error": f"channel-messenger is not connected for bot '{self.bot_id}' "
                                          "(see its status in GET /status)"}),
                content_type="application/json")
        return bot, binding

    # -- notify ------------------------------------------------------------------------------
    async def notify(self, request: web.Request) -> web.Response:
        bot, binding = self._context(request)
        try:
            body = await _json_body(request)
            _unknown(body, {"userId", "payload", "tag", "bulk"})
            if not isinstance(body.get("bulk", False), bool):
                raise BadBody("bulk", "must be true or false")
            psid = _user_id(body)
            payload = body.get("payload")
            if not isinstance(payload, dict):
                raise BadBody("payload", "required: an outgoing payload object such as "
                                         "{\"type\": \"text\", \"text\": \"...\"}")
            kind = payload.get("type")
            if kind not in STANDARD_PAYLOAD_TYPES or kind == "handover":
                raise BadBody("payload", f"type {kind!r} is not a payload notify sends (use one of "
                                         f"{', '.join(sorted(STANDARD_PAYLOAD_TYPES - {'handover'}))}; "
                                         "handovers go through POST .../handover)")
            try:
                render_payload(payload, psid)
            except RenderError as exc:
                raise BadBody("payload", str(exc)) from None
            tag = body.get("tag")
            if tag is not None and tag not in MESSAGE_TAGS:
                raise BadBody("tag", f"must be one of {', '.join(MESSAGE_TAGS)}")
        except BadBody as exc:
            return _error(400, f"bad body: {exc}", field=exc.field, reason=exc.reason)

        owner = await self.handover.owners.get(bot, binding.page_id, psid)
        if owner is not None:
            return _error(409, f"not sent: {describe(owner)}; the bot may message the user again once it has "
                               "thread control (POST .../handover with action \"take\")", userId=psid)
        last = await self.window.last_incoming(bot, binding.page_id, psid)
        messaging_type, refusal = messaging_type_for(last, tag)
        if refusal:
            return _error(422, f"not sent: {refusal}", userId=psid, field="tag")
        flags: dict[str, Any] = {"notify": True}
        if body.get("bulk") is True:
            flags["bulk"] = True  # a broadcast: after the Page's replies and notifies (pacing.py)
        if messaging_type == "MESSAGE_TAG":
            flags["tag"] = tag
        if binding.settings.mask_outgoing:
            flags["mask"] = True
        event = IOEvent(type=str(kind), channel=CHANNEL, direction="outgoing", botId=bot.id, target=psid,
                        threadId=binding.page_id, payload=dict(payload), flags=flags)
        try:
            await bot.send([event])
        except ValueError as exc:
            return _error(400, f"bad body: payload: {exc}", field="payload", reason=str(exc))
        return web.json_response({"id": event.id, "userId": psid, "messagingType": messaging_type,
                                  "tag": flags.get("tag")}, status=202)

    # -- inject ------------------------------------------------------------------------------
    async def inject(self, request: web.Request) -> web.Response:
        bot, binding = self._context(request)
        try:
            body = await _json_body(request)
            _unknown(body, {"userId", "text", "payload", "title"})
            psid = _user_id(body)
            text, value = body.get("text"), body.get("payload")
            if (text is None) == (value is None):
                raise BadBody("text", "give exactly one of \"text\" (a message) and \"payload\" (a postback)")
            for name, given in (("text", text), ("payload", value), ("title", body.get("title"))):
                if given is not None and (not isinstance(given, str) or not given.strip()):
                    raise BadBody(name, "must be a non-empty string")
        except BadBody as exc:
            return _error(400, f"bad body: {exc}", field=exc.field, reason=exc.reason)
        if text is not None:
            event = IOEvent(type="text", channel=CHANNEL, direction="incoming", botId=bot.id, target=psid,
                            threadId=binding.page_id, payload={"type": "text", "text": text}, preview=text)
        else:
            title = body.get("title") or value
            event = IOEvent(type="postback", channel=CHANNEL, direction="incoming", botId=bot.id, target=psid,
                            threadId=binding.page_id, payload={"type": "postback", "payload": value, "title": title},
                            preview=title)
        event.dedupeKey = f"inject:{event.id}"
        event.flags["injected"] = True
        apply_incoming_flags(binding.settings, [event])
        await bot.receive([event])
        return web.json_response({"id": event.id, "userId": psid}, status=202)

    # -- handover ----------------------------------------------------------------------------
    async def change_thread_owner(self, request: web.Request) -> web.Response:
        bot, binding = self._context(request)
        try:
            body = await _json_body(request)
            _unknown(body, {"userId", "action", "targetAppId", "metadata"})
            psid = _user_id(body)
            action = body.get("action")
            if action not in HANDOVER_ACTIONS:
                raise BadBody("action", f"required: one of {', '.join(HANDOVER_ACTIONS)}")
            target = body.get("targetAppId")
            if target is not None:
                if action != "pass":
                    raise BadBody("targetAppId", "only for action \"pass\"")
                if isinstance(target, int) and not isinstance(target, bool):
                    target = str(target)
                if not isinstance(target, str) or not (target == "inbox" or target.isdigit()):
                    raise BadBody("targetAppId", "\"inbox\" (the Page Inbox) or an app id (digits)")
            try:
                metadata = metadata_text(body.get("metadata"))
            except ValueError as exc:
                raise BadBody("metadata", str(exc)) from None
        except BadBody as exc:
            return _error(400, f"bad body: {exc}", field=exc.field, reason=exc.reason)
        try:
            owner = await self.handover.thread_control(bot, binding, psid, action, target=target, metadata=metadata,
                                                       reason="handover API")
        except GraphApiError as exc:
            status = 409 if exc.permanent else 502
            return _error(status, f"{action} thread control refused by Messenger: {exc}", userId=psid,
                          code=exc.code, subcode=exc.subcode)
        except TimeoutError:
            return _error(504, f"{action} thread control: the Graph API did not answer in time", userId=psid)
        return web.json_response({"userId": psid, "action": action, "owner": owner_view(owner)})

    async def handover_state(self, request: web.Request) -> web.Response:
        bot, binding = self._context(request)
        try:
            psid = _user_id({"userId": request.query.get("userId")})
        except BadBody as exc:
            return _error(400, f"bad query: {exc}", field=exc.field, reason=exc.reason)
        owner = await self.handover.owners.get(bot, binding.page_id, psid)
        return web.json_response({"userId": psid, "owner": owner_view(owner)})

