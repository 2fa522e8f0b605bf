"""A local stand-in for the Graph API parts the Messenger channel uses.

Runs as a small aiohttp server: point a bot's ``graphApiUrl`` at ``emulator.url`` and it
behaves like Meta's Graph API for Page identity (``GET /me``), the Send API, the Messenger
Profile API and user profiles, with Meta's error shapes and limits, so a bot can be tried
(and tested) without Facebook. Faults can be planned (``fail_next``, ``add_rule``) to see
how a channel copes with outages, rate limits and bad tokens.

    emulator = GraphEmulator(pages={"1001": {"token": "EAA-page-token", "name": "My Page"}})
    await emulator.start()          # emulator.url == "http://127.0.0.1:<port>"
    ...
    await emulator.stop()

Every request is recorded in ``emulator.calls`` as ``{method, path, query, json, accepted, time}``
(``time`` from ``time.monotonic()``, ``accepted`` false for answers with an error).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .webhook import signature_headers

_VERSION = r"v[0-9]+\.[0-9]+"
PROFILE_FIELDS = ("greeting", "get_started", "persistent_menu", "ice_breakers", "whitelisted_domains")
SENDER_ACTIONS = ("typing_on", "typing_off", "mark_seen")
MESSAGING_TYPES = ("RESPONSE", "UPDATE", "MESSAGE_TAG", "UTILITY")


def _units(text: str) -> int:
    """Characters as Messenger's clients count them (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Fault:
    """A planned error answer: Meta's error body with ``code``, or a stall / a dropped connection."""

    status: int = 500
    code: int | None = 1200
    message: str = "Temporary send message failure. Please try again later."
    subcode: int | None = None
    error_type: str = "OAuthException"
    is_transient: bool | None = None
    delay: float = 0.0  # seconds to stall before answering (trips a client timeout)
    disconnect: bool = False  # close the connection without an answer
    path: str | None = None  # regex searched in the request path; None matches every path
    method: str | None = None
    when: Callable[[Any], bool] | None = None  # predicate on the request's JSON body
    remaining: int | None = None  # answers left for a rule; None: until removed

    def matches(self, method: str, path: str, body: Any) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.path is not None and re.search(self.path, path) is None:
            return False
        return self.when is None or bool(self.when(body))


class GraphError(Exception):
    """Raised inside handlers; becomes Meta's error body."""

    def __init__(self, status: int, code: int, message: str, *, subcode: int | None = None,
                 error_type: str = "OAuthException") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.subcode, self.error_type = status, code, message, subcode, error_type


@dataclass
class _Page:
    id: str
    token: str
    name: str
    app_secret: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    profile_calls: deque[float] = field(default_factory=deque)


