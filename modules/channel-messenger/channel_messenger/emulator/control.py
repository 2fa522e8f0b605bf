"""The emulator's control API (``/_emulator/...``): what a test, a benchmark or ``botpress-py messenger``
asks of the emulator from outside its process.

- ``GET /_emulator``: pages, whether it signs webhooks, the server it posts to, the last ``seq``;
- ``GET /_emulator/calls?since=SEQ&psid=&page=&wait=SECONDS`` (tokens hidden; ``wait`` holds
  the answer until a matching call arrives), ``DELETE /_emulator/calls``;
- ``GET|POST|DELETE /_emulator/faults``: planned errors, stalls and rates of errors;
- ``POST /_emulator/send``: a user writes to the Page (or sends a photo, reacts, edits, unsends,
  comments on a post; a person answers from the Page Inbox: activity.py); the emulator signs the
  webhook with the app secret and posts it to the server, like Facebook does;
- ``GET /_emulator/media/{name}``, ``POST /_emulator/media``: files users send, hosted like Meta's CDN;
- ``POST /_emulator/pages/{id}/token`` ``{"token"}``: the Page's token expires, this one replaces it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from .faults import fault_options
from .replies import ReplyCollector

HIDDEN_QUERY = ("access_token", "appsecret_proof")


def shown_call(call: dict[str, Any]) -> dict[str, Any]:
    """A record as the control API shows it: tokens and proofs hidden."""
    return {**call, "query": {k: ("***" if k in HIDDEN_QUERY else v) for k, v in call["query"].items()}}


class ControlApi:
    """The ``/_emulator`` routes, mixed into ``GraphEmulator`` (whose state they read and change)."""

    def add_control_routes(self, app: web.Application) -> None:
        app.router.add_get("/_emulator", self._info)
        app.router.add_get("/_emulator/calls", self._list_calls)
        app.router.add_delete("/_emulator/calls", self._clear_calls)
        app.router.add_get("/_emulator/faults", self._list_faults)
        app.router.add_post("/_emulator/faults", self._add_fault)
        app.router.add_delete("/_emulator/faults", self._clear_faults)
        app.router.add_post("/_emulator/send", self._send_from_user)
        app.router.add_post("/_emulator/pages/{page}/token", self._replace_token)

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response({
            "emulator": "botpress-py Graph API emulator",
            "pages": [{"id": p.id, "name": p.name, "signsWebhooks": bool(p.app_secret or self.app_secret),
                       "profile": p.profile} for p in self.pages.values()],
            "server": self.server_url,
            "seq": self.last_seq,
            "faults": [f.describe() for f in self.rules],
        })


    async def _replace_token(self, request: web.Request) -> web.Response:
        """``{"token": "..."}``: the Page's access token expires and this one replaces it (the old gets 190)."""
        page = request.match_info["page"]
        try:
            body = await request.json()
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        if page not in self.pages or not isinstance(token, str) or not token:
            return web.json_response({"error": "POST {\"token\": \"...\"} for a known page"}, status=400)
        self.replace_token(page, token)
        return web.json_response({"page": page, "replaced": True})

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

        def found(_: Any) -> list[dict[str, Any]]:
            return self.calls_since(since, psid=psid, page=page)

        if wait and not found(self):
            try:
                await self.wait_for(found, wait)
            except TimeoutError:
                pass
        shown = [shown_call(c) for c in found(self)]
        return web.json_response({"calls": shown, "seq": self.last_seq,
                                  "profiles": {p.id: p.profile for p in self.pages.values()}})

    async def _clear_calls(self, request: web.Request) -> web.Response:
        self.calls.clear()
        return web.json_response({"cleared": True, "seq": self.last_seq})

    async def _list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.describe() for f in self.rules],
                                  "next": [f.describe() for f in self.planned]})

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
        """``{page?, psid, text | postback | quick_reply | image | react | ... (activity.py), title?, server?, bot?,
        wait?, timeout?, settle?}``.

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
            body, event = self.delivery_for(page_id, psid, spec)  # activity.py
            timeout = float(spec.get("timeout", 10.0))
            settle = float(spec.get("settle", 1.0))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return await self.post_and_answer(
            spec, lambda server: self.post_delivery(server, page_id, body, bot=str(spec.get("bot") or "___")),
            event=event, psid=psid, page_id=page_id, timeout=timeout, settle=settle)

    async def post_and_answer(self, spec: dict[str, Any], post: Callable[[str], Awaitable[tuple[int, str]]], *,
                              event: dict[str, Any], psid: str, page_id: str, timeout: float,
                              settle: float) -> web.Response:
        """Post a user's delivery to the server ``spec`` names (or the emulator's) and answer what the
        ``/_emulator/…/send`` routes answer: the server's status and body, and with ``wait`` the bot's replies."""
        server = str(spec.get("server") or self.server_url or "").rstrip("/")
        if not server:
            return web.json_response({"error": "no server to post to: start the emulator with --server URL "
                                               "or give \"server\" in the request"}, status=400)
        since = self.last_seq
        try:
            status, text = await post(server)
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.json_response({"error": f"no server answers at {server}: {exc or type(exc).__name__}"},
                                     status=502)
        answer: dict[str, Any] = {"status": status, "body": text, "event": event, "since": since}
        if spec.get("wait") and status == 200:
            collector = ReplyCollector(psid, page_id, timeout=timeout, settle=settle)
            await self.collect(collector, since)
            answer["replies"] = [shown_call(c) for c in collector.records]
            answer["timedOut"] = not collector.got_reply
        return web.json_response(answer)
