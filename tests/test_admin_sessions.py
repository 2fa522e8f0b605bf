"""Admin page sessions over HTTP: cookie flags, CSRF and origin checks, expiry, logout, throttled logins."""

from __future__ import annotations

import logging
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from botpress_py.admin_sessions import FAILURE_BURST, AdminSessions, FailureThrottle
from botpress_py.testing import make_bot, run_server, wait_for

from .admin_support import COOKIE, TOKEN, call, cookie_session, login

FOREIGN = "https://evil.example"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def attributes(set_cookie: str) -> dict[str, Any]:
    parsed = SimpleCookie()
    parsed.load(set_cookie)
    [(_, morsel)] = parsed.items()
    return {key: morsel[key] for key in ("httponly", "secure", "samesite", "path", "max-age", "domain")}


async def test_login_sets_a_strict_httponly_cookie_that_never_holds_the_token(data_dir: Path, env: dict) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, cookie_session() as s:
        status, body = await call(s, "GET", f"{srv.url}/admin/session")
        assert (status, body) == (200, {"authenticated": False})
        session = await login(s, srv.url)
        assert session.cookie_name == COOKIE and TOKEN not in session.set_cookie
        flags = attributes(session.set_cookie)
        assert flags["httponly"] is True and flags["samesite"] == "Strict" and flags["path"] == "/"
        assert not flags["secure"] and not flags["domain"]  # the external URL is http
        assert flags["max-age"] == str(8 * 3600)  # admin.sessionLifetime's default
        status, body = await call(s, "GET", f"{srv.url}/admin/session", session.headers(csrf=False))
        assert status == 200 and body["authenticated"] and body["csrf"] == session.csrf
        # the cookie alone reads the admin API (what the page does)
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots", session.headers(csrf=False, origin=None))
        assert status == 200 and "alpha" in body["bots"]


async def test_the_cookie_is_secure_and_host_bound_when_the_external_url_is_https(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN},
                          httpServer={"externalUrl": "https://bots.example.com"}) as srv, cookie_session() as s:
        session = await login(s, srv.url)
        assert session.cookie_name == "__Host-bp-admin-session"
        flags = attributes(session.set_cookie)
        assert flags["secure"] is True and flags["httponly"] is True and flags["path"] == "/"
        # behind a proxy the browser's Origin is the external URL's
        status, _ = await call(s, "POST", f"{srv.url}/admin/logout",
                               session.headers(origin="https://bots.example.com"))
        assert status == 200


async def test_state_changes_need_the_csrf_token_and_this_servers_origin(data_dir: Path, env: dict) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN}) as srv, cookie_session() as s:
        session = await login(s, srv.url)
        disable = f"{srv.url}/api/v1/admin/bots/alpha/disable"
        refusals = [
            (session.headers(csrf=False), "missing or invalid CSRF token"),
            ({**session.headers(), "X-CSRF-Token": session.csrf[:-2] + "xx"}, "missing or invalid CSRF token"),
            (session.headers(origin=FOREIGN), "cross-site request refused"),
            (session.headers(origin="null"), "cross-site request refused"),
            ({**session.headers(origin=None), "Sec-Fetch-Site": "cross-site"}, "cross-site request refused"),
            ({**session.headers(origin=None), "Sec-Fetch-Site": "same-site"}, "cross-site request refused"),
        ]
        for headers, error in refusals:
            status, body = await call(s, "POST", disable, headers)
            assert (status, body["error"]) == (403, error), headers
        assert srv.registry.records["alpha"].state == "mounted"
        # the CSRF token of another session is not this one's
        other = await login(s, srv.url)
        status, _ = await call(s, "POST", disable, {**session.headers(), "X-CSRF-Token": other.csrf})
        assert status == 403 and srv.registry.records["alpha"].state == "mounted"

        status, body = await call(s, "POST", disable, session.headers())
        assert status == 200 and body["state"] == "disabled"
        status, body = await call(s, "POST", f"{srv.url}/api/v1/admin/bots/alpha/enable",
                                  {**session.headers(origin=None), "Sec-Fetch-Site": "same-origin"})
        assert status == 200 and body["state"] == "mounted"
        # the bearer token needs no CSRF token (the command line, scripts): browsers never send it by themselves
        status, body = await call(s, "POST", f"{srv.url}/api/v1/admin/bots/alpha/reload", BEARER)
        assert status == 200
        # a module route that requires the admin token takes the session too, with the same rules
        status, _ = await call(s, "GET", f"{srv.url}/api/v1/bots/___/mod/echo/admin-only", session.headers(csrf=False))
        assert status == 200


