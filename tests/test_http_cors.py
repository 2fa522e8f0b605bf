"""CORS by route: channel routes follow httpServer.cors; admin routes (the admin API and module
routes that check the admin token) answer only origins listed in admin.cors.origins; /status and
/metrics answer none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from botpress_py.testing import make_bot, run_server

TOKEN = "cors-admin-token"
ADMIN_UI = "https://admin.example.com"
FOREIGN = "https://evil.example"
CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods")


def preflight_headers(origin: str, method: str = "GET", headers: str = "authorization") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def preflight(s: aiohttp.ClientSession, url: str, origin: str, **kw: Any) -> aiohttp.ClientResponse:
    async with s.options(url, headers=preflight_headers(origin, **kw)) as r:
        await r.read()
        return r


def no_cors(r: aiohttp.ClientResponse) -> bool:
    return not any(h in r.headers for h in CORS_HEADERS)


async def test_admin_preflight_from_any_origin_gets_no_cors_headers(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN}) as srv, aiohttp.ClientSession() as s:
        for path in ("/api/v1/admin/bots", "/api/v1/admin/bots/alpha/disable", "/api/v1/admin"):
            r = await preflight(s, srv.url + path, FOREIGN, method="POST")
            assert r.status == 403 and no_cors(r), (path, dict(r.headers))
        async with s.get(f"{srv.url}/api/v1/admin/bots", headers={"Origin": FOREIGN,
                                                                  "Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and no_cors(r)  # a browser could not read it


async def test_admin_routes_answer_a_listed_origin_with_fixed_headers(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[], admin={"token": TOKEN, "cors": {"origins": [ADMIN_UI]}}) as srv, \
            aiohttp.ClientSession() as s:
        r = await preflight(s, f"{srv.url}/api/v1/admin/bots", ADMIN_UI, headers="authorization, x-anything")
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == ADMIN_UI and r.headers["Vary"] == "Origin"
        assert r.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"  # never echoed
        r = await preflight(s, f"{srv.url}/api/v1/admin/bots", FOREIGN)
        assert r.status == 403 and no_cors(r)
        async with s.get(f"{srv.url}/api/v1/admin/bots", headers={"Origin": ADMIN_UI,
                                                                  "Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == ADMIN_UI
        async with s.get(f"{srv.url}/api/v1/admin/bots", headers={"Origin": FOREIGN,
                                                                  "Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and no_cors(r)


async def test_module_routes_that_require_admin_follow_the_admin_rules(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": TOKEN,
                                                                  "cors": {"origins": [ADMIN_UI]}}) as srv, \
            aiohttp.ClientSession() as s:
        url = f"{srv.url}/api/v1/bots/___/mod/echo/admin-only"
        r = await preflight(s, url, FOREIGN)  # channel rules: Authorization is not on the fixed list
        assert r.status == 204 and r.headers["Access-Control-Allow-Headers"] == "Content-Type"
        for auth in ({"Authorization": f"Bearer {TOKEN}"}, {}):  # the answer (or the 401) is not shared
            async with s.get(url, headers={"Origin": FOREIGN, **auth}) as r:
                assert r.status in (200, 401) and no_cors(r)
        r = await preflight(s, url, ADMIN_UI)
        assert r.status == 204 and r.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
        async with s.get(url, headers={"Origin": ADMIN_UI, "Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == ADMIN_UI
        async with s.get(f"{srv.url}/api/v1/bots/alpha/mod/echo/hello", headers={"Origin": FOREIGN}) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"  # not an admin route


async def test_channel_routes_follow_httpserver_cors(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    url = "/api/v1/bots/alpha/mod/echo/in"
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        r = await preflight(s, srv.url + url, FOREIGN, method="POST", headers="content-type, authorization")
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["Access-Control-Allow-Headers"] == "Content-Type"
        async with s.post(srv.url + url, json={"user": "u1", "text": "hi"}, headers={"Origin": FOREIGN}) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
        async with s.get(f"{srv.url}/api/v1/bots/nobody/mod/echo/hello", headers={"Origin": FOREIGN}) as r:
            assert r.status == 404 and r.headers["Access-Control-Allow-Origin"] == "*"  # errors too
        async with s.post(srv.url + url, json={"user": "u1", "text": "no origin"}) as r:
            assert r.status == 200 and no_cors(r)  # not a browser's cross-origin request (a webhook)
    async with run_server(data_dir, env, modules=["echo"], httpServer={"cors": {"enabled": False}}) as srv, \
            aiohttp.ClientSession() as s:
        r = await preflight(s, srv.url + url, FOREIGN, method="POST", headers="content-type")
        assert r.status == 403 and no_cors(r)
        async with s.get(f"{srv.url}/api/v1/bots/alpha/mod/echo/hello", headers={"Origin": FOREIGN}) as r:
            assert r.status == 200 and no_cors(r)


async def test_status_and_metrics_get_no_cors_headers(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[]) as srv, aiohttp.ClientSession() as s:
        for path in ("/status", "/metrics"):
            r = await preflight(s, srv.url + path, FOREIGN)
            assert r.status == 403 and no_cors(r)
            async with s.get(srv.url + path, headers={"Origin": FOREIGN}) as r:
                assert r.status == 200 and no_cors(r)
