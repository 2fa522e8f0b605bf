"""The admin HTTP API (DESIGN.md section 8): bearer-token protected bot and module control."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .bots import BotRegistry, valid_bot_id
from .jsonfiles import ConfigFileError
from .storage import StorageUnavailable

if TYPE_CHECKING:
    from .loader import ModuleLoader


def json_error(status: type[web.HTTPException], message: str, **extra: Any) -> web.HTTPException:
    return status(text=web.json_response({"error": message, **extra}).text, content_type="application/json")


def make_admin_check(token: Callable[[], str]) -> Callable[[web.Request], None]:
    def check(request: web.Request) -> None:
        expected = token()
        if not expected:
            raise json_error(web.HTTPForbidden, "the admin API is disabled: no admin token is configured",
                             hint="set admin.token in data/global/botpress.config.json or the "
                                  "BP_ADMIN_TOKEN environment variable")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise web.HTTPUnauthorized(
                text=web.json_response({"error": "missing admin token",
                                        "hint": "send the header 'Authorization: Bearer <token>'"}).text,
                content_type="application/json", headers={"WWW-Authenticate": "Bearer"})
        # compare_digest keeps the comparison time independent of where the strings differ.
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise json_error(web.HTTPForbidden, "invalid admin token")

    return check


class AdminApi:
    def __init__(self, registry: BotRegistry, loader: ModuleLoader, check: Callable[[web.Request], None]) -> None:
        self.registry = registry
        self.loader = loader
        self.check = check

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/admin/bots", self.list_bots)
        app.router.add_post("/api/v1/admin/bots/{botId}/{action}", self.bot_action)
        app.router.add_get("/api/v1/admin/modules", self.list_modules)
        app.router.add_delete("/api/v1/admin/bots/{botId}/users/{channel}/{userId}", self.erase_user)

    async def list_bots(self, request: web.Request) -> web.Response:
        self.check(request)
        return web.json_response({"bots": self.registry.status()})

    async def list_modules(self, request: web.Request) -> web.Response:
        self.check(request)
        modules = [
            {"name": m.name, "version": m.version, "kind": m.kind, "description": m.manifest.get("description", ""),
             "folder": str(m.folder) if m.folder else None, "state": "loaded"}
            for m in self.loader.modules.values()
        ]
        errors = [{"location": e.location, "state": "error", "reason": e.reason} for e in self.loader.errors]
        return web.json_response({"modules": modules, "errors": errors})

    async def bot_action(self, request: web.Request) -> web.Response:
        self.check(request)
        bot_id = request.match_info["botId"]
        action = request.match_info["action"]
        if action not in ("enable", "disable", "reload"):
            raise json_error(web.HTTPNotFound, f"unknown action {action!r}", hint="use enable, disable or reload")
        if not valid_bot_id(bot_id):
            raise json_error(web.HTTPBadRequest, "invalid bot id",
                             hint="bot ids match ^[a-z0-9][a-z0-9_-]{0,49}$")
        if not self.registry.bot_file(bot_id).exists():
            raise json_error(web.HTTPNotFound, f"bot {bot_id!r} not found",
                             hint=f"create {self.registry.bot_file(bot_id)}")
        try:
            if action == "reload":
                record = await self.registry.reload(bot_id)
            else:
                record = await self.registry.set_disabled(bot_id, action == "disable")
        except ConfigFileError as exc:
            raise json_error(web.HTTPConflict, str(exc)) from None
        return web.json_response({"botId": bot_id, **record.status()})

    async def erase_user(self, request: web.Request) -> web.Response:
        """Data protection: delete everything stored about one user of a bot."""
        self.check(request)
        bot_id = request.match_info["botId"]
        if not valid_bot_id(bot_id):
            raise json_error(web.HTTPBadRequest, "invalid bot id", hint="bot ids match ^[a-z0-9][a-z0-9_-]{0,49}$")
        try:
            counts = await self.registry.erase_user(bot_id, request.match_info["channel"],
                                                    request.match_info["userId"])
        except StorageUnavailable as exc:
            raise json_error(web.HTTPServiceUnavailable, "storage unavailable: the erase did not finish, run it again",
                             reason=str(exc)) from None
        return web.json_response({"botId": bot_id, "erased": counts})
