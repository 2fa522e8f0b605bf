"""Who may call admin routes: a bearer token (the command line, scripts) or an admin page session.

- ``Authorization: Bearer <token>``: compared in constant time; wrong tokens are counted per
  client address and, past the throttle, refused with 429 before any comparison.
- The session cookie of the admin page (admin_sessions.py): on every state change (any method
  but GET/HEAD/OPTIONS) the request must carry the session's CSRF token in ``X-CSRF-Token``,
  and its ``Origin`` (when the browser sends one, as every browser does for such requests)
  must be this server's. A WebSocket upgrade is a GET but acts for the session from then on:
  it needs the same origin and the CSRF token (in ``?csrf=``, the browser API has no headers).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from .admin_sessions import CSRF_HEADER, AdminSessions, FailureThrottle, KeyValue, Session
from .admin_token import AdminToken, RestartCheck, server_token, token_file
from .config.server_config import ServerConfig, parse_duration
from .logthrottle import LogThrottle
from .secretfiles import load_or_create_secret

log = logging.getLogger("botpress_py.admin")

SESSION_KEY_FILE = Path("secrets") / "admin-sessions.key"
DEFAULT_SESSION_LIFETIME = "8h"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TOKEN_CHARS = 1000
# Set on a request an admin session authorised (the page's own routes read it back).
SESSION: Any = (web.RequestKey("botpress_py.admin_session", Session) if hasattr(web, "RequestKey")
                else "botpress_py.admin_session")


def _json(status: type[web.HTTPException], body: dict[str, Any], **kwargs: Any) -> web.HTTPException:
    return status(text=web.json_response(body).text, content_type="application/json", **kwargs)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


class AdminAuth:
    def __init__(self, token: AdminToken, sessions: AdminSessions, *, external_url: Callable[[], str],
                 restart: RestartCheck | None = None, throttle: FailureThrottle | None = None,
                 log_throttle: LogThrottle | None = None) -> None:
        self.token = token
        self.sessions = sessions
        self._external_url = external_url
        self._restart = restart
        self.throttle = throttle or FailureThrottle()
        self._log_throttle = log_throttle or LogThrottle()

    # -- the check every admin route calls -----------------------------------------------------------
    def check(self, request: web.Request) -> None:
        """Return when the request may use admin routes; raise 401/403/429 otherwise."""
        if not self.token.value:
            raise _json(web.HTTPForbidden, {"error": "the admin API is disabled: no admin token is available",
                                            "hint": "set admin.token in data/global/botpress.config.json or "
                                                    "the BP_ADMIN_TOKEN environment variable"})
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is not None:
            self._check_bearer(request, header)
            return
        cookie = request.cookies.get(self.sessions.cookie_name)
        if cookie is not None:
            request[SESSION] = self.session_for_change(request, cookie)
            return
        raise web.HTTPUnauthorized(
            text=web.json_response({"error": "missing admin token",
                                    "hint": "send the header 'Authorization: Bearer <token>', or log in at "
                                            "/admin"}).text,
            content_type="application/json", headers={"WWW-Authenticate": "Bearer"})

    def _check_bearer(self, request: web.Request, header: str) -> None:
        scheme, _, given = header.partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise web.HTTPUnauthorized(
                text=web.json_response({"error": "missing admin token",
                                        "hint": "send the header 'Authorization: Bearer <token>'"}).text,
                content_type="application/json", headers={"WWW-Authenticate": "Bearer"})
        self.refuse_if_throttled(request)
        if not self.matches(given):
            self.refused(request, "a wrong admin token")
            raise _json(web.HTTPForbidden, self.wrong_token_body(given))

    def matches(self, given: str) -> bool:
        # compare_digest keeps the comparison time independent of where the strings differ.
        return len(given) <= MAX_TOKEN_CHARS and hmac.compare_digest(given.encode(), self.token.value.encode())

    def refuse_if_throttled(self, request: web.Request) -> None:
        wait = self.throttle.wait(request.remote or "")
        if wait > 0:
            seconds = max(1, round(wait))
            raise _json(web.HTTPTooManyRequests,
                        {"error": "too many wrong admin tokens from this address", "retryAfter": seconds,
                         "hint": f"wait {seconds} s; every wrong token adds to the wait"},
                        headers={"Retry-After": str(seconds)})

    def refused(self, request: web.Request, what: str) -> None:
        """Count a failed attempt and log it (at most once a minute per address; never the token)."""
        address = request.remote or "unknown"
        self.throttle.failed(address)
        self._log_throttle.log(log, logging.WARNING, ("admin-refused", address),
                               "admin: refused %s from %s", what, address)

    def wrong_token_body(self, given: str) -> dict[str, Any]:
        upcoming = self._restart.needs_restart(given) if self._restart is not None else None
        if upcoming is not None:
            return {"error": "invalid admin token", "restartNeeded": True, "tokenSource": self.token.source,
                    "hint": f"this server still uses {self.token.describe()}, read when it started; the token "
                            f"sent is {upcoming.describe()}, which applies after a restart: restart the server"}
        return {"error": "invalid admin token", "restartNeeded": False, "tokenSource": self.token.source,
                "hint": f"this server uses {self.token.describe()} (read when it started); on the server, "
                        "'botpress-py admin token' prints the token a command would send"}

    # -- sessions ------------------------------------------------------------------------------------
    def session_of(self, request: web.Request) -> Session | None:
        cookie = request.cookies.get(self.sessions.cookie_name)
        return self.sessions.verify(cookie) if cookie else None

    def session_for_change(self, request: web.Request, cookie: str) -> Session:
        session = self.sessions.verify(cookie)
        if session is None:
            raise _json(web.HTTPUnauthorized, {"error": "admin session expired or invalid",
                                               "hint": "log in again at /admin"})
        upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if request.method in SAFE_METHODS and not upgrade:
            return session
        self.require_same_origin(request)
        given = request.query.get("csrf") if upgrade else request.headers.get(CSRF_HEADER)
        if not self.sessions.check_csrf(session, given):
            raise _json(web.HTTPForbidden, {"error": "missing or invalid CSRF token",
                                            "hint": f"send the {CSRF_HEADER} header the admin page got at login "
                                                    "(GET /admin/session)"})
        return session

    def own_origins(self, request: web.Request) -> set[str]:
        """This server's origins: its external URL's, and the one the request was sent to."""
        found = {origin_of(self._external_url())}
        if request.host:
            found.add(f"{request.scheme}://{request.host}".lower())
        return found - {""}

    def require_same_origin(self, request: web.Request) -> None:
        """Refuse a browser request sent by another site's page."""
        origin = request.headers.get(hdrs.ORIGIN)
        fetch_site = request.headers.get("Sec-Fetch-Site")
        foreign = (origin is not None and origin.lower() not in self.own_origins(request)) or \
            (fetch_site is not None and fetch_site not in ("same-origin", "none"))
        if foreign:
            raise _json(web.HTTPForbidden, {"error": "cross-site request refused", "origin": (origin or "")[:200],
                                            "hint": "admin sessions act only from this server's own pages"})

    def session_alive(self, request: web.Request) -> bool:
        """Whether a request authorised by a session still has it (not logged out, not expired);
        True for a bearer token."""
        if request.get(SESSION) is None:
            return True
        return self.session_of(request) is not None


async def build_admin_auth(data_dir: Path, env: Mapping[str, str], config: ServerConfig, kv: KeyValue, *,
                           external_url: Callable[[], str], log_throttle: LogThrottle) -> AdminAuth:
    """The server's admin token (generated into the data folder when none is set) and sessions.

    Raises ValueError naming the file when a token or key file cannot be used.
    """
    token = server_token(data_dir, env, config.data.get("admin", {}).get("token", ""))
    if token.source == "file":
        log.info("admin token: %s (print it with 'botpress-py admin token'; log in at %s/admin)",
                 token_file(data_dir), external_url())
    admin = config.data.get("admin", {})
    sessions = AdminSessions(load_or_create_secret(data_dir / SESSION_KEY_FILE), lambda: token.value,
                             parse_duration(admin.get("sessionLifetime", DEFAULT_SESSION_LIFETIME)),
                             secure=config.external_url().lower().startswith("https://"))
    await sessions.load_revoked(kv)
    return AdminAuth(token, sessions, external_url=external_url,
                     restart=RestartCheck(data_dir, env, config.file, token), log_throttle=log_throttle)
