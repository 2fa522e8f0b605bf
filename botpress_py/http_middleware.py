"""The one aiohttp middleware: count the request, refuse an oversized body, apply CORS, and turn a
body that cannot be read into a clear answer instead of a 500.

CORS by route (docs/configuration.md, "HTTP limits, CORS and shutdown"):

- channel routes (``/api/v1/bots/...``), the only ones meant for browsers, follow
  ``httpServer.cors``; a preflight may ask only for a fixed list of headers (no Authorization);
- admin routes (``/api/v1/admin...``, and any request whose handler checked the admin token with
  ``require_admin``) get CORS headers only for an origin listed in ``admin.cors.origins``;
- every other route (``/status``, ``/metrics``) gets none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from .admin import json_error
from .connections import log_malformed
from .core_metrics import CoreMetrics
from .log_context import REQUEST_ID_HEADER, acked_channels, request_scope, sane_request_id
from .logthrottle import LogThrottle

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/api/v1/admin"
CHANNEL_PREFIX = "/api/v1/bots/"
# Set on a request whose handler checked the admin token: its answer gets admin CORS rules.
# (A typed key from aiohttp 3.14 on, which warns about plain strings; a string before.)
ADMIN_REQUEST: Any = (web.RequestKey("botpress_py.admin_request", bool) if hasattr(web, "RequestKey")
                      else "botpress_py.admin_request")
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
CHANNEL_HEADERS = "Content-Type"
ADMIN_HEADERS = "Authorization, Content-Type"


def marking_admin_check(check: Callable[[web.Request], None]) -> Callable[[web.Request], None]:
    """The admin check, remembering on the request that its route is an admin route."""

    def checked(request: web.Request) -> None:
        request[ADMIN_REQUEST] = True
        check(request)

    return checked


@dataclass(frozen=True)
class CorsPolicy:
    channel_origin: str | None  # httpServer.cors.origin, None when httpServer.cors is off
    admin_origins: frozenset[str]

    def add_headers(self, request: web.Request, headers: Any) -> None:
        """Access-Control headers of an actual (not preflight) answer. Only a request with an Origin
        header can be a browser's cross-origin one: a webhook (the hot path) has none and costs one
        header lookup."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return
        path = request.path
        if path.startswith(ADMIN_PREFIX) or request.get(ADMIN_REQUEST):
            if origin in self.admin_origins:
                headers["Access-Control-Allow-Origin"] = origin
                headers["Vary"] = "Origin"
        elif self.channel_origin is not None and path.startswith(CHANNEL_PREFIX):
            headers["Access-Control-Allow-Origin"] = self.channel_origin

    def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        path = request.path
        admin_origin = origin in self.admin_origins
        if admin_origin and (path.startswith(ADMIN_PREFIX) or path.startswith(CHANNEL_PREFIX)):
            # Channel routes too: some of them (Messenger's notify, ...) are admin routes that only
            # the handler knows of; Authorization is allowed for listed origins only.
            return _preflight_answer(origin, ADMIN_HEADERS, vary=True)
        if path.startswith(CHANNEL_PREFIX) and self.channel_origin is not None:
            return _preflight_answer(self.channel_origin, CHANNEL_HEADERS, vary=bool(self.admin_origins))
        if path.startswith(ADMIN_PREFIX):
            hint = "list the origin in admin.cors.origins of botpress.config.json"
        else:
            hint = ("only channel routes (/api/v1/bots/...) answer cross-origin requests"
                    + ("" if self.channel_origin is not None else ", with httpServer.cors.enabled"))
        raise json_error(web.HTTPForbidden, "cross-origin request refused", origin=origin[:200], hint=hint)


def _preflight_answer(allow_origin: str, allow_headers: str, *, vary: bool) -> web.Response:
    response = web.Response(status=204)
    response.headers["Access-Control-Allow-Origin"] = allow_origin
    response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
    response.headers["Access-Control-Allow-Headers"] = allow_headers
    response.headers["Access-Control-Max-Age"] = "600"
    if vary:
        response.headers["Vary"] = "Origin"
    return response


def _reason(exc: web.RequestPayloadError) -> str:
    cause = exc.__cause__
    text = getattr(cause, "message", None) or str(cause or exc)
    return " ".join(str(text).split())[:200]


def http_middleware(metrics: CoreMetrics, limit: int, limit_text: str, cors: CorsPolicy, throttle: LogThrottle) -> Any:
    """One middleware rather than several because every aiohttp middleware is another coroutine per
    request, and the webhook is the hot path (bench/: a few per cent of the ingest rate)."""

    def too_large(request: web.Request) -> web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(
            max_size=limit, actual_size=request.content_length or 0, content_type="application/json",
            text=web.json_response({"error": "request body too large", "limit": limit_text,
                                    "hint": "raise httpServer.bodyLimit in botpress.config.json"}).text)

    @web.middleware
    async def http(request: web.Request, handler: Any) -> web.StreamResponse:
        # One coroutine for everything: the webhook is the hot path, and each coroutine layer
        # costs about a microsecond per request.
        metrics.http_requests.inc()
        started = time.monotonic()
        request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER))
        preflight = request.method == "OPTIONS" and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        # The scope is reset when the request ends: the next request on a kept-alive connection
        # runs in the same task and must not inherit this one's id.
        with request_scope(request_id) as fields:
            try:
                if preflight:
                    response: web.StreamResponse = cors.preflight(request)
                else:
                    # Refuse on the declared length before any handler runs; chunked bodies are
                    # capped by client_max_size when read.
                    length = request.content_length
                    if length is not None and length > limit:
                        raise too_large(request)
                    response = await handler(request)
                    cors.add_headers(request, response.headers)
            except web.HTTPException as exc:
                if not preflight:  # a refused preflight gets no CORS headers
                    cors.add_headers(request, exc.headers)
                exc.headers[REQUEST_ID_HEADER] = request_id
                raise
            except web.RequestPayloadError as exc:
                # A body that cannot be decoded (bad gzip, ...): the client's fault, answered 400. The
                # connection closes after the answer, and the body is marked finished so that aiohttp
                # does not try to drain it (and report the same error as unhandled).
                log_malformed(throttle, request.remote, exc)
                request.content.feed_eof()
                error = json_error(web.HTTPBadRequest, "malformed request body", reason=_reason(exc))
                error.force_close()
                cors.add_headers(request, error.headers)
                error.headers[REQUEST_ID_HEADER] = request_id
                raise error from None
            except ConnectionResetError:
                if request.transport is not None:
                    raise  # not this request's connection: a real error of the handler
                # The client went away (or was closed for a late body) while its body was read: there
                # is nobody to answer, and nothing the operator can act on.
                log.debug("client %s closed the connection while its request was read", request.remote)
                response = web.Response(status=400)
            if not response.prepared:  # a stream (a WebSocket) sent its headers already
                response.headers[REQUEST_ID_HEADER] = request_id
            channels = acked_channels(fields)
            if channels and response.status < 300:
                # It stored incoming events and said so: how long the platform waited for its 200.
                elapsed = time.monotonic() - started
                for channel in channels:
                    metrics.acknowledged(channel, elapsed)
        return response

    return http
