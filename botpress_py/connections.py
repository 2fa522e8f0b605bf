"""Connection limits of the HTTP listener: a cap on open connections, deadlines for a request's
headers and body, the file descriptor limit, and logs that stay small under a flood.

aiohttp closes a kept-alive connection once it has been idle for ``keepalive_timeout`` (and,
since 3.14, one that has sent no complete request that long after connecting), but it has no
deadline of its own for a request's headers or body, and no cap on connections. Both are added
here around aiohttp's own server, on its public hooks: ``Server`` is the protocol factory
(``__call__``) and hears of each connection (``connection_made``/``connection_lost``), and its
``request_factory`` runs once per request as soon as the headers are parsed. A request whose
body has fully arrived with its headers (the usual case: a webhook POST) costs one dict pop and
no timer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .core_metrics import CoreMetrics
from .logthrottle import LogThrottle

log = logging.getLogger(__name__)

# At least this many descriptors (or a tenth of the limit, if more; at most half of it) stay free
# for storage (SQLite files and threads, a PostgreSQL pool), outgoing Graph API connections (100
# per channel pool), module files and the watcher.
FD_RESERVE = 256
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BUSY_BODY = b'{"error": "too many open connections; retry later"}\n'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float  # seconds; 0: none
    keepalive_timeout: float
    body_timeout: float


def raise_fd_limit() -> int | None:
    """Raise the soft limit of open files to the hard limit; the soft limit in force (None: unknown or
    unlimited)."""
    try:
        import resource
    except ImportError:  # not on this platform (Windows)
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        log.debug("file descriptor limit: unlimited")
        return None
    # An unlimited hard limit cannot become the soft one (the kernel caps it at fs.nr_open).
    targets = [hard] if hard != resource.RLIM_INFINITY else [1 << 20, 1 << 16]
    for target in targets:
        if soft >= target:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        log.debug("file descriptor limit raised from %s to %s (hard limit %s)", soft, target, hard)
        return target
    log.debug("file descriptor limit: %s (hard limit %s)", soft, hard)
    return soft


def fd_reserve(fd_limit: int) -> int:
    return min(max(FD_RESERVE, fd_limit // 10), fd_limit // 2)


def default_max_connections(fd_limit: int | None) -> int:
    """The connection cap when ``httpServer.maxConnections`` is 0: what the fd limit leaves free."""
    if fd_limit is None:
        return 10_000
    return max(1, fd_limit - fd_reserve(fd_limit))


def _one_line(text: str, limit: int = 200) -> str:
    """A parser's message on one line: without the caret line that points into the raw bytes."""
    lines = [line for line in text.splitlines() if line.strip() not in ("", "^")]
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= limit else text[:limit] + "…"


def log_malformed(throttle: LogThrottle, peer: object, exc: BaseException) -> None:
    """One throttled INFO line for a request that breaks HTTP, in its head or in its body's framing
    or encoding: anyone on the internet can send one, and it says nothing is wrong with the server."""
    cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) else exc
    reason = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
    throttle.log(log, logging.INFO, ("malformed", type(cause).__name__),
                 "malformed HTTP request from %s: %s", peer, _one_line(str(reason)))


class ConnectionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's connection logger (its ``logger`` parameter): a malformed request (bad request
    line, invalid header, line too long, a body that cannot be decoded) is one throttled INFO line
    with the peer and the reason instead of an ERROR with a traceback. Everything else goes
    through unchanged."""

    def __init__(self, throttle: LogThrottle) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.throttle = throttle

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, (HttpProcessingError, web.RequestPayloadError)):
            # "Error handling request from %s" names the peer; a body found broken while aiohttp
            # drains it after the answer ("Unhandled exception") does not.
            log_malformed(self.throttle, args[0] if args else "an unknown peer", exc)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


class GuardedServer(web.Server):
    """aiohttp's server with a cap on open connections and deadlines for headers and body."""

    def __init__(self, handler: Any, *, request_factory: Any, limits: ConnectionLimits, metrics: CoreMetrics,
                 throttle: LogThrottle, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._start_request, **kwargs)
        self._app_request_factory = request_factory
        self.limits = limits
        self._metrics = metrics
        self._throttle = throttle
        self._event_loop = asyncio.get_running_loop()
        self._open: set[web.RequestHandler] = set()
        self._header_deadlines: dict[web.RequestHandler, asyncio.TimerHandle] = {}
        self._body_deadlines: dict[web.RequestHandler, asyncio.TimerHandle] = {}

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # -- the cap ---------------------------------------------------------------------------------
    def __call__(self) -> Any:
        # Under a flood, refuse before building a request handler and its parser.
        if len(self._open) >= self.limits.max_connections:
            return _Refused(self)
        return super().__call__()

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        # One accept burst creates several protocols before any connection is made: count here.
        if len(self._open) >= self.limits.max_connections:
            self.refuse(transport)
            handler.force_close()
            return
        super().connection_made(handler, transport)
        self._open.add(handler)
        if self.limits.header_timeout:
            loop = self._event_loop
            self._header_deadlines[handler] = loop.call_at(loop.time() + self.limits.header_timeout,
                                                           self._headers_late, handler)

    def connection_lost(self, handler: web.RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._open.discard(handler)
        for deadlines in (self._header_deadlines, self._body_deadlines):
            timer = deadlines.pop(handler, None)
            if timer is not None:
                timer.cancel()

    def refuse(self, transport: asyncio.BaseTransport) -> None:
        self._metrics.connections_refused.inc()
        self._throttle.log(log, logging.WARNING, "connection-cap",
                           "refusing new connections: %d are open, the cap (httpServer.maxConnections) is %d",
                           len(self._open), self.limits.max_connections)
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_BUSY)
        transport.close()

    # -- deadlines -------------------------------------------------------------------------------
    def _start_request(self, message: Any, payload: Any, protocol: web.RequestHandler, writer: Any,
                       task: Any) -> web.BaseRequest:
        """aiohttp's request factory, called once a request's headers are parsed."""
        timer = self._header_deadlines.pop(protocol, None)
        if timer is not None:
            timer.cancel()
        if self.limits.body_timeout and not payload.is_eof():
            self._watch_body(protocol, payload)
        return self._app_request_factory(message, payload, protocol, writer, task)

    def _watch_body(self, protocol: web.RequestHandler, payload: Any) -> None:
        loop = self._event_loop
        timer = loop.call_at(loop.time() + self.limits.body_timeout, self._body_late, protocol, payload)
        self._body_deadlines[protocol] = timer

        def received() -> None:
            timer.cancel()
            if self._body_deadlines.get(protocol) is timer:
                del self._body_deadlines[protocol]

        payload.on_eof(received)

    def _headers_late(self, handler: web.RequestHandler) -> None:
        if self._header_deadlines.pop(handler, None) is None:
            return
        self._close_late(handler, "no complete request headers within %gs (httpServer.headerTimeout)",
                         self.limits.header_timeout)

    def _body_late(self, handler: web.RequestHandler, payload: Any) -> None:
        self._body_deadlines.pop(handler, None)
        if payload.is_eof() or handler.transport is None:
            return
        self._close_late(handler, "request body not received within %gs (httpServer.bodyTimeout)",
                         self.limits.body_timeout)

    def _close_late(self, handler: web.RequestHandler, why: str, seconds: float) -> None:
        self._metrics.connections_timed_out.inc()
        self._throttle.log(log, logging.INFO, why, "closed the connection from %s: " + why,
                           _peer(handler), seconds)
        handler.force_close()


def _peer(handler: web.RequestHandler) -> str:
    transport = handler.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


class _Refused(asyncio.Protocol):
    """A connection over the cap: answered 503 and closed as soon as it is made."""

    def __init__(self, server: GuardedServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._server.refuse(transport)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner serving through a :class:`GuardedServer` (``_make_server`` is the runner's hook
    for the server it serves with)."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, metrics: CoreMetrics,
                 throttle: LogThrottle, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout, logger=ConnectionLog(throttle), **kwargs)
        self._guard = (limits, metrics, throttle)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup and freezes it
        limits, metrics, throttle = self._guard
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, limits=limits, metrics=metrics,
                             throttle=throttle, **self._kwargs)


class LoopErrorLog:
    """The event loop's exception handler: every kind of report at most once per throttle interval.

    At the file descriptor limit asyncio reports "socket.accept() out of system resource" with a
    traceback for every failed accept, up to the listen backlog each second (CPython keeps looping
    after the error, python/cpython#151615): a gigabyte of log in one run.
    """

    def __init__(self, throttle: LogThrottle, resources: Callable[[], str]) -> None:
        self._throttle = throttle
        self._resources = resources
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._previous = loop, loop.get_exception_handler()
        loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self._loop is not None and self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)
        self._loop = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message") or "unhandled error in the event loop")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES and "accept" in message:
            self._throttle.log(log, logging.ERROR, ("accept", exc.errno),
                               "cannot accept new connections: %s (%s); they wait in the listen backlog "
                               "and accepting is retried every second", exc.strerror or exc, self._resources())
            return
        if isinstance(exc, (ValueError, OSError)) and "_start_serving" in repr(context.get("handle")):
            # One of those retries firing after the listener was closed (at shutdown): nothing to do.
            log.debug("a retry to accept connections ran after the listener closed: %s", exc)
            return
        details = [f"{key}: {value!r}" for key, value in context.items() if key not in ("message", "exception")]
        key = ("loop", message, type(exc).__name__, _one_line(str(exc)) if exc is not None else "")
        self._throttle.log(logging.getLogger("asyncio"), logging.ERROR, key, "%s", "\n".join([message, *details]),
                           exc_info=exc)