class GraphEmulator:
    """A fake Graph API server. ``pages``: ``{page_id: {"token", "name", "app_secret"?}}``.

    ``app_secret`` (for all pages, or per page) makes the emulator check ``appsecret_proof``
    like a Meta App with "Require App Secret" on. ``users``: ``{psid: profile dict}`` for
    ``GET /{psid}``. ``profile_rate_limit`` is ``(calls, seconds)`` per Page for the profile API.
    """

    def __init__(
        self,
        pages: dict[str, dict[str, Any]] | None = None,
        *,
        app_secret: str | None = None,
        users: dict[str, dict[str, Any]] | None = None,
        profile_rate_limit: tuple[int, float] | None = (10, 600.0),
    ) -> None:
        self.app_secret = app_secret
        self.pages: dict[str, _Page] = {}
        for page_id, spec in (pages or {}).items():
            self.add_page(page_id, spec["token"], spec.get("name", f"Page {page_id}"), spec.get("app_secret"))
        self.users: dict[str, dict[str, Any]] = dict(users or {})
        self.profile_rate_limit = profile_rate_limit
        self.calls: list[dict[str, Any]] = []
        self._faults: deque[Fault] = deque()
        self._rules: list[Fault] = []
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.host = "127.0.0.1"

    # -- setup --------------------------------------------------------------------------------
    def add_page(self, page_id: str, token: str, name: str = "", app_secret: str | None = None) -> None:
        self.pages[str(page_id)] = _Page(str(page_id), token, name or f"Page {page_id}", app_secret)

    @property
    def url(self) -> str:
        """Base URL to use as a bot's ``graphApiUrl``."""
        if self.port is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self.port}"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=30 * 1024 * 1024)
        app.router.add_get("/_emulator/calls", self._list_calls)
        app.router.add_route("*", r"/{version:" + _VERSION + r"}/{tail:.*}", self._dispatch)
        return app

    async def _list_calls(self, request: web.Request) -> web.Response:
        """What the emulator received, for a look from outside the process (tokens hidden)."""
        shown = [{**c, "query": {k: ("***" if k in ("access_token", "appsecret_proof") else v)
                                 for k, v in c["query"].items()}} for c in self.calls]
        return web.json_response({"calls": shown, "profiles": {p.id: p.profile for p in self.pages.values()}})

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        self.host = host
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the bound port of port=0
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GraphEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults -------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, *, status: int = 500, code: int | None = 1200, **kwargs: Any) -> None:
        """The next ``n`` matching requests get this error (``path``, ``method``, ``when`` narrow the match).

        ``when`` is a predicate on the JSON body, e.g. ``lambda b: "message" in b`` for messages only.
        """
        for _ in range(n):
            self._faults.append(Fault(status=status, code=code, **kwargs))

    def add_rule(self, *, status: int = 500, code: int | None = 1200, times: int | None = None,
                 **kwargs: Any) -> Fault:
        """Every matching request gets this error (``times`` answers, or until ``remove_rule``)."""
        rule = Fault(status=status, code=code, remaining=times, **kwargs)
        self._rules.append(rule)
        return rule

    def remove_rule(self, rule: Fault) -> None:
        if rule in self._rules:
            self._rules.remove(rule)

    def clear_faults(self) -> None:
        self._faults.clear()
        self._rules.clear()

    def _take_fault(self, method: str, path: str, body: Any) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method, path, body):
                self._faults.remove(fault)
                return fault
        for rule in self._rules:
            if rule.matches(method, path, body):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                return rule
        return None

    # -- inspection ---------------------------------------------------------------------------
    def calls_to(self, path_regex: str, method: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.calls if re.search(path_regex, c["path"]) and (method is None or c["method"] == method)]

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Bodies accepted by the Send API (messages and sender actions), in order."""
        return [c["json"] for c in self.calls if c.get("accepted") and c["path"].endswith("/messages")]

    @property
    def sent_messages(self) -> list[dict[str, Any]]:
        """Accepted Send API bodies that carry a message (sender actions left out)."""
        return [b for b in self.sent if "message" in b]

    async def wait_for(self, predicate: Callable[[GraphEmulator], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate(emulator)`` is truthy (checked after every request)."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                value = predicate(self)
                if value:
                    return value
                await self._changed.wait()

    async def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` messages were accepted; returns them all."""
        await self.wait_for(lambda e: len(e.sent_messages) >= count, timeout)
        return self.sent_messages

    # -- helpers for driving a bot ------------------------------------------------------------
    @staticmethod
    def webhook_body(page_id: str, events: list[dict[str, Any]], *, standby: bool = False) -> dict[str, Any]:
        return {"object": "page", "entry": [{"id": page_id, "time": int(time.time() * 1000),
                                             "standby" if standby else "messaging": events}]}

    @staticmethod
    def user_message(page_id: str, psid: str, text: str, mid: str | None = None) -> dict[str, Any]:
        """A messaging event as Meta sends it when ``psid`` writes ``text`` to the Page."""
        now = int(time.time() * 1000)
        return {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": now,
                "message": {"mid": mid or f"m_{psid}_{now}_{hashlib.sha1(text.encode()).hexdigest()[:8]}",
                            "text": text}}

    @staticmethod
    def signed(body: dict[str, Any] | bytes, app_secret: str) -> tuple[bytes, dict[str, str]]:
        """(raw body, headers) of a webhook delivery signed like Meta does."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return raw, {"Content-Type": "application/json", **signature_headers(app_secret, raw)}

    # -- request handling ---------------------------------------------------------------------
    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"].strip("/")
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
        query = dict(request.query)
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            query.update({k: str(v) for k, v in form.items()})
        record: dict[str, Any] = {"method": request.method, "path": f"/{request.match_info['version']}{path}",
                                  "query": query, "json": body, "accepted": False, "time": time.monotonic()}
        self.calls.append(record)
        try:
            fault = self._take_fault(request.method, record["path"], body)
            if fault is not None:
                return await self._fault_response(request, fault)
            page = self._authenticate(query)
            answer = self._route(request.method, path, page, body, query)
            record["accepted"] = True
            return web.json_response(answer)
        except GraphError as exc:
            return _error_response(exc.status, exc.code, exc.message, exc.subcode, exc.error_type)
        finally:
            await self._notify()

    async def _fault_response(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.delay:
            await asyncio.sleep(fault.delay)  # a stalled Graph answer, by design
        if fault.disconnect:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if fault.code is None:
            return web.Response(status=fault.status, text="<html>upstream error</html>", content_type="text/html")
        return _error_response(fault.status, fault.code, fault.message, fault.subcode, fault.error_type,
                               fault.is_transient)

    def _authenticate(self, query: dict[str, str]) -> _Page:
        token = query.get("access_token", "")
        page = next((p for p in self.pages.values() if p.token and hmac.compare_digest(p.token, token)), None)
        if page is None:
            raise GraphError(400, 190, "Invalid OAuth access token - Cannot parse access token")
        secret = page.app_secret or self.app_secret
        if secret:
            expected = hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            proof = query.get("appsecret_proof", "")
            if not proof:
                raise GraphError(400, 100, "API calls from the server require an appsecret_proof argument",
                                 error_type="GraphMethodException")
            if not hmac.compare_digest(expected, proof):
                raise GraphError(400, 100, "Invalid appsecret_proof provided in the API argument",
                                 error_type="GraphMethodException")
        return page

    def _route(self, method: str, path: str, page: _Page, body: Any, query: dict[str, str]) -> dict[str, Any]:
        if path == "/me" and method == "GET":
            return {"id": page.id, "name": page.name}
        if path in ("/me/messages", f"/{page.id}/messages") and method == "POST":
            return self._send(page, body)
        if path in ("/me/messenger_profile", f"/{page.id}/messenger_profile"):
            return self._profile(method, page, body, query)
        match = re.fullmatch(r"/([0-9]+)", path)
        if match and method == "GET":
            user = self.users.get(match.group(1))
            if user is None:
                raise GraphError(400, 100, f"Unsupported get request. Object with ID '{match.group(1)}' does not "
                                 "exist, cannot be loaded due to missing permissions, or does not support this "
                                 "operation", subcode=33, error_type="GraphMethodException")
            fields = [f for f in query.get("fields", "").split(",") if f]
            shown = {k: v for k, v in user.items() if not fields or k in fields}
            return {**shown, "id": match.group(1)}
        raise GraphError(400, 100, f"Unknown path components: {path}", error_type="OAuthException")

    # -- Send API -----------------------------------------------------------------------------
    def _send(self, page: _Page, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise GraphError(400, 100, "(#100) The parameter recipient is required")
        recipient = body.get("recipient")
        if not isinstance(recipient, dict) or not (recipient.get("id") or recipient.get("user_ref")
                                                    or recipient.get("comment_id")):
            raise GraphError(400, 100, "(#100) The parameter recipient is required")
        psid = str(recipient.get("id") or recipient.get("user_ref") or recipient.get("comment_id"))
        has_message, has_action = "message" in body, "sender_action" in body
        if has_message == has_action:
            raise GraphError(400, 100, "(#100) Exactly one of message and sender_action must be set")
        if has_action:
            if body["sender_action"] not in SENDER_ACTIONS:
                raise GraphError(400, 100, "(#100) Param sender_action must be one of {TYPING_ON, TYPING_OFF, "
                                 "MARK_SEEN}")
            return {"recipient_id": psid}
        messaging_type = body.get("messaging_type")
        if messaging_type not in MESSAGING_TYPES:
            raise GraphError(400, 100, "(#100) Param messaging_type must be one of {RESPONSE, UPDATE, "
                             "MESSAGE_TAG, UTILITY}")
        if messaging_type == "MESSAGE_TAG" and not body.get("tag"):
            raise GraphError(400, 100, "(#100) Tag is required for MESSAGE_TAG messaging type")
        _check_message(body["message"])
        return {"recipient_id": psid, "message_id": f"m_emulated_{next(self._ids)}"}

    # -- Messenger Profile API ----------------------------------------------------------------
    def _profile(self, method: str, page: _Page, body: Any, query: dict[str, str]) -> dict[str, Any]:
        if method == "GET":
            fields = [f for f in query.get("fields", "").split(",") if f]
            if not fields:
                raise GraphError(400, 100, "(#100) The parameter fields is required")
            data = {f: page.profile[f] for f in fields if f in page.profile}
            return {"data": [data] if data else []}
        if method not in ("POST", "DELETE"):
            raise GraphError(400, 100, f"Unsupported {method} request")
        self._profile_rate_limit(page)
        if not isinstance(body, dict):
            raise GraphError(400, 100, "(#100) The request body must be a JSON object")
        if method == "DELETE":
            fields = body.get("fields")
            if not isinstance(fields, list) or not fields or any(f not in PROFILE_FIELDS for f in fields):
                raise GraphError(400, 100, f"(#100) param fields must be a non-empty list of {list(PROFILE_FIELDS)}")
            if "get_started" in fields and "persistent_menu" in page.profile and "persistent_menu" not in fields:
                raise GraphError(400, 100, "(#100) You must delete the persistent menu before the get started button")
            for name in fields:
                page.profile.pop(name, None)
            return {"result": "success"}
        unknown = [k for k in body if k not in PROFILE_FIELDS]
        if unknown or not body:
            raise GraphError(400, 100, f"(#100) Unknown or missing profile fields: {unknown}")
        _check_profile(body, has_get_started="get_started" in page.profile or "get_started" in body)
        page.profile.update(body)
        return {"result": "success"}

    def _profile_rate_limit(self, page: _Page) -> None:
        if not self.profile_rate_limit:
            return
        limit, window = self.profile_rate_limit
        now = time.monotonic()
        while page.profile_calls and page.profile_calls[0] <= now - window:
            page.profile_calls.popleft()
        if len(page.profile_calls) >= limit:
            raise GraphError(400, 613, "Calls to this api have exceeded the rate limit.")
        page.profile_calls.append(now)


def _error_response(status: int, code: int, message: str, subcode: int | None = None,
                    error_type: str = "OAuthException", is_transient: bool | None = None) -> web.Response:
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code,
                             "fbtrace_id": "A" + hashlib.sha1(f"{time.time_ns()}".encode()).hexdigest()[:20]}
    if subcode is not None:
        error["error_subcode"] = subcode
    if is_transient is not None:
        error["is_transient"] = is_transient
    return web.json_response({"error": error}, status=status)


def _param(message: str) -> GraphError:
    return GraphError(400, 100, f"(#100) {message}")


def _check_buttons(buttons: Any, where: str) -> None:
    if not isinstance(buttons, list) or not buttons:
        raise _param(f"{where} buttons must be a non-empty list")
    if len(buttons) > 3:
        raise _param(f"{where} buttons should be less than or equal to 3")
    for button in buttons:
        if not isinstance(button, dict) or button.get("type") not in ("web_url", "postback", "phone_number",
                                                                        "account_link", "account_unlink",
                                                                        "game_play"):
            raise _param(f"{where} button type is invalid")
        title = button.get("title")
        if button["type"] in ("web_url", "postback", "phone_number") and (not isinstance(title, str) or not title):
            raise _param(f"{where} button title is required")
        if isinstance(title, str) and _units(title) > 20:
            raise _param(f"{where} button title has more than 20 characters")
        if button["type"] == "web_url" and not button.get("url"):
            raise _param(f"{where} web_url button requires url")
        if button["type"] == "postback":
            payload = button.get("payload")
            if not isinstance(payload, str) or not payload:
                raise _param(f"{where} postback button requires payload")
            if _units(payload) > 1000:
                raise _param(f"{where} button payload has more than 1000 characters")


def _check_message(message: Any) -> None:
    """Meta's documented Send API limits; anything over them is an error #100."""
    if not isinstance(message, dict):
        raise _param("param message must be an object")
    text, attachment = message.get("text"), message.get("attachment")
    if (text is None) == (attachment is None):
        raise _param("Exactly one of text and attachment must be set in message")
    if text is not None:
        if not isinstance(text, str) or not text:
            raise _param("param message[text] must be a non-empty UTF-8 encoded string")
        if _units(text) > 2000:
            raise _param("Length of param message[text] must be less than or equal to 2000")
    quick_replies = message.get("quick_replies")
    if quick_replies is not None:
        if not isinstance(quick_replies, list) or not quick_replies:
            raise _param("param message[quick_replies] must be a non-empty array")
        if len(quick_replies) > 13:
            raise _param("param message[quick_replies] must have at most 13 elements")
        for reply in quick_replies:
            kind = reply.get("content_type") if isinstance(reply, dict) else None
            if kind not in ("text", "user_phone_number", "user_email"):
                raise _param("quick_replies content_type must be text, user_phone_number or user_email")
            if kind == "text":
                title, payload = reply.get("title"), reply.get("payload")
                if not isinstance(title, str) or not title:
                    raise _param("quick_replies title is required for text quick replies")
                if _units(title) > 20:
                    raise _param("quick_replies title has more than 20 characters")
                if not isinstance(payload, str | int) or str(payload) == "":
                    raise _param("quick_replies payload is required for text quick replies")
                if _units(str(payload)) > 1000:
                    raise _param("quick_replies payload has more than 1000 characters")
    if attachment is not None:
        _check_attachment(attachment)


