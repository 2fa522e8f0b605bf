"""A local stand-in for the Graph API parts the Messenger channel uses.

Runs as a small aiohttp server: point a bot's ``graphApiUrl`` at ``emulator.url`` and it
behaves like Meta's Graph API for Page identity (``GET /me``), the Send API, the Messenger
Profile API, user profiles, conversation routing (``pass_thread_control`` and co.) and
``ids_for_pages`` (see emulator_routing.py), with Meta's error shapes and limits, so a bot can
be tried (and tested) without Facebook. Faults can be planned (``fail_next``, ``add_rule``) to see
how a channel copes with outages, rate limits and bad tokens.

    emulator = GraphEmulator(pages={"1001": {"token": "EAA-page-token", "name": "My Page"}})
    await emulator.start()          # emulator.url == "http://127.0.0.1:<port>"
    ...
    await emulator.stop()

Every request is recorded in ``emulator.calls`` as ``{seq, method, path, query, json, accepted,
time, page, error, fault}`` (``seq`` counts from 1, ``time`` from ``time.monotonic()``,
``accepted`` false for answers with an error, ``page`` the Page id of the token once known,
``error`` Meta's error answered, ``fault`` true when a planned fault answered).

Besides the Graph routes it serves a small control API (used by ``botpress-py messenger``
simulate/chat, tests and benchmarks), see ``docs/channels/messenger.md``:

- ``GET /_emulator``: pages, whether it signs webhooks, the server it posts to, the last ``seq``;
- ``GET /_emulator/calls?since=SEQ&psid=&page=&wait=SECONDS`` (tokens hidden; ``wait`` holds
  the answer until a matching call arrives), ``DELETE /_emulator/calls``;
- ``GET|POST|DELETE /_emulator/faults``: planned errors, stalls and rates of errors;
- ``POST /_emulator/send``: a user writes to the Page; the emulator signs the webhook with the
  app secret and posts it to the server, like Facebook does.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import hashlib
import hmac
import itertools
import json
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from .emulator_routing import ConversationRouting
from .replies import ReplyCollector, recipient_of
from .webhook import signature_headers

_VERSION = r"v[0-9]+\.[0-9]+"
PROFILE_FIELDS = ("greeting", "get_started", "persistent_menu", "ice_breakers", "whitelisted_domains")
SENDER_ACTIONS = ("typing_on", "typing_off", "mark_seen")
MESSAGING_TYPES = ("RESPONSE", "UPDATE", "MESSAGE_TAG", "UTILITY")
WEBHOOK_PATH = "/api/v1/bots/{bot}/mod/channel-messenger/webhook"
_HIDDEN_QUERY = ("access_token", "appsecret_proof")


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
    rate: float = 1.0  # share of the matching requests that get it (a rule with 0.1: about one in ten)
    passthrough: bool = False  # only stall ``delay`` seconds, then answer normally (added latency)
    has: str | None = None  # only bodies with this top-level key ("message", "sender_action")

    def matches(self, method: str, path: str, body: Any) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.path is not None and re.search(self.path, path) is None:
            return False
        if self.has is not None and not (isinstance(body, dict) and self.has in body):
            return False
        return self.when is None or bool(self.when(body))

    def describe(self) -> dict[str, Any]:
        """The rule as the control API shows it (no predicate functions)."""
        return {"status": None if self.passthrough else self.status, "code": None if self.passthrough else self.code,
                "message": self.message, "subcode": self.subcode, "delay": self.delay,
                "disconnect": self.disconnect, "path": self.path, "method": self.method, "has": self.has,
                "rate": self.rate, "times": self.remaining}


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
    ``GET /{psid}``; ``any_user`` answers a made-up profile for every other PSID (the command-line
    emulator does: any PSID typed in a terminal is a user). ``profile_rate_limit`` is ``(calls,
    seconds)`` per Page for the profile API. ``server_url`` is the botpress-py server that
    ``POST /_emulator/send`` posts webhooks to (a request may name another); ``seed`` makes fault
    rates repeatable. ``routing`` (a ``ConversationRouting``) holds thread owners, one person's
    PSIDs on several Pages (``routing.add_person``) and per-Page profile permissions
    (``routing.grant_fields``).
    """

    def __init__(
        self,
        pages: dict[str, dict[str, Any]] | None = None,
        *,
        app_secret: str | None = None,
        users: dict[str, dict[str, Any]] | None = None,
        profile_rate_limit: tuple[int, float] | None = (10, 600.0),
        any_user: bool = False,
        server_url: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.app_secret = app_secret
        self.any_user = any_user
        self.server_url = server_url
        self._random = random.Random(seed)
        self._seq = itertools.count(1)
        self.last_seq = 0
        self._http: aiohttp.ClientSession | None = None
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # called with each record once answered
        self.pages: dict[str, _Page] = {}
        for page_id, spec in (pages or {}).items():
            self.add_page(page_id, spec["token"], spec.get("name", f"Page {page_id}"), spec.get("app_secret"))
        self.users: dict[str, dict[str, Any]] = dict(users or {})
        self.profile_rate_limit = profile_rate_limit
        # Thread owners (handover), people with ids on several Pages, profile field permissions.
        self.routing = ConversationRouting(GraphError)
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
        app.router.add_get("/_emulator", self._info)
        app.router.add_get("/_emulator/calls", self._list_calls)
        app.router.add_delete("/_emulator/calls", self._clear_calls)
        app.router.add_get("/_emulator/faults", self._list_faults)
        app.router.add_post("/_emulator/faults", self._add_fault)
        app.router.add_delete("/_emulator/faults", self._clear_faults)
        app.router.add_post("/_emulator/send", self._send_from_user)
        app.router.add_route("*", r"/{version:" + _VERSION + r"}/{tail:.*}", self._dispatch)
        app.on_cleanup.append(self._close_http)
        return app

    # -- control API (/_emulator/...) ---------------------------------------------------------
    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response({
            "emulator": "botpress-py Graph API emulator",
            "pages": [{"id": p.id, "name": p.name, "signsWebhooks": bool(p.app_secret or self.app_secret),
                       "profile": p.profile} for p in self.pages.values()],
            "server": self.server_url,
            "seq": self.last_seq,
            "faults": [f.describe() for f in self._rules],
        })

    def calls_since(self, seq: int = 0, *, psid: str | None = None, page: str | None = None) -> list[dict[str, Any]]:
        """Records after ``seq``, optionally only Send API calls to one user (and one Page)."""
        start = bisect.bisect_right(self.calls, seq, key=lambda c: c["seq"])
        found = self.calls[start:]
        if psid is not None:
            found = [c for c in found if recipient_of(c) == psid and (page is None or c.get("page") in (None, page))]
        elif page is not None:
            found = [c for c in found if c.get("page") == page]
        return found

    async def _list_calls(self, request: web.Request) -> web.Response:
        """What the emulator received, for a look from outside the process (tokens hidden).

        ``since`` (a ``seq``), ``psid`` and ``page`` filter; ``wait`` (seconds, at most 30) holds
        the answer until at least one record matches, so a client can follow without busy polling.
        """
        try:
            since = int(request.query.get("since", "0"))
            wait = min(max(float(request.query.get("wait", "0")), 0.0), 30.0)
        except ValueError:
            return web.json_response({"error": "since must be an integer and wait a number of seconds"}, status=400)
        psid, page = request.query.get("psid") or None, request.query.get("page") or None

        def found(_: GraphEmulator) -> list[dict[str, Any]]:
            return self.calls_since(since, psid=psid, page=page)

        if wait and not found(self):
            try:
                await self.wait_for(found, wait)
            except TimeoutError:
                pass
        shown = [_shown(c) for c in found(self)]
        return web.json_response({"calls": shown, "seq": self.last_seq,
                                  "profiles": {p.id: p.profile for p in self.pages.values()}})

    async def _clear_calls(self, request: web.Request) -> web.Response:
        self.calls.clear()
        return web.json_response({"cleared": True, "seq": self.last_seq})

    async def _list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.describe() for f in self._rules],
                                  "next": [f.describe() for f in self._faults]})

    async def _add_fault(self, request: web.Request) -> web.Response:
        """Plan errors over HTTP: ``{status, code, message, subcode, times, path, method, has, delay, rate,
        disconnect}``. ``times`` defaults to 1 (``null``: until ``DELETE /_emulator/faults``); a body with
        only ``delay`` (no status or code) adds latency to otherwise normal answers."""
        try:
            spec = await request.json()
            rule = self.add_rule(**fault_options(spec))
        except (ValueError, TypeError, re.error) as exc:
            return web.json_response({"error": f"bad fault: {exc}"}, status=400)
        return web.json_response({"fault": rule.describe()}, status=201)

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"faults": []})

    async def _send_from_user(self, request: web.Request) -> web.Response:
        """``{page?, psid, text | postback | quick_reply, title?, server?, bot?, wait?, timeout?, settle?}``.

        Posts the user's event to the server's webhook, signed like Facebook does, and answers
        ``{status, body, event, since}`` (``status``: the server's answer); with ``wait`` true it
        also waits for the bot's turn and adds ``replies`` (Send API calls to that user).
        """
        try:
            spec = await request.json()
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            page_id = str(spec.get("page") or (next(iter(self.pages)) if len(self.pages) == 1 else ""))
            psid = str(spec.get("psid") or "")
            if not page_id or page_id not in self.pages:
                raise ValueError(f"page must be one of {sorted(self.pages)}")
            if not psid:
                raise ValueError("psid (the user's id) is required")
            event = user_event(page_id, psid, text=spec.get("text"), postback=spec.get("postback"),
                               quick_reply=spec.get("quick_reply"), title=spec.get("title"))
            timeout = float(spec.get("timeout", 10.0))
            settle = float(spec.get("settle", 1.0))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        server = str(spec.get("server") or self.server_url or "").rstrip("/")
        if not server:
            return web.json_response({"error": "no server to post to: start the emulator with --server URL "
                                               "or give \"server\" in the request"}, status=400)
        since = self.last_seq
        try:
            status, text = await self.post_webhook(server, page_id, [event], bot=str(spec.get("bot") or "___"))
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.json_response({"error": f"no server answers at {server}: {exc or type(exc).__name__}"},
                                     status=502)
        answer: dict[str, Any] = {"status": status, "body": text, "event": event, "since": since}
        if spec.get("wait") and status == 200:
            collector = ReplyCollector(psid, page_id, timeout=timeout, settle=settle)
            await self.collect(collector, since)
            answer["replies"] = [_shown(c) for c in collector.records]
            answer["timedOut"] = not collector.got_reply
        return web.json_response(answer)

    async def post_webhook(self, server: str, page_id: str, events: list[dict[str, Any]], *,
                           bot: str = "___") -> tuple[int, str]:
        """Sign ``events`` of ``page_id`` with the app secret and post them to ``server``; (status, body)."""
        page = self.pages.get(str(page_id))
        secret = (page.app_secret if page else None) or self.app_secret
        if not secret:
            raise LookupError("the emulator has no app secret to sign webhooks with: start it with --app-secret "
                              "(the appSecret the bot uses)")
        raw, headers = self.signed(self.webhook_body(str(page_id), events), secret)
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self._http.post(server.rstrip("/") + WEBHOOK_PATH.format(bot=bot), data=raw,
                                   headers=headers) as response:
            return response.status, await response.text()

    async def collect(self, collector: ReplyCollector, since: int) -> ReplyCollector:
        """Feed ``collector`` with the calls after ``since`` until it says the bot's turn is over."""
        seen = since
        while True:
            new = self.calls_since(seen)
            if new:
                seen = new[-1]["seq"]
                collector.feed(new)
            if collector.done():
                return collector
            try:
                await self.wait_for(functools.partial(_newer_than, seen), max(collector.wait_hint(), 0.01))
            except TimeoutError:
                pass

    async def _close_http(self, app: web.Application | None = None) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

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
        await self._close_http()

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
            if rule.matches(method, path, body) and (rule.rate >= 1.0 or self._random.random() < rule.rate):
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
    def postback(page_id: str, psid: str, payload: str, title: str | None = None) -> dict[str, Any]:
        """A messaging event as Meta sends it when ``psid`` taps a postback button (or Get Started)."""
        return user_event(page_id, psid, postback=payload, title=title)

    @staticmethod
    def quick_reply(page_id: str, psid: str, payload: str, title: str | None = None) -> dict[str, Any]:
        """A messaging event as Meta sends it when ``psid`` taps a quick reply titled ``title``."""
        return user_event(page_id, psid, quick_reply=payload, title=title)

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
        self.last_seq = next(self._seq)
        record: dict[str, Any] = {"seq": self.last_seq, "method": request.method,
                                  "path": f"/{request.match_info['version']}{path}", "query": query, "json": body,
                                  "accepted": False, "time": time.monotonic(), "page": None}
        self.calls.append(record)
        try:
            fault = self._take_fault(request.method, record["path"], body)
            if fault is not None and fault.passthrough:
                await asyncio.sleep(fault.delay)  # added latency, then a normal answer
                fault = None
            if fault is not None:
                record["fault"] = True
                record["error"] = {"status": fault.status, "code": fault.code, "message": fault.message}
                return await self._fault_response(request, fault)
            page = self._authenticate(query)
            record["page"] = page.id
            answer = self._route(request.method, path, page, body, query)
            record["accepted"] = True
            return web.json_response(answer)
        except GraphError as exc:
            record["error"] = {"status": exc.status, "code": exc.code, "message": exc.message}
            return _error_response(exc.status, exc.code, exc.message, exc.subcode, exc.error_type)
        finally:
            for listener in self.listeners:
                listener(record)
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
        routed = self.routing.route(method, path, page.id, {p.id: p.name for p in self.pages.values()}, body, query)
        if routed is not None:
            return routed
        match = re.fullmatch(r"/([0-9]+)", path)
        if match and method == "GET":
            self.routing.check_profile_fields(page.id, [f for f in query.get("fields", "").split(",") if f])
            user = self.users.get(match.group(1))
            if user is None and self.any_user and match.group(1) != page.id:
                user = made_up_profile(match.group(1))
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
        self.routing.check_send(page.id, psid)  # only the thread owner may send
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


