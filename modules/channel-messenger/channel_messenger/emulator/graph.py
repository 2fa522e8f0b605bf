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
``error`` Meta's error answered, ``fault`` true when a planned fault answered). A batch request
(``POST /{version}/`` with ``batch``, batch.py) is recorded with ``batch_size``, then each of its calls
as if made directly, with ``batch`` its ``seq``.

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

from .activity import ActivityApi, check_sender_action
from .attachments import AttachmentStore
from .attachments import add_control_routes as add_attachment_routes
from .batch import BatchApi, batch_size
from .control import ControlApi
from .events import WEBHOOK_PATH, made_up_profile, signed, user_event, user_message, webhook_body
from .faults import Fault, GraphError, PlannedFaults, error_response
from .instagram import InstagramAccounts
from .instagram import add_control_routes as add_instagram_routes
from .page_profiles import ProfilesFileError, load_profiles, save_profiles
from .rate_limits import SendRateLimit
from .replies import ReplyCollector, recipient_of
from .routing import ConversationRouting
from .send_checks import MESSAGING_TYPES, PROFILE_FIELDS, check_message, check_profile
from .subscriptions import PageSubscriptions

_VERSION = r"v[0-9]+\.[0-9]+"


@dataclass
class _Page:
    id: str
    token: str
    name: str
    app_secret: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    profile_calls: deque[float] = field(default_factory=deque)