def _check_attachment(attachment: Any) -> None:
    if not isinstance(attachment, dict):
        raise _param("param message[attachment] must be an object")
    kind, payload = attachment.get("type"), attachment.get("payload")
    if kind in ("image", "audio", "video", "file"):
        if not isinstance(payload, dict) or not (payload.get("url") or payload.get("attachment_id")):
            raise _param(f"{kind} attachment requires payload.url or payload.attachment_id")
        url = payload.get("url")
        if url and not re.match(r"^https?://", str(url)):
            raise _param(f"{kind} attachment url must be an http(s) URL")
        return
    if kind != "template" or not isinstance(payload, dict):
        raise _param("param message[attachment][type] must be one of image, audio, video, file, template")
    template = payload.get("template_type")
    if template == "generic":
        elements = payload.get("elements")
        if not isinstance(elements, list) or not elements:
            raise _param("generic template elements must be a non-empty array")
        if len(elements) > 10:
            raise _param("Param elements[] must be less than or equal to 10")
        for element in elements:
            title = element.get("title") if isinstance(element, dict) else None
            if not isinstance(title, str) or not title:
                raise _param("generic template element title is required")
            if _units(title) > 80:
                raise _param("generic template element title has more than 80 characters")
            subtitle = element.get("subtitle")
            if subtitle is not None and (not isinstance(subtitle, str) or _units(subtitle) > 80):
                raise _param("generic template element subtitle has more than 80 characters")
            if "buttons" in element:
                _check_buttons(element["buttons"], "generic template element")
        return
    if template == "button":
        text = payload.get("text")
        if not isinstance(text, str) or not text or _units(text) > 640:
            raise _param("button template text is required and at most 640 characters")
        _check_buttons(payload.get("buttons"), "button template")
        return
    if template in ("media", "receipt", "customer_feedback", "product"):
        return
    raise _param(f"unsupported template_type {template!r}")


