"""What modules serve outside /api: static assets, site pages (site_router), WebSockets through module routes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from botpress_py.site import SitePages, content_type_for, safe_asset_path
from botpress_py.testing import make_bot, run_server, wait_for

ECHO_ASSETS = Path(__file__).parent / "fixtures" / "modules" / "echo" / "assets"


async def test_module_assets_are_served_with_type_and_caching_headers(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        async with s.get(f"{srv.url}/assets/modules/echo/app.js") as r:
            assert r.status == 200 and await r.text() == (ECHO_ASSETS / "app.js").read_text()
            assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert r.headers["Cache-Control"] == "public, max-age=300"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
        async with s.get(f"{srv.url}/assets/modules/echo/app.js", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with s.get(f"{srv.url}/assets/modules/echo/app.js", headers={"If-Modified-Since": modified}) as r:
            assert r.status == 304
        async with s.get(f"{srv.url}/assets/modules/echo/css/site.css") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/css; charset=utf-8"
        async with s.head(f"{srv.url}/assets/modules/echo/css/site.css") as r:
            assert r.status == 200


@pytest.mark.parametrize("path", [
    "../module.json", "..%2Fmodule.json", "%2e%2e/module.json", "css/../../module.json", ".hidden",
    "css//site.css", "missing.js", "css", "a\\b.js", "%00.js",
])
async def test_module_assets_refuse_paths_outside_the_assets_folder(data_dir: Path, env: dict, echo: Any,
                                                                    path: str) -> None:
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        async with s.get(f"{srv.url}/assets/modules/echo/{path}", allow_redirects=False) as r:
            assert r.status == 404, path
            assert "echo_module" not in await r.text()


async def test_module_assets_of_an_unknown_module_are_404(data_dir: Path, env: dict, echo: Any) -> None:
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        async with s.get(f"{srv.url}/assets/modules/nope/app.js") as r:
            assert r.status == 404 and "nope" in (await r.json())["error"]


def test_safe_asset_path_refuses_a_symlink_that_leaves_the_folder(tmp_path: Path) -> None:
    base = tmp_path / "assets"
    base.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (base / "ok.txt").write_text("ok")
    os.symlink(tmp_path / "secret.txt", base / "link.txt")
    assert safe_asset_path(base, "ok.txt") == (base / "ok.txt").resolve()
    assert safe_asset_path(base, "link.txt") is None
    assert safe_asset_path(base, "") is None


def test_content_types_browsers_are_strict_about() -> None:
    assert content_type_for(Path("a.js")).startswith("text/javascript")
    assert content_type_for(Path("a.CSS")).startswith("text/css")
    assert content_type_for(Path("a.svg")) == "image/svg+xml"
    assert content_type_for(Path("a.woff2")) == "font/woff2"
    assert content_type_for(Path("a.unknownext")) == "application/octet-stream"


async def test_site_router_serves_a_module_page_and_bot_state(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    make_bot(data_dir, "gamma", disabled=True)
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        for bot, state in (("alpha", "mounted"), ("gamma", "disabled"), ("nobody", "None")):
            async with s.get(f"{srv.url}/echo-page/{bot}") as r:
                assert r.status == 200 and await r.text() == f"page of {bot}: {state}"
        async with s.post(f"{srv.url}/echo-page/alpha") as r:
            assert r.status == 405
        async with s.get(f"{srv.url}/nothing/here") as r:
            assert r.status == 404 and (await r.json())["error"] == "not found"
        async with s.get(f"{srv.url}/status") as r:
            assert "moduleErrors" not in await r.json()


async def test_site_router_refuses_core_paths_and_reports_it(data_dir: Path, env: dict, echo: Any) -> None:
    echo.CLAIM_CORE_PATHS.append(True)
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        async with s.get(f"{srv.url}/status") as r:
            body = await r.json()
        assert body["status"] == "ok", "the core keeps /status"
        [error] = body["moduleErrors"]
        assert "module echo" in error and "GET /status refused" in error and "POST /api/anything refused" in error
        async with s.get(f"{srv.url}/echo-page/alpha") as r:
            assert r.status == 200, "the module's other routes still work"


def test_site_pages_first_module_keeps_a_path_two_modules_claim() -> None:
    problems: list[tuple[str, str]] = []
    site = SitePages(lambda module, problem: problems.append((module, problem)))
    site.reserve_core_paths(["/status", "/api/v1/bots/{botId}{tail}", "/assets/modules/{module}/{path}"])
    assert site.reserved == {"status", "api", "assets"}

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    site.router_for("first").add_get("/s/{botId}", handler)
    site.router_for("second").add_get("/s/welcome", handler)  # overlaps /s/{botId}
    site.router_for("second").add_post("/s/welcome", handler)  # another method: fine
    site.router_for("second").add_get("/s/welcome/more", handler)  # another length: fine
    site.router_for("second").add_get("assets/x", handler)
    assert [m for m, _ in problems] == ["second", "second"]
    assert "module first already serves /s/{botId}" in problems[0][1]
    assert "/assets is served by the core" in problems[1][1]
    assert len(site.routers["first"]) == 1 and len(site.routers["second"]) == 2


async def test_websockets_work_through_module_routes(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{srv.url}/api/v1/bots/alpha/mod/echo/ws") as ws:
            await ws.send_str("ping")
            assert (await ws.receive_str(timeout=5)) == "alpha echo: ping"
        async with s.ws_connect(f"{srv.url}/api/v1/bots/alpha/mod/echo/ws") as ws:
            await ws.send_str("again")
            assert (await ws.receive_str(timeout=5)) == "alpha echo: again"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(f"{srv.url}/api/v1/bots/nobody/mod/echo/ws")
        assert refused.value.status == 404


async def test_hook_on_server_stopping_closes_websockets_before_http_stops(data_dir: Path, env: dict,
                                                                          echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with aiohttp.ClientSession() as s:
        async with run_server(data_dir, env, modules=["echo"]) as srv:
            ws = await s.ws_connect(f"{srv.url}/api/v1/bots/alpha/mod/echo/ws")
            await wait_for(lambda: echo.SOCKETS)
        message = await ws.receive(timeout=5)
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1001)
        await ws.close()
    hooks = [h for h, _ in echo.CALLS]
    assert hooks.count("on_server_stopping") == 1
    assert hooks.index("on_server_stopping") < hooks.index("on_bot_unmount") < hooks.index("on_server_stopped")
