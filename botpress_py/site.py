"""What modules serve outside ``/api``: their static files and the site pages they claim.

- ``GET /assets/modules/<module>/<path>`` serves a file of the module's ``assets/`` folder.
- ``ServerContext.site_router`` lets a module claim site-level paths (a chat page at
  ``/s/{botId}``, say). Core routes always win: aiohttp tries them first, and a path whose
  first segment the core uses (``/api``, ``/assets``, ``/status``...) is refused when the
  module claims it. Two modules claiming the same path: the first one (module order) keeps
  it, the second one's route is refused. Every refusal is logged and shown in ``/status``.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from aiohttp import web

from .admin import json_error
from .routing import Handler, ModuleRouter

log = logging.getLogger(__name__)

# Short enough that an upgraded module reaches browsers soon; ETag / Last-Modified make the
# revalidation after it a cheap 304.
ASSET_CACHE_CONTROL = "public, max-age=300"

# mimetypes depends on the machine's /etc/mime.types: pin the types browsers are strict about
# (a script or stylesheet served as text/plain is refused under nosniff).
_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".mp3": "audio/mpeg",
}

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]*$")


def content_type_for(path: Path) -> str:
    known = _CONTENT_TYPES.get(path.suffix.lower())
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def safe_asset_path(base: Path, relative: str) -> Path | None:
    """``base/relative`` when every segment is a plain name (no ``..``, no hidden file, no
    backslash) and the resolved file stays inside ``base`` (no symlink out); else None."""
    parts = relative.split("/")
    if not parts or any(not _SAFE_SEGMENT.match(part) for part in parts):
        return None
    candidate = base.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
        root = base.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if root not in resolved.parents or not resolved.is_file():
        return None
    return resolved


class ModuleAssets:
    """``GET /assets/modules/{module}/{path}`` from each module's ``assets/`` folder."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self._folders = folders

    async def handle(self, request: web.Request) -> web.StreamResponse:
        module, relative = request.match_info["module"], request.match_info["path"]
        base = self._folders.get(module)
        if base is None:
            raise json_error(web.HTTPNotFound, f"no assets for module {module!r}",
                             hint="a module serves the files of its assets/ folder")
        # resolve() and stat() touch the disk: off the event loop.
        path = await asyncio.to_thread(safe_asset_path, base, relative)
        if path is None:
            raise json_error(web.HTTPNotFound, "no such asset", module=module, path=relative)
        return web.FileResponse(path, headers={
            "Content-Type": content_type_for(path),
            "Cache-Control": ASSET_CACHE_CONTROL,
            "X-Content-Type-Options": "nosniff",
        })


class SiteRouter(ModuleRouter):
    """A module's site-level routes (``server.site_router``): absolute paths such as ``/s/{botId}``.

    A route that clashes with the core or with another module is not added; the problem is
    reported (log and ``/status``) instead of failing the module's hook.
    """

    def __init__(self, claim: Callable[[str, str], str | None]) -> None:
        super().__init__()
        self._claim = claim

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        if not path.startswith("/"):
            path = "/" + path
        if self._claim(method.upper(), path) is None:
            super().add_route(method, path, handler)


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/")


def _is_param(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _overlap(a: str, b: str) -> bool:
    """Whether some URL matches both route patterns ({param} matches one segment)."""
    sa, sb = _segments(a), _segments(b)
    return len(sa) == len(sb) and all(x == y or _is_param(x) or _is_param(y) for x, y in zip(sa, sb, strict=True))


class SitePages:
    """The site routers of every module, and the catch-all handler that serves them."""

    def __init__(self, report: Callable[[str, str], None]) -> None:
        self._report = report
        self.routers: dict[str, SiteRouter] = {}
        self._claims: list[tuple[str, str, str]] = []  # (module, method, path) accepted so far
        self.reserved: set[str] = set()

    def reserve_core_paths(self, canonicals: Iterable[str]) -> None:
        """The first path segments core routes use: a module may not claim paths under them."""
        for canonical in canonicals:
            first = re.split(r"[/{]", canonical.lstrip("/"), maxsplit=1)[0]
            if first:
                self.reserved.add(first)

    def router_for(self, module: str) -> SiteRouter:
        router = self.routers.get(module)
        if router is None:
            router = self.routers[module] = SiteRouter(lambda method, path: self._claim(module, method, path))
        return router

    def _claim(self, module: str, method: str, path: str) -> str | None:
        first = _segments(path)[0]
        problem = None
        if first in self.reserved:
            problem = f"site route {method} {path} refused: /{first} is served by the core"
        else:
            for owner, owner_method, owner_path in self._claims:
                if owner_method == method and _overlap(owner_path, path):
                    problem = f"site route {method} {path} refused: module {owner} already serves {owner_path}"
                    break
        if problem is None:
            self._claims.append((module, method, path))
            return None
        log.error("module %s: %s", module, problem)
        self._report(module, problem)
        return problem

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Any path no core route served: the first module route that matches it, in module order."""
        allowed: set[str] = set()
        for router in self.routers.values():
            handler, params, methods = router.resolve(request.method, request.path)
            if handler is not None:
                if params:
                    request.match_info.update(params)
                return await handler(request)
            allowed |= methods
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
        raise json_error(web.HTTPNotFound, "not found", path=request.path)
