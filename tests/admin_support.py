"""What the admin page tests share: logging in over HTTP and calling admin routes with the session."""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import aiohttp

TOKEN = "admin-page-test-token"
COOKIE = "bp-admin-session"


@dataclass
class Login:
    """A logged-in admin page session: its cookie (as the browser keeps it) and CSRF token."""

    url: str
    cookie_name: str
    cookie: str
    csrf: str
    set_cookie: str  # the raw Set-Cookie header of the login

    def headers(self, *, csrf: bool = True, origin: str | None = "same") -> dict[str, str]:
        headers = {"Cookie": f"{self.cookie_name}={self.cookie}"}
        if csrf:
            headers["X-CSRF-Token"] = self.csrf
        if origin == "same":
            headers["Origin"] = self.url
        elif origin is not None:
            headers["Origin"] = origin
        return headers


def cookie_session() -> aiohttp.ClientSession:
    # Cookies go in headers by hand: the tests check what the server sets, not what a jar keeps.
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


async def login(s: aiohttp.ClientSession, url: str, token: str = TOKEN, **headers: str) -> Login:
    async with s.post(f"{url}/admin/login", json={"token": token}, headers={"Origin": url, **headers}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
        raw = r.headers["Set-Cookie"]
    parsed = SimpleCookie()
    parsed.load(raw)
    [(name, morsel)] = parsed.items()
    return Login(url, name, morsel.value, body["csrf"], raw)


async def call(s: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str] | None = None,
               **kwargs: Any) -> tuple[int, Any]:
    async with s.request(method, url, headers=headers or {}, **kwargs) as r:
        try:
            body = await r.json(content_type=None)
        except ValueError:
            body = await r.text()
        return r.status, body