def _check_profile(body: dict[str, Any], *, has_get_started: bool) -> None:
    greeting = body.get("greeting")
    if greeting is not None:
        if not isinstance(greeting, list) or not greeting:
            raise _param("greeting must be a non-empty array")
        for item in greeting:
            if not isinstance(item, dict) or not item.get("locale") or not isinstance(item.get("text"), str):
                raise _param("each greeting needs locale and text")
            if _units(item["text"]) > 160:
                raise _param("greeting text must be at most 160 characters")
    get_started = body.get("get_started")
    if get_started is not None and (not isinstance(get_started, dict) or not get_started.get("payload")):
        raise _param("get_started needs a payload")
    menu = body.get("persistent_menu")
    if menu is not None:
        if not has_get_started:
            raise GraphError(400, 100, "(#100) You must set a Get Started button if you also wish to use "
                             "persistent menu.")
        if not isinstance(menu, list) or not menu:
            raise _param("persistent_menu must be a non-empty array")
        if not any(isinstance(m, dict) and m.get("locale") == "default" for m in menu):
            raise _param("persistent_menu needs a menu with locale default")
        for item in menu:
            actions = item.get("call_to_actions") if isinstance(item, dict) else None
            if not isinstance(actions, list) or not actions or len(actions) > 20:
                raise _param("persistent_menu call_to_actions must have 1 to 20 items")
            for action in actions:
                if not isinstance(action, dict) or action.get("type") not in ("web_url", "postback"):
                    raise _param("persistent_menu items must be web_url or postback")
                if not action.get("title") or _units(str(action["title"])) > 30:
                    raise _param("persistent_menu item title is required and at most 30 characters")


