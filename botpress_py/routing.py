"""Per-module HTTP routers mounted under ``/api/v1/bots/{botId}/mod/{module}/``.

One aiohttp route serves every bot; it looks the bot and module up at request time. That
way mounting or unmounting one bot only swaps an entry in a dict: aiohttp's own router
(which cannot remove routes) is never touched, and requests to other bots never wait.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(slots=True)
class _Route:
    method: str
    path: str
    pattern: re.Pattern[str]
    handler: Handler


class ModuleRouter:
    """Routes of one module for one bot (or for ``___``, the any-bot router).

    Paths are relative to the module's mount point: ``"/webhook"`` or ``"/users/{id}"``;
    ``{name}`` parameters land in ``request.match_info``.
    """

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        # (method, path) -> handler for routes without {params}: one dict lookup for the hot
        # path (a webhook), before trying the patterns in order.
        self._exact: dict[tuple[str, str], Handler] = {}

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        if not path.startswith("/"):
            path = "/" + path
        regex = "^" + _PARAM.sub(r"(?P<\1>[^/]+)", re.escape(path).replace(r"\{", "{").replace(r"\}", "}")) + "$"
        method = method.upper()
        key = (method, path)
        # A path without {params} goes in the exact map, unless a route added before it already
        # answers it (the first match wins, as in the ordered search below).
        if not _PARAM.search(path) and key not in self._exact and not any(
                r.pattern.match(path) and (r.method == method or (method == "HEAD" and r.method == "GET"))
                for r in self._routes):
            self._exact[key] = handler
        self._routes.append(_Route(method, path, re.compile(regex), handler))

    def add_get(self, path: str, handler: Handler) -> None:
        self.add_route("GET", path, handler)

    def add_post(self, path: str, handler: Handler) -> None:
        self.add_route("POST", path, handler)

    def add_delete(self, path: str, handler: Handler) -> None:
        self.add_route("DELETE", path, handler)

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], set[str]]:
        """The handler for ``method path`` and its params, or None and the methods the path allows."""
        exact = self._exact.get((method, path))
        if exact is not None:
            return exact, {}, set()
        allowed: set[str] = set()
        for route in self._routes:
            match = route.pattern.match(path)
            if not match:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route.handler, match.groupdict(), allowed
            allowed.add(route.method)
        return None, {}, allowed

    def __len__(self) -> int:
        return len(self._routes)
