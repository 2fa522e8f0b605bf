"""The admin HTTP API: bot and module control for the admin token or an admin page session
(admin_auth.py decides who may call it; routes in docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .bots import BotRegistry, valid_bot_id
from .failed_events import (
    BULK_DEFAULT,
    BULK_MAX,
    DIRECTIONS,
    LIST_DEFAULT,
    LIST_MAX,
    EventNotFailed,
    EventNotFound,
    EventNotRetryable,
)
from .jsonfiles import ConfigFileError
from .storage import StorageUnavailable

if TYPE_CHECKING:
    from .failed_events import FailedEvents
    from .loader import ModuleLoader

BOT_ID_HINT = "bot ids match ^[a-z0-9][a-z0-9_-]{0,49}$"


def json_error(status: type[web.HTTPException], message: str, **extra: Any) -> web.HTTPException:
    return status(text=web.json_response({"error": message, **extra}).text, content_type="application/json")


class AdminApi:
    def __init__(self, registry: BotRegistry, loader: ModuleLoader, check: Callable[[web.Request], None],
                 failed: FailedEvents | None = None, *,
                 on_bot_action: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self.registry = registry
        self.on_bot_action = on_bot_action  # cluster mode: tells the other nodes
        self.loader = loader
        self.check = check
        self.failed = failed

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/admin/bots", self.list_bots)
        app.router.add_post("/api/v1/admin/bots/{botId}/{action}", self.bot_action)
        app.router.add_get("/api/v1/admin/modules", self.list_modules)
        app.router.add_delete("/api/v1/admin/bots/{botId}/users/{channel}/{userId}", self.erase_user)
        app.router.add_get("/api/v1/admin/events/failed", self.list_failed_events)
        app.router.add_post("/api/v1/admin/events/{eventId}/{action}", self.event_action)
        app.router.add_post("/api/v1/admin/bots/{botId}/events/failed/{action}", self.bot_failed_events_action)

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
            raise json_error(web.HTTPBadRequest, "invalid bot id", hint=BOT_ID_HINT)
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
        if self.on_bot_action is not None:
            await self.on_bot_action(bot_id, action)
        return web.json_response({"botId": bot_id, **record.status()})

    async def erase_user(self, request: web.Request) -> web.Response:
        """Data protection: delete everything stored about one user of a bot."""
        self.check(request)
        bot_id = request.match_info["botId"]
        if not valid_bot_id(bot_id):
            raise json_error(web.HTTPBadRequest, "invalid bot id", hint=BOT_ID_HINT)
        try:
            counts = await self.registry.erase_user(bot_id, request.match_info["channel"],
                                                    request.match_info["userId"])
        except StorageUnavailable as exc:
            raise json_error(web.HTTPServiceUnavailable, "storage unavailable: the erase did not finish, run it again",
                             reason=str(exc)) from None
        return web.json_response({"botId": bot_id, "erased": counts})

    # -- failed events ----------------------------------------------------------------------------
    def _failed_events(self) -> FailedEvents:
        if self.failed is None:
            raise json_error(web.HTTPServiceUnavailable, "the server is starting: failed events are not known yet")
        return self.failed

    async def list_failed_events(self, request: web.Request) -> web.Response:
        """One page of failed events: ?bot=ID&direction=incoming|outgoing&limit=N&cursor=C."""
        self.check(request)
        query = request.query
        bot_id = query.get("bot") or None
        if bot_id is not None and not valid_bot_id(bot_id):
            raise json_error(web.HTTPBadRequest, f"invalid bot id {bot_id!r} in ?bot", hint=BOT_ID_HINT)
        direction = _direction(query.get("direction"))
        limit = _limit(query.get("limit"), LIST_DEFAULT, LIST_MAX)
        try:
            events, cursor = await self._failed_events().list(bot_id=bot_id, direction=direction, limit=limit,
                                                               cursor=query.get("cursor") or None)
        except ValueError as exc:
            raise json_error(web.HTTPBadRequest, str(exc), hint="pass back the nextCursor of the last page") from None
        return web.json_response({"events": events, "nextCursor": cursor})

    async def event_action(self, request: web.Request) -> web.Response:
        """POST /api/v1/admin/events/{eventId}/retry|discard: one failed event."""
        self.check(request)
        event_id, action = request.match_info["eventId"], request.match_info["action"]
        failed = self._failed_events()
        if action not in ("retry", "discard"):
            raise json_error(web.HTTPNotFound, f"unknown action {action!r}", hint="use retry or discard")
        try:
            done = await (failed.retry(event_id) if action == "retry" else failed.discard(event_id))
        except EventNotFound:
            raise json_error(web.HTTPNotFound, f"no event with id {event_id!r} is stored",
                             hint="list failed events with GET /api/v1/admin/events/failed "
                                  "(events are purged after storage.retention)") from None
        except EventNotFailed as exc:
            raise json_error(web.HTTPConflict, str(exc), state=exc.status) from None
        except EventNotRetryable as exc:
            raise json_error(web.HTTPConflict, str(exc), state="failed") from None
        return web.json_response(done)

    async def bot_failed_events_action(self, request: web.Request) -> web.Response:
        """POST /api/v1/admin/bots/{botId}/events/failed/retry|discard: up to ?limit of a bot's failed events."""
        self.check(request)
        bot_id, action = request.match_info["botId"], request.match_info["action"]
        if action not in ("retry", "discard"):
            raise json_error(web.HTTPNotFound, f"unknown action {action!r}", hint="use retry or discard")
        if not valid_bot_id(bot_id):
            raise json_error(web.HTTPBadRequest, "invalid bot id", hint=BOT_ID_HINT)
        direction = _direction(request.query.get("direction"))
        limit = _limit(request.query.get("limit"), BULK_DEFAULT, BULK_MAX)
        failed = self._failed_events()
        if action == "retry":
            return web.json_response(await failed.retry_bot(bot_id, direction, limit))
        return web.json_response(await failed.discard_bot(bot_id, direction, limit))


def _direction(value: str | None) -> Any:
    if not value:
        return None
    if value not in DIRECTIONS:
        raise json_error(web.HTTPBadRequest, f"invalid direction {value!r}", hint="use incoming or outgoing")
    return value


def _limit(value: str | None, default: int, most: int) -> int:
    if not value:
        return default
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise json_error(web.HTTPBadRequest, f"invalid limit {value!r}", hint=f"a whole number from 1 to {most}")
    return int(value)