async def test_a_login_posted_by_another_site_is_refused(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, cookie_session() as s:
        for headers in ({"Origin": FOREIGN}, {"Sec-Fetch-Site": "cross-site"}):
            async with s.post(f"{srv.url}/admin/login", json={"token": TOKEN}, headers=headers) as r:
                assert r.status == 403 and "Set-Cookie" not in r.headers
                assert (await r.json())["error"] == "cross-site request refused"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"token": 5}', b'{"token": ""}', b"{}"])
async def test_a_login_without_a_token_string_is_a_clear_400(data_dir: Path, env: dict, body: bytes) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, cookie_session() as s:
        status, answer = await call(s, "POST", f"{srv.url}/admin/login", {"Content-Type": "application/json"},
                                    data=body)
        assert status == 400 and answer["field"] == "token" and "token" in answer["error"]


async def test_a_session_expires_after_its_lifetime(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN, "sessionLifetime": "1s"}) as srv, \
            cookie_session() as s:
        session = await login(s, srv.url)
        assert attributes(session.set_cookie)["max-age"] == "1"
        assert (await call(s, "GET", f"{srv.url}/admin/session", session.headers()))[1]["authenticated"] is True

        async def expired() -> bool:
            return (await call(s, "GET", f"{srv.url}/admin/session", session.headers()))[1]["authenticated"] is False

        await wait_for(expired, 5)
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots", session.headers())
        assert status == 401 and body["error"] == "admin session expired or invalid" and "/admin" in body["hint"]