def main(argv: list[str] | None = None) -> None:
    """``python -m channel_messenger.graph_emulator --page 1001:TOKEN:"My Page" --port 5005``."""
    import argparse

    parser = argparse.ArgumentParser(description="A local fake of the Graph API for the Messenger channel.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5005)
    parser.add_argument("--page", action="append", default=[], metavar="ID:TOKEN[:NAME]",
                        help="a Page the emulator knows (repeatable)")
    parser.add_argument("--app-secret", default=None, help="require appsecret_proof made with this secret")
    args = parser.parse_args(argv)
    pages: dict[str, dict[str, Any]] = {}
    for spec in args.page:
        page_id, _, rest = spec.partition(":")
        token, _, name = rest.partition(":")
        if not page_id.isdigit() or not token:
            parser.error(f"--page {spec!r}: expected ID:TOKEN[:NAME] with a numeric id")
        pages[page_id] = {"token": token, "name": name or f"Page {page_id}"}

    async def run() -> None:
        emulator = GraphEmulator(pages, app_secret=args.app_secret)
        url = await emulator.start(args.port, args.host)
        print(f"Graph API emulator on {url} (set graphApiUrl to it); pages: {', '.join(pages) or 'none'}")
        try:
            await asyncio.Event().wait()
        finally:
            await emulator.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
