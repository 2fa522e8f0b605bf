"""A local stand-in for the Graph API parts the Messenger channel uses.

Runs as a small aiohttp server: point a bot's ``graphApiUrl`` at ``emulator.url`` and it
behaves like Meta's Graph API for Page identity (``GET /me``), the Send API, the Messenger
Profile API, user profiles, conversation routing (``pass_thread_control`` and co.) and
``ids_for_pages`` (see routing.py), with Meta's error shapes and limits (send_checks.py), so a
bot can be tried (and tested) without Facebook. Faults can be planned (``fail_next``,
``add_rule``, faults.py) to see how a channel copes with outages, rate limits and bad tokens.

    emulator = GraphEmulator(pages={"1001": {"token": "EAA-page-token", "name": "My Page"}})
    await emulator.start()          # emulator.url == "http://127.0.0.1:<port>"
    ...
    await emulator.stop()

Every request is recorded in ``emulator.calls`` as ``{seq, method, path, query, json, accepted,
time, page, error, fault}`` (``seq`` counts from 1, ``time`` from ``time.monotonic()``,
``accepted`` false for answers with an error, ``page`` the Page id of the token once known,
``error`` Meta's error answered, ``fault`` true when a planned fault answered).

Besides the Graph routes it serves a small control API (control.py, used by ``botpress-py
messenger`` simulate/chat, tests and benchmarks), see ``docs/channels/messenger.md``.
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
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .control import ControlApi
from .events import WEBHOOK_PATH, made_up_profile, signed, user_event, user_message, webhook_body
from .faults import Fault, GraphError, error_response
from .page_profiles import ProfilesFileError, load_profiles, save_profiles
from .replies import ReplyCollector, recipient_of
from .routing import ConversationRouting
from .send_checks import MESSAGING_TYPES, PROFILE_FIELDS, SENDER_ACTIONS, check_message, check_profile

_VERSION = r"v[0-9]+\.[0-9]+"


@dataclass
class _Page:
    id: str
    token: str
    name: str
    app_secret: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    profile_calls: deque[float] = field(default_factory=deque)


class GraphEmulator(ControlApi):
    """A fake Graph API server. ``pages``: ``{page_id: {"token", "name", "app_secret"?}}``.

    ``app_secret`` (for all pages, or per page) makes the emulator check ``appsecret_proof``
    like a Meta App with "Require App Secret" on. ``users``: ``{psid: profile dict}`` for
    ``GET /{psid}``; ``any_user`` answers a made-up profile for every other PSID (the command-line
    emulator does: any PSID typed in a terminal is a user). ``profile_rate_limit`` is ``(calls,
    seconds)`` per Page for the profile API. ``server_url`` is the botpress-py server that
    ``POST /_emulator/send`` posts webhooks to (a request may name another); ``seed`` makes fault
    rates repeatable. ``routing`` (a ``ConversationRouting``) holds thread owners, one person's
    PSIDs on several Pages (``routing.add_person``) and per-Page profile permissions
    (``routing.grant_fields``). ``profiles_file`` keeps each Page's Messenger profile across restarts, as
    Facebook does (page_profiles.py); without it a Page starts with no profile.
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
        profiles_file: Path | None = None,
    ) -> None:
        self.profiles_file = profiles_file
        self.profiles_problem: str | None = None  # why the kept profiles could not be loaded or saved
        self._kept_profiles: dict[str, dict[str, Any]] = {}
        if profiles_file is not None:
            try:
                self._kept_profiles = load_profiles(profiles_file)
            except ProfilesFileError as exc:
                self.profiles_problem = f"{exc}: the Pages start with no Messenger profile"
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
        self.pages[str(page_id)] = _Page(str(page_id), token, name or f"Page {page_id}", app_secret,
                                         profile=dict(self._kept_profiles.get(str(page_id), {})))

    @property
    def url(self) -> str:
        """Base URL to use as a bot's ``graphApiUrl``."""
        if self.port is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self.port}"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=30 * 1024 * 1024)
        self.add_control_routes(app)
        app.router.add_route("*", r"/{version:" + _VERSION + r"}/{tail:.*}", self._dispatch)
        app.on_cleanup.append(self._close_http)
        return app

    def calls_since(self, seq: int = 0, *, psid: str | None = None, page: str | None = None) -> list[dict[str, Any]]:
        """Records after ``seq``, optionally only Send API calls to one user (and one Page)."""
        start = bisect.bisect_right(self.calls, seq, key=lambda c: c["seq"])
        found = self.calls[start:]
        if psid is not None:
            found = [c for c in found if recipient_of(c) == psid and (page is None or c.get("page") in (None, page))]
        elif page is not None:
            found = [c for c in found if c.get("page") == page]
        return found

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

    async def collect(self, collector: ReplyCollector, since: int,
                      on_call: Callable[[dict[str, Any]], None] | None = None) -> ReplyCollector:
        """Feed ``collector`` with the calls after ``since`` until it says the bot's turn is over
        (``on_call`` sees each call of the turn as it arrives)."""
        seen = since
        while True:
            new = self.calls_since(seen)
            if new:
                seen = new[-1]["seq"]
                for call in collector.feed(new):
                    if on_call is not None:
                        on_call(call)
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

    @property
    def rules(self) -> list[Fault]:
        """The rules in force (``add_rule``), in the order they are tried."""
        return list(self._rules)

    @property
    def planned(self) -> list[Fault]:
        """The faults planned for the next matching requests (``fail_next``)."""
        return list(self._faults)

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
    webhook_body = staticmethod(webhook_body)
    user_message = staticmethod(user_message)
    signed = staticmethod(signed)

    @staticmethod
    def postback(page_id: str, psid: str, payload: str, title: str | None = None) -> dict[str, Any]:
        """A messaging event as Meta sends it when ``psid`` taps a postback button (or Get Started)."""
        return user_event(page_id, psid, postback=payload, title=title)

    @staticmethod
    def quick_reply(page_id: str, psid: str, payload: str, title: str | None = None) -> dict[str, Any]:
        """A messaging event as Meta sends it when ``psid`` taps a quick reply titled ``title``."""
        return user_event(page_id, psid, quick_reply=payload, title=title)

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
            return error_response(exc.status, exc.code, exc.message, exc.subcode, exc.error_type)
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
        return error_response(fault.status, fault.code, fault.message, fault.subcode, fault.error_type,
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
        check_message(body["message"])
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
            self._keep_profile(page)
            return {"result": "success"}
        unknown = [k for k in body if k not in PROFILE_FIELDS]
        if unknown or not body:
            raise GraphError(400, 100, f"(#100) Unknown or missing profile fields: {unknown}")
        check_profile(body, has_get_started="get_started" in page.profile or "get_started" in body)
        page.profile.update(body)
        self._keep_profile(page)
        return {"result": "success"}

    def _keep_profile(self, page: _Page) -> None:
        """Save the Page's profile for the next run; a few hundred bytes, at most ~10 times per 10 minutes."""
        if self.profiles_file is None:
            return
        if page.profile:
            self._kept_profiles[page.id] = dict(page.profile)
        else:
            self._kept_profiles.pop(page.id, None)
        try:
            save_profiles(self.profiles_file, self._kept_profiles)
        except OSError as exc:  # the call itself succeeded: only the next run would not have the profile
            self.profiles_problem = f"cannot write {self.profiles_file}: {exc.strerror or exc}"

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



def _newer_than(seq: int, emulator: GraphEmulator) -> bool:
    return emulator.last_seq > seq