def _newer_than(seq: int, emulator: GraphEmulator) -> bool:
    return emulator.last_seq > seq


def _shown(call: dict[str, Any]) -> dict[str, Any]:
    """A record as the control API shows it: tokens and proofs hidden."""
    return {**call, "query": {k: ("***" if k in _HIDDEN_QUERY else v) for k, v in call["query"].items()}}


def made_up_profile(psid: str) -> dict[str, Any]:
    """The profile the command-line emulator gives any user it does not know."""
    return {"first_name": "Test", "last_name": f"User {psid[-4:]}", "locale": "en_US", "timezone": 0,
            "profile_pic": f"https://example.com/emulator/{psid}.png"}


def user_event(page_id: str, psid: str, *, text: Any = None, postback: Any = None, quick_reply: Any = None,
               title: Any = None) -> dict[str, Any]:
    """One messaging event from a user: a typed ``text``, a ``postback`` tap or a ``quick_reply`` tap.

    A quick reply arrives as a message whose text is the reply's ``title`` (Messenger shows it
    as typed) plus ``quick_reply.payload``; a postback carries the button's ``title``.
    """
    given = [k for k, v in (("text", text), ("postback", postback), ("quick_reply", quick_reply)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of text, postback and quick_reply")
    now = int(time.time() * 1000)
    content = str(text if text is not None else postback if postback is not None else quick_reply)
    if not content:
        raise ValueError(f"{given[0]} must not be empty")
    mid = f"m_{psid}_{now}_{hashlib.sha1(f'{given[0]}:{content}:{time.time_ns()}'.encode()).hexdigest()[:10]}"
    event: dict[str, Any] = {"sender": {"id": str(psid)}, "recipient": {"id": str(page_id)}, "timestamp": now}
    if text is not None:
        event["message"] = {"mid": mid, "text": content}
    elif postback is not None:
        event["postback"] = {"mid": mid, "title": str(title or content), "payload": content}
    else:
        event["message"] = {"mid": mid, "text": str(title or content), "quick_reply": {"payload": content}}
    return event


def fault_options(spec: Any) -> dict[str, Any]:
    """Keyword arguments of ``add_rule`` from a control-API fault spec (raises ValueError when bad)."""
    if not isinstance(spec, dict):
        raise ValueError("the body must be a JSON object")
    known = {"status", "code", "message", "subcode", "times", "path", "method", "has", "delay", "rate",
             "disconnect", "is_transient"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; known: {sorted(known)}")
    options: dict[str, Any] = {"times": spec.get("times", 1)}
    if options["times"] is not None and (not isinstance(options["times"], int) or options["times"] < 1):
        raise ValueError("times must be a positive integer or null (until cleared)")
    latency_only = "delay" in spec and "status" not in spec and "code" not in spec and not spec.get("disconnect")
    if latency_only:
        options["passthrough"] = True
    else:
        options["status"] = int(spec.get("status", 500))
        options["code"] = None if spec.get("code", 1200) is None else int(spec.get("code", 1200))
    for key, kind in (("message", str), ("path", str), ("method", str), ("has", str)):
        if spec.get(key) is not None:
            options[key] = kind(spec[key])
    if spec.get("path") is not None:
        re.compile(options["path"])
    if spec.get("subcode") is not None:
        options["subcode"] = int(spec["subcode"])
    if spec.get("is_transient") is not None:
        options["is_transient"] = bool(spec["is_transient"])
    options["delay"] = float(spec.get("delay", 0.0))
    options["disconnect"] = bool(spec.get("disconnect", False))
    rate = float(spec.get("rate", 1.0))
    if not 0.0 < rate <= 1.0:
        raise ValueError("rate must be in (0, 1]")
    options["rate"] = rate
    if options["delay"] < 0:
        raise ValueError("delay must be >= 0 seconds")
    return options


def main(argv: list[str] | None = None) -> None:
    """``python -m channel_messenger.graph_emulator``: the same as ``botpress-py messenger emulator``."""
    import sys

    from .commands import emulator_main

    sys.exit(emulator_main(argv))


if __name__ == "__main__":
    main()