class GraphEmulator(ControlApi, ActivityApi, PlannedFaults, BatchApi):
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
    Facebook does (page_profiles.py); without it a Page starts with no profile. ``send_rate_limit`` is
    ``(calls, seconds)`` per Page for the Send API (613 past it; off by default, rate_limits.py).
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
        send_rate_limit: tuple[int, float] | None = None,
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
        # Instagram accounts linked to Pages (instagram.py) and uploaded attachments (attachments.py).
        self.instagram = InstagramAccounts(GraphError)
        self.attachments = AttachmentStore(GraphError)
        for page_id, spec in (pages or {}).items():
            self.add_page(page_id, spec["token"], spec.get("name", f"Page {page_id}"), spec.get("app_secret"))
            if spec.get("instagram"):
                self.instagram.link(page_id, str(spec["instagram"]))
        self.users: dict[str, dict[str, Any]] = dict(users or {})
        self.profile_rate_limit = profile_rate_limit
        # Thread owners (handover), people with ids on several Pages, profile field permissions.
        self.routing = ConversationRouting(GraphError)
        self.subscriptions = PageSubscriptions(GraphError)  # the Pages' webhook fields (subscribed_apps)
        self.send_rate = SendRateLimit(send_rate_limit, GraphError)  # Meta's 613 past N calls/s per Page
        self.calls: list[dict[str, Any]] = []
        self._faults: deque[Fault] = deque()
        self._rules: list[Fault] = []
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.host = "127.0.0.1"
        self.init_activity()  # hosted media, comments (activity.py)

    # -- setup --------------------------------------------------------------------------------
    def add_page(self, page_id: str, token: str, name: str = "", app_secret: str | None = None) -> None:
        self.pages[str(page_id)] = _Page(str(page_id), token, name or f"Page {page_id}", app_secret,
                                         profile=dict(self._kept_profiles.get(str(page_id), {})))

    def replace_token(self, page_id: str, token: str) -> None:
        """The Page's token changes (it expired, or was regenerated): the old one now gets Meta's 190."""
        self.pages[str(page_id)].token = token

    @property
    def url(self) -> str:
        """Base URL to use as a bot's ``graphApiUrl``."""
        if self.port is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self.port}"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=30 * 1024 * 1024)
        self.add_control_routes(app)
        add_instagram_routes(app, self)
        add_attachment_routes(app, self.attachments)
        self.add_activity_routes(app)
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
                           bot: str = "___", body: dict[str, Any] | None = None) -> tuple[int, str]:
        """Sign ``events`` of ``page_id`` (or a whole ``body``, e.g. an Instagram delivery of the Page's account)
        with the app secret and post them to ``server``; (status, body)."""
        return await self.post_delivery(server, page_id, body if body is not None
                                        else self.webhook_body(str(page_id), events), bot=bot)

    async def post_delivery(self, server: str, page_id: str, body: dict[str, Any], *,
                            bot: str = "___") -> tuple[int, str]:
        """Sign a whole delivery (``messaging`` events, ``feed`` changes, an Instagram delivery) as Meta does and
        post it to ``server``."""
        page = self.pages.get(str(page_id))
        secret = (page.app_secret if page else None) or self.app_secret
        if not secret:
            raise LookupError("the emulator has no app secret to sign webhooks with: start it with --app-secret "
                              "(the appSecret the bot uses)")
        self.instagram.note_delivery(body)
        raw, headers = self.signed(body, secret)
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
        # A multipart form (a batch request, as curl -F sends it) is read as a form: read() would consume it.
        multipart = await request.post() if request.content_type == "multipart/form-data" else {}
        raw = b"" if multipart else await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
        query = {**request.query, **{k: str(v) for k, v in multipart.items()}}
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            query.update({k: str(v) for k, v in form.items()})
        batch = query.pop("batch", None) if path == "/" else None
        if batch is not None:
            body = None  # its calls are recorded one by one (batch.py)
        self.last_seq = next(self._seq)
        record: dict[str, Any] = {"seq": self.last_seq, "method": request.method,
                                  "path": f"/{request.match_info['version']}{path}", "query": query, "json": body,
                                  "accepted": False, "time": time.monotonic(), "page": None}
        if batch is not None:
            record["batch_size"] = batch_size(batch)
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
            if batch is not None:
                return await self.answer_batch(request, page, record, batch)
            answer = self._route(request.method, path, page, body, query)
            record["accepted"] = True
            record["answer"] = answer
            return web.json_response(answer)
        except GraphError as exc:
            record["error"] = {"status": exc.status, "code": exc.code, "message": exc.message}
            return error_response(exc.status, exc.code, exc.message, exc.subcode, exc.error_type)
        finally:
            for listener in self.listeners:
                listener(record)
            await self._notify()

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
        subscribed = self.subscriptions.route(method, path, page.id, query)
        if subscribed is not None:
            return subscribed
        uploaded = self.attachments.route(method, path, page.id, body,
                                          instagram_linked=self.instagram.account_of(page.id) is not None)
        if uploaded is not None:
            return uploaded
        page_fields = self.instagram.route(method, path, page.id, page.name, query)
        if page_fields is not None:
            return page_fields
        routed = self.routing.route(method, path, page.id, {p.id: p.name for p in self.pages.values()}, body, query) \
            or self.comment_route(method, path, page.id, body)
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
        if recipient.get("comment_id") and not recipient.get("id"):
            return self.private_reply(page.id, body)  # activity.py: one per comment, within 7 days
        self.send_rate.check(page.id)
        psid = str(recipient.get("id") or recipient.get("user_ref"))
        has_message, has_action = "message" in body, "sender_action" in body
        if has_message == has_action:
            raise GraphError(400, 100, "(#100) Exactly one of message and sender_action must be set")
        self.routing.check_send(page.id, psid)  # only the thread owner may send
        if has_action:
            check_sender_action(body)  # typing, seen, react and unreact (activity.py)
            return {"recipient_id": psid}
        messaging_type = body.get("messaging_type")
        if messaging_type not in MESSAGING_TYPES:
            raise GraphError(400, 100, "(#100) Param messaging_type must be one of {RESPONSE, UPDATE, "
                             "MESSAGE_TAG, UTILITY}")
        if messaging_type == "MESSAGE_TAG" and not body.get("tag"):
            raise GraphError(400, 100, "(#100) Tag is required for MESSAGE_TAG messaging type")
        check_message(body["message"])
        platform = self.instagram.platform_of(page.id, psid)
        self.instagram.check_message(platform, body["message"])
        self.attachments.check_send(page.id, platform, body["message"])
        return {"recipient_id": psid, "message_id": f"m_emulated_{next(self._ids)}"}

    # -- Messenger Profile API ----------------------------------------------------------------
    def _profile(self, method: str, page: _Page, body: Any, query: dict[str, str]) -> dict[str, Any]:
        if (query.get("platform") or (body.get("platform") if isinstance(body, dict) else None)) == "instagram":
            if method != "GET":
                self._profile_rate_limit(page)  # counted with the Page's own profile calls
            return self.instagram.profile(method, page.id, body, query)
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