async def test_logout_ends_the_session_for_every_copy_of_the_cookie_even_after_a_restart(data_dir: Path,
                                                                                         env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, cookie_session() as s:
        kept = await login(s, srv.url)
        ended = await login(s, srv.url)
        status, _ = await call(s, "POST", f"{srv.url}/admin/logout", ended.headers(csrf=False))
        assert status == 403  # a logout is a state change: CSRF token needed
        async with s.post(f"{srv.url}/admin/logout", headers=ended.headers()) as r:
            assert r.status == 200
            cleared = SimpleCookie()
            cleared.load(r.headers["Set-Cookie"])
            assert cleared[COOKIE].value == "" and cleared[COOKIE]["max-age"] == "0"
        assert (await call(s, "GET", f"{srv.url}/api/v1/admin/bots", ended.headers()))[0] == 401
        assert (await call(s, "GET", f"{srv.url}/api/v1/admin/bots", kept.headers()))[0] == 200
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, cookie_session() as s:
        # the signing key and the logout outlive the process
        assert (await call(s, "GET", f"{srv.url}/api/v1/admin/bots", kept.headers()))[0] == 200
        assert (await call(s, "GET", f"{srv.url}/api/v1/admin/bots", ended.headers()))[0] == 401
    key = data_dir / "secrets" / "admin-sessions.key"
    assert key.stat().st_mode & 0o777 == 0o600


async def test_changing_the_admin_token_ends_every_session(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, cookie_session() as s:
        session = await login(s, srv.url)
    async with run_server(data_dir, env, modules=[], admin={"token": "a-new-token"}) as srv, cookie_session() as s:
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots", session.headers())
        assert status == 401 and body["error"] == "admin session expired or invalid"


@pytest.mark.parametrize("tamper", ["expiry", "id", "signature", "shape"])
async def test_a_forged_cookie_is_refused(data_dir: Path, env: dict, tamper: str) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, cookie_session() as s:
        session = await login(s, srv.url)
        sid, expires, mac = session.cookie.split(".")
        forged = {"expiry": f"{sid}.{int(expires) + 86400}.{mac}", "id": f"A{sid[1:]}.{expires}.{mac}",
                  "signature": f"{sid}.{expires}.{mac[::-1]}", "shape": f"{sid}.{expires}"}[tamper]
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots", {"Cookie": f"{COOKIE}={forged}"})
        assert status == 401 and body["error"] == "admin session expired or invalid"


async def test_wrong_tokens_are_throttled_per_address_and_never_logged(data_dir: Path, env: dict,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, cookie_session() as s:
        for attempt in range(FAILURE_BURST):
            guess = f"guess-number-{attempt}"
            if attempt % 2:  # wrong bearer tokens count too: the same guessing by another door
                status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots",
                                          {"Authorization": f"Bearer {guess}"})
            else:
                status, body = await call(s, "POST", f"{srv.url}/admin/login", {"Origin": srv.url},
                                          json={"token": guess})
            assert (status, body["error"]) == (403, "invalid admin token")
        async with s.post(f"{srv.url}/admin/login", json={"token": TOKEN}, headers={"Origin": srv.url}) as r:
            # even the right token: a throttle that lets a right guess through is no throttle
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1 and "Set-Cookie" not in r.headers
        status, _ = await call(s, "GET", f"{srv.url}/api/v1/admin/bots", BEARER)
        assert status == 429
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused" in logged and "127.0.0.1" in logged
    assert "guess-number" not in logged and TOKEN not in logged


def test_the_throttle_counts_each_address_apart_and_refills() -> None:
    now = [0.0]
    throttle = FailureThrottle(burst=3, refill=10.0, clock=lambda: now[0], max_addresses=2)
    for _ in range(3):
        assert throttle.wait("a") == 0
        throttle.failed("a")
    assert throttle.wait("a") == pytest.approx(10.0)
    assert throttle.wait("b") == 0  # another address is not held back
    now[0] = 10.0
    assert throttle.wait("a") == 0  # one more try after a refill period
    throttle.failed("a")
    assert throttle.wait("a") > 0
    throttle.failed("b")
    throttle.failed("c")  # bounded memory: the least recently failed address is forgotten
    assert throttle.wait("a") == 0


def test_a_session_signed_for_another_token_or_key_is_not_valid() -> None:
    token = ["first"]
    sessions = AdminSessions(b"k" * 32, lambda: token[0], 3600, secure=False, clock=lambda: 1_000.0)
    value, session = sessions.issue()
    assert sessions.verify(value) == session
    assert AdminSessions(b"x" * 32, lambda: "first", 3600, secure=False, clock=lambda: 1_000.0).verify(value) is None
    token[0] = "second"
    assert sessions.verify(value) is None
    assert not sessions.check_csrf(session, None) and not sessions.check_csrf(session, "")


async def test_the_admin_page_is_a_static_shell_with_a_strict_content_security_policy(data_dir: Path,
                                                                                     env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, \
            aiohttp.ClientSession() as s:
        async with s.get(f"{srv.url}/admin") as r:
            page = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
            assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
            etag = r.headers["ETag"]
        assert "<script>" not in page and "http" not in page.replace("http-equiv", "")  # nothing inline, no CDN
        async with s.get(f"{srv.url}/admin", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        for name, kind in (("admin.js", "text/javascript"), ("admin.css", "text/css"), ("icon.svg", "image/svg+xml")):
            async with s.get(f"{srv.url}/admin/assets/{name}") as r:
                assert r.status == 200 and r.content_type == kind, name
        for missing in ("nope.js", "index.html", "..%2F__init__.py"):
            async with s.get(f"{srv.url}/admin/assets/{missing}") as r:
                assert r.status == 404, missing
        async with s.get(f"{srv.url}/admin/", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/admin"


@given(st.text(max_size=300))
def test_any_cookie_value_from_outside_is_refused_without_an_error(value: str) -> None:
    sessions = AdminSessions(b"k" * 32, lambda: TOKEN, 3600, secure=False)
    assert sessions.verify(value) is None
