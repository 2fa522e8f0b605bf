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

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        if not path.startswith("/"):
            path = "/" + path
        regex = "^" + _PARAM.sub(r"(?P<\1>[^/]+)", re.escape(path).replace(r"\{", "{").replace(r"\}", "}")) + "$"
        self._routes.append(_Route(method.upper(), path, re.compile(regex), handler))

    def add_get(self, path: str, handler: Handler) -> None:
        self.add_route("GET", path, handler)

    def add_post(self, path: str, handler: Handler) -> None:
        self.add_route("POST", path, handler)

    def add_delete(self, path: str, handler: Handler) -> None:
        self.add_route("DELETE", path, handler)

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], set[str]]:
        """The handler for ``method path`` and its params, or None and the methods the path allows."""
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
