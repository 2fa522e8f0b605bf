"""The admin page, ``GET /admin``: run the server from a browser (docs/admin.md).

A static page (``static/``: plain HTML, CSS and JavaScript, no build step, nothing from a
CDN) that calls the admin API with a session cookie instead of the token:

- ``POST /admin/login`` ``{"token"}`` checks the admin token and sets the session cookie;
- ``GET /admin/session`` says whether the cookie is a live session, with its CSRF token;
- ``POST /admin/logout`` ends the session.

The page builds every text it shows with DOM text nodes (never HTML from data), and is served
with a Content Security Policy that allows scripts from this server only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..admin import json_error
from ..admin_auth import AdminAuth

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
MAX_LOGIN_BODY = 4096


def security_headers(request: web.Request) -> dict[str, str]:
    # Scripts, styles and connections to this server only, and no inline script: even a bug that
    # put bot text into the page as HTML could not run it. The page is never framed (clickjacking).
    host = request.host
    sockets = f" ws://{host} wss://{host}" if host else ""
    return {
        "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                   f"connect-src 'self'{sockets}; font-src 'self'; object-src 'none'; "
                                   "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, _Asset]:
    """Every file of static/, read once at start (a few kB each)."""
    found = {}
    for path in sorted(STATIC.iterdir()):
        if path.is_file() and path.suffix in _TYPES:
            body = path.read_bytes()
            found[path.name] = _Asset(body, _TYPES[path.suffix], f'"{hashlib.sha256(body).hexdigest()[:16]}"')
    return found


class AdminPage:
    def __init__(self, auth: AdminAuth, version: str) -> None:
        self.auth = auth
        self.version = version
        self.assets = _load_assets()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/admin", self.page)
        app.router.add_get("/admin/", self.to_page)
        app.router.add_get("/admin/assets/{name}", self.asset)
        app.router.add_get("/admin/session", self.session)
        app.router.add_post("/admin/login", self.login)
        app.router.add_post("/admin/logout", self.logout)

    async def to_page(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/admin")

    async def page(self, request: web.Request) -> web.Response:
        return self._serve(request, self.assets["index.html"])

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = self.assets.get(name) if name != "index.html" else None
        if found is None:
            raise json_error(web.HTTPNotFound, "no such asset", path=request.path)
        return self._serve(request, found)

    def _serve(self, request: web.Request, asset: _Asset) -> web.Response:
        headers = {**security_headers(request), "ETag": asset.etag}
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers)

    # -- login, session, logout ------------------------------------------------------------------------
    async def session(self, request: web.Request) -> web.Response:
        session = self.auth.session_of(request)
        if session is None:
            return web.json_response({"authenticated": False}, headers={"Cache-Control": "no-store"})
        return web.json_response({"authenticated": True, "csrf": session.csrf, "expiresAt": session.expires * 1000,
                                  "version": self.version}, headers={"Cache-Control": "no-store"})

    async def login(self, request: web.Request) -> web.Response:
        # A login from another site's page would sign the browser in to an attacker's choice.
        self.auth.require_same_origin(request)
        self.auth.refuse_if_throttled(request)
        token = await _token_from(request)
        if not self.auth.matches(token):
            self.auth.refused(request, "an admin page login with a wrong token")
            raise web.HTTPForbidden(text=web.json_response(self.auth.wrong_token_body(token)).text,
                                    content_type="application/json")
        value, session = self.auth.sessions.issue()
        response = web.json_response({"authenticated": True, "csrf": session.csrf,
                                      "expiresAt": session.expires * 1000, "version": self.version},
                                     headers={"Cache-Control": "no-store"})
        sessions = self.auth.sessions
        response.set_cookie(sessions.cookie_name, value, **sessions.cookie_attributes(int(sessions.lifetime)))
        return response

    async def logout(self, request: web.Request) -> web.Response:
        cookie = request.cookies.get(self.auth.sessions.cookie_name)
        if cookie is not None and self.auth.sessions.verify(cookie) is not None:
            session = self.auth.session_for_change(request, cookie)  # same origin and CSRF token
            await self.auth.sessions.revoke(session)
        response = web.json_response({"authenticated": False}, headers={"Cache-Control": "no-store"})
        sessions = self.auth.sessions
        response.set_cookie(sessions.cookie_name, "", expires="Thu, 01 Jan 1970 00:00:00 GMT",
                            **sessions.cookie_attributes(0))
        return response


async def _token_from(request: web.Request) -> str:
    if (request.content_length or 0) > MAX_LOGIN_BODY:
        raise json_error(web.HTTPBadRequest, "login body too large", hint="send {\"token\": \"...\"}")
    try:
        body: Any = await request.json()
    except ValueError:
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise json_error(web.HTTPBadRequest, "expected a JSON object {\"token\": \"<admin token>\"}", field="token")
    return token.strip()
