"""The aiohttp app factory and the server lifecycle: start, serve, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from . import __version__
from .admin import AdminApi, json_error
from .admin_auth import AdminAuth, build_admin_auth
from .admin_page import AdminPage
from .admin_views import AdminViews
from .bots import ANY_BOT, BotRegistry, valid_bot_id
from .cluster import ClusterHooks, ClusterNode, ClusterSettings, cluster_refusal
from .config.module_config import ModuleConfigResolver
from .config.server_config import ServerConfig, load_server_config, parse_duration
from .connections import (
    ConnectionLimits,
    GuardedAppRunner,
    GuardedServer,
    LoopErrorLog,
    default_max_connections,
    fd_reserve,
    raise_fd_limit,
)
from .context import ConfigProblem, ServerContext
from .core_metrics import CoreMetrics
from .failed_events import RetryPolicy
from .gate import BotGate
from .http_middleware import CorsPolicy, http_middleware, marking_admin_check
from .listen import bind_listener
from .loader import ModuleLoader, discover_module_folders
from .log_context import set_user_hash_key
from .logthrottle import LogThrottle
from .media import MediaRoute, StorageMediaStore, media_max_bytes
from .metrics import CONTENT_TYPE, ModuleMetrics
from .pipeline import EventPipeline
from .purge import purge_loop
from .routing import ModuleRouter
from .secretfiles import load_or_create_secret
from .site import ModuleAssets, SitePages
from .state import StorageKeyValue, StorageUserStore
from .storage import Storage, StorageKeyError, StorageUnavailable, open_storage
from .watcher import DataWatcher
from .wording import plural
from .workers import REUSE_PORT_ENV, node_status

log = logging.getLogger(__name__)

SHUTDOWN_DRAIN_SECONDS = 10.0
ADMIN_STATE_NAMESPACE = "@core:admin"  # not a module name: module names have no "@"
RELOAD_WAIT_SECONDS = 10.0


class StartupError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class BotpressServer:
    """One server: config, modules, bots, pipeline, HTTP. ``start()`` then ``stop()``."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None, *,
                 port: int | None = None, host: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        # ``botpress-py start`` options (modules add theirs with register_start_options): server.options.
        self.options: dict[str, Any] = dict(options or {})
        # Set when a module asks the server to stop (server.request_stop); the CLI stops it then.
        self.stop_requested = asyncio.Event()
        self.stop_reason = ""
        self.stop_status = 0  # the exit status the module asked for (botpress-py start exits with it)
        self.env = dict(os.environ if env is None else env)
        if port is not None:
            self.env["PORT"] = str(port)
        if host is not None:
            self.env["BP_HOST"] = host
        self.metrics = ModuleMetrics()  # this server's registry, shared with its modules
        self.core_metrics = CoreMetrics(self.metrics)
        self.loader = ModuleLoader(self.data_dir, self.env)
        self.resolver = ModuleConfigResolver(self.data_dir, self.env)
        self.config: ServerConfig | None = None
        self.storage: Storage | None = None
        self.gate = BotGate()
        self.registry: BotRegistry | None = None
        self.pipeline: EventPipeline | None = None
        self.cluster: ClusterNode | None = None  # cluster mode (docs/cluster.md)
        self.cluster_hooks = ClusterHooks()  # locks and broadcasts: cluster-wide in cluster mode
        self.watcher: DataWatcher | None = None
        self.module_contexts: dict[str, ServerContext] = {}
        self.site: SitePages | None = None
        self.admin_auth: AdminAuth | None = None
        self.admin_views: AdminViews | None = None
        self.module_errors: dict[str, str] = {}
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._background: list[asyncio.Task[Any]] = []
        self.bound_port: int | None = None
        self.started_at = time.time()
        # Lines anyone can trigger (malformed requests, a connection flood) at most once a minute each.
        self.log_throttle = LogThrottle()
        self.fd_limit: int | None = None
        self._loop_errors = LoopErrorLog(self.log_throttle, self._describe_connections)
        self._served = False  # start() finished: only then does a stop say "stopped"

    @property
    def url(self) -> str:
        assert self.config is not None
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.bound_port}"

    def external_url(self) -> str:
        assert self.config is not None
        return self.config.external_url(self.bound_port)

    # -- start ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        found = discover_module_folders(self.loader.roots)
        self.config = load_server_config(self.data_dir, self.env, found)
        if self.config.problems:
            raise StartupError(self.config.problems)
        cluster_settings = ClusterSettings.from_config(self.config.data)
        refusal = cluster_refusal(cluster_settings, self.env, str(self.config.file))
        if refusal is not None:
            raise StartupError([refusal])
        self.cluster_hooks.enabled = cluster_settings.enabled
        # Before anything opens files or sockets: storage pools, modules' clients, the listener.
        self.fd_limit = raise_fd_limit()
        # Users in log lines are hashed with a key kept in the data folder: same user, same hash after a restart.
        set_user_hash_key(load_or_create_secret(self.data_dir / "secrets" / "log-user-hash.key"))
        self._loop_errors.install(asyncio.get_running_loop())
        self.loader.load_all(self.config.data.get("modules", []))
        self.resolver.module_names = set(self.loader.modules)
        for module in self.loader.modules.values():
            self.resolver.prepare(module)

        storage_config = self.config.data.get("storage", {})
        try:
            self.storage = open_storage(self.data_dir, self.env,
                                        query_timeout=parse_duration(storage_config.get("queryTimeout", "30s")))
        except StorageKeyError as exc:
            raise StartupError([ConfigProblem(exc.where, "", str(exc), "masked events are encrypted with this key "
                                              "(docs/storage.md, encryption at rest)")]) from None
        except ValueError as exc:
            raise StartupError([ConfigProblem("env DATABASE_URL", "", str(exc))]) from None
        if cluster_settings.enabled and self.storage.kind != "postgres":
            raise StartupError([ConfigProblem("env DATABASE_URL", "", "cluster mode needs PostgreSQL",
                                              "set DATABASE_URL=postgresql://...")])
        try:
            await self.storage.open()
        except Exception as exc:
            # The message of a driver error names host and database, never the password.
            storage, self.storage = self.storage, None
            await storage.close()
            raise StartupError([ConfigProblem(f"{storage.kind} storage", "",
                                              f"cannot open: {type(exc).__name__}: {exc}",
                                              storage.open_failure_hint())]) from None
        storage = self.storage
        # Wired once: the registry opens and closes the bot gate, the pipeline reads it; modules'
        # BotContexts hand their events straight to the pipeline.
        self.pipeline = EventPipeline(storage, self.gate, self.loader, self.core_metrics,
                                      RetryPolicy.from_config(self.config.data.get("storage", {})))
        self.registry = BotRegistry(data_dir=self.data_dir, loader=self.loader, resolver=self.resolver,
                                    external_url=self.external_url,
                                    kv=lambda ns: StorageKeyValue(storage, ns),
                                    users=lambda bot_id: StorageUserStore(storage, bot_id),
                                    gate=self.gate, events=self.pipeline,
                                    media=lambda bot_id: StorageMediaStore(storage, bot_id, self.external_url,
                                                                           media_max_bytes(storage_config)),
                                    metrics=self.metrics)
        self.pipeline.ack_timeout = parse_duration(storage_config.get("ackTimeout", "5s"))
        self.core_metrics.register_gauges(self.registry, self.pipeline, self.open_connections)

        # Bind first (port 0 becomes a real port, so external_url is right for modules), but
        # serve only once every bot is mounted: early requests queue in the backlog instead of
        # seeing a half-started server.
        backlog = int(self.config.http.get("backlog") or 0) or 128
        sock = self._sock = bind_listener(self.config.host, self.config.port, backlog,
                                           reuse_port=self.env.get(REUSE_PORT_ENV) == "1")
        self.bound_port = sock.getsockname()[1]
        try:
            self.admin_auth = await build_admin_auth(
                self.data_dir, self.env, self.config, StorageKeyValue(storage, ADMIN_STATE_NAMESPACE),
                external_url=self.external_url, log_throttle=self.log_throttle)
        except (OSError, ValueError) as exc:
            raise StartupError([ConfigProblem("admin token", "", str(exc))]) from None
        self.app = self._build_app()
        self._runner = GuardedAppRunner(self.app, limits=self._connection_limits(), metrics=self.core_metrics,
                                        throttle=self.log_throttle, handle_signals=False, access_log=None,
                                        shutdown_timeout=5.0)
        await self._runner.setup()
        await self._call_modules("on_server_started", lambda name: {"server": self.module_contexts[name]})

        self.registry.register_all()
        if cluster_settings.enabled:
            self.cluster = ClusterNode(storage, self.pipeline, self.gate, self.registry, cluster_settings,
                                       self.bound_port)
            self.cluster_hooks.attach(self.cluster)
            await self.cluster.start()
        await self.pipeline.replay()
        # No garbage collection while the bots mount: what they build lives as long as they do, and each
        # full collection re-read every object built so far (10,000 bots: 16 of them, 3.5 s of the start's
        # 12 s of CPU). Then it is frozen (out of the collector's sight; still freed when no longer
        # referenced), so the first full collection after the start does not re-read it all either
        # (10,000 bots: about 1 s). Mounting leaves almost no cyclic garbage to freeze with it (2,000
        # bots: 157 objects in all); what came before is collected first, while the heap is small.
        collecting = gc.isenabled()
        if collecting:
            gc.collect()
        gc.disable()
        try:
            await self.registry.mount_all()
        finally:
            if collecting:
                gc.freeze()
                gc.enable()
        await web.SockSite(self._runner, sock, backlog=backlog).start()
        self._sock = None  # the site owns it now
        # The watcher's first snapshot (off the loop, awaited) before modules hear the server is ready: what
        # they print then (a terminal chat's banner) comes last, as the server's own start is over.
        await self._start_background()
        await self._call_modules("on_server_ready", lambda name: {"server": self.module_contexts[name]})
        self._served = True
        log.info("botpress-py %s listening on %s (external URL %s), %s", __version__, self.url,
                 self.external_url(), plural(len(self.registry.records), "bot"))

    def _connection_limits(self) -> ConnectionLimits:
        assert self.config
        automatic = default_max_connections(self.fd_limit)
        limit = int(self.config.http["maxConnections"]) or automatic
        if self.fd_limit is not None and limit > automatic:
            log.warning("httpServer.maxConnections (%d) leaves fewer than %d of the %d file descriptors this "
                        "process may open for storage, outgoing requests and files: at that many connections, "
                        "accepting and opening files fail", limit, fd_reserve(self.fd_limit), self.fd_limit)
        return ConnectionLimits(max_connections=limit, header_timeout=self.config.duration("headerTimeout"),
                                keepalive_timeout=self.config.duration("keepAliveTimeout"),
                                body_timeout=self.config.duration("bodyTimeout"))

    def _describe_connections(self) -> str:
        return f"{self.open_connections()} open connections, file descriptor limit {self.fd_limit or 'unknown'}"

    def _build_app(self) -> web.Application:
        assert self.config and self.registry and self.admin_auth and self.pipeline and self.storage
        limit = self.config.body_limit
        cors = self.config.http["cors"]
        policy = CorsPolicy(channel_origin=cors.get("origin", "*") if cors.get("enabled", True) else None,
                            admin_origins=self.config.admin_origins())
        app = web.Application(client_max_size=limit, middlewares=[http_middleware(
            self.core_metrics, limit, self.config.http["bodyLimit"], policy, self.log_throttle)])
        admin_check = marking_admin_check(self.admin_auth.check)
        registry = self.registry
        site = self.site = SitePages(self._report_module_problem)

        def bot_state(bot_id: str) -> str | None:
            record = registry.records.get(bot_id)
            return None if record is None else record.status()["state"]

        for name, module in self.loader.modules.items():
            resolved = self.resolver.resolve(module, None)
            if not resolved.ok:
                log.error("module %s: global config: %s", name, "; ".join(map(str, resolved.problems)))
            self.module_contexts[name] = ServerContext(
                module=name, config=resolved.config, router=ModuleRouter(), external_url=self.external_url(),
                data_dir=self.data_dir, state=StorageKeyValue(self.storage, f"{name}:server"),  # type: ignore[arg-type]
                bots=self.registry.module_views.setdefault(name, {}), admin_check=admin_check,
                site_router=site.router_for(name), bot_state=bot_state, options=self.options,
                request_stop=self.request_stop, metrics=self.metrics, locks=self.cluster_hooks.lock,
                clustered=self.cluster_hooks.enabled, cluster=self.cluster_hooks)
        app.router.add_get("/status", self.handle_status)
        app.router.add_get("/metrics", self.handle_metrics)
        AdminApi(self.registry, self.loader, admin_check, self.pipeline.failed if self.pipeline else None,
                 on_bot_action=self.cluster_hooks.bot_action_done).add_routes(app)
        self.admin_views = AdminViews(self.registry, self.storage, self.pipeline.feed, admin_check,
                                      self.admin_auth.session_alive)
        self.admin_views.add_routes(app)
        AdminPage(self.admin_auth, __version__).add_routes(app)
        app.router.add_route("*", r"/api/v1/bots/{botId}/mod/{module}{tail:(/.*)?}", self.dispatch)
        MediaRoute(self.storage).add_routes(app)
        app.router.add_route("*", r"/api/v1/bots/{botId}{tail:(/.*)?}", self.dispatch_bot_other)
        assets = ModuleAssets({name: m.assets_dir for name, m in self.loader.modules.items() if m.assets_dir})
        app.router.add_get("/assets/modules/{module}/{path:.+}", assets.handle)
        # Every path above belongs to the core; the catch-all below (added last, so tried last)
        # serves the site pages modules claim.
        site.reserve_core_paths(r.canonical for r in app.router.resources())
        app.router.add_route("*", "/{tail:.*}", site.dispatch)
        return app

    def request_stop(self, reason: str, status: int = 0) -> None:
        """Ask whoever runs this server (the CLI) to stop it cleanly, as Ctrl+C would, then exit with ``status``."""
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_status = status
            log.info("stop requested: %s%s", reason, f" (exit status {status})" if status else "")
            self.stop_requested.set()

    def _report_module_problem(self, module: str, problem: str) -> None:
        earlier = self.module_errors.get(module)
        self.module_errors[module] = f"{earlier}; {problem}" if earlier else problem

    def open_connections(self) -> int:
        """HTTP connections open now."""
        server = self._runner.server if self._runner else None
        return server.open_connections if isinstance(server, GuardedServer) else 0

    async def _call_modules(self, hook: str, kwargs_for: Any) -> None:
        for name in self.loader.call_order(hook):
            try:
                await self.loader.call(name, hook, **kwargs_for(name))
            except Exception as exc:
                self.module_errors[name] = f"{hook} failed: {type(exc).__name__}: {exc}"
                log.exception("module %s: %s failed", name, hook)

    async def _start_background(self) -> None:
        assert self.config and self.registry
        watch = self.config.data.get("watch", {})
        if watch.get("enabled", True):
            registry = self.registry
            self.watcher = DataWatcher(self.data_dir, parse_duration(watch.get("interval", "500ms")),
                                       on_bot_changed=registry.reload, on_global_changed=self._global_config_changed,
                                       throttle=self.log_throttle, inotify=watch.get("inotify", True))
            registry.on_change = self.watcher.mark_seen
            await self.watcher.start()
        assert self.storage and self.pipeline
        self._background.append(asyncio.create_task(purge_loop(
            self.config.data.get("storage", {}), self.storage, self.pipeline, self.cluster_hooks.purge_lock),
            name="storage-purge"))

    async def _global_config_changed(self) -> None:
        """A data/global/config/<module>.json changed: refresh server contexts, remount every bot."""
        assert self.registry
        for name, module in self.loader.modules.items():
            resolved = self.resolver.resolve(module, None)
            if resolved.ok:
                self.module_contexts[name].config = resolved.config
            else:
                log.error("module %s: global config not applied: %s", name, "; ".join(map(str, resolved.problems)))
        await self.registry.reload_many(list(self.registry.records))

    # -- HTTP handlers ---------------------------------------------------------------------------
    async def handle_status(self, request: web.Request) -> web.Response:
        assert self.registry
        body: dict[str, Any] = {"status": "ok", "version": __version__, "bots": self.registry.status(),
                                "uptime": round(time.time() - self.started_at, 1), "node": node_status(
                                    self.env, self.cluster.node_id if self.cluster else None)}
        if self.pipeline is not None:
            body["failedEvents"] = self.pipeline.failed_counts.status()
        if self.cluster is not None:
            body.update(await self.cluster.status_fields())
        if self.loader.errors or self.module_errors:
            body["moduleErrors"] = [str(e) for e in self.loader.errors] + [
                f"module {m}: {r}" for m, r in self.module_errors.items()]
        return web.json_response(body)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        # In a thread: with thousands of bots the per-bot series take a good part of a second to write,
        # which must not stall webhooks. The gauges read at scrape time tolerate it (copies, no awaits).
        body = await asyncio.to_thread(self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route /api/v1/bots/{botId}/mod/{module}/... to the module's router for that bot."""
        assert self.registry
        bot_id, module = request.match_info["botId"], request.match_info["module"]
        tail = request.match_info.get("tail") or "/"
        if module not in self.loader.modules:
            raise json_error(web.HTTPNotFound, f"module {module!r} is not loaded",
                             hint="enable it in data/global/botpress.config.json")
        if bot_id == ANY_BOT:
            router = self.module_contexts[module].router
        else:
            router = await self._bot_router(bot_id, module)
        handler, params, allowed = router.resolve(request.method, tail)
        if handler is None:
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
            raise json_error(web.HTTPNotFound, f"no route {request.method} {tail} in module {module}")
        if params:
            request.match_info.update(params)
        try:
            return await handler(request)
        except StorageUnavailable as exc:
            # A module route that needed storage while it was stalled: "retry later", not a crash.
            raise json_error(web.HTTPServiceUnavailable, "storage unavailable, try again later",
                             reason=str(exc)) from None

    async def _bot_router(self, bot_id: str, module: str) -> ModuleRouter:
        assert self.registry
        self._check_bot_id(bot_id)
        record = self.registry.records.get(bot_id)
        if record is not None and record.lock.locked():
            # The bot is being remounted: wait for the new mount instead of failing the request.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELOAD_WAIT_SECONDS), record.lock:
                    pass
            record = self.registry.records.get(bot_id)
        if record is None:
            raise json_error(web.HTTPNotFound, f"bot {bot_id!r} not found")
        if record.state in ("disabled", "unmounted"):
            raise json_error(web.HTTPNotFound, "bot is disabled", botId=bot_id)
        if record.state == "error":
            raise json_error(web.HTTPServiceUnavailable, "bot is not mounted", botId=bot_id, reason=record.error)
        ctx = record.contexts.get(module)
        if ctx is None:
            reason = record.modules.get(module, {}).get("reason", "")
            raise json_error(web.HTTPNotFound, f"module {module} is not on for bot {bot_id}", reason=reason)
        return ctx.router

    def _check_bot_id(self, bot_id: str) -> None:
        if not valid_bot_id(bot_id):
            raise json_error(web.HTTPBadRequest, "invalid bot id",
                             hint="bot ids match ^[a-z0-9][a-z0-9_-]{0,49}$")

    async def dispatch_bot_other(self, request: web.Request) -> web.StreamResponse:
        assert self.registry
        bot_id = request.match_info["botId"]
        if bot_id != ANY_BOT:
            self._check_bot_id(bot_id)
            record = self.registry.records.get(bot_id)
            if record is not None and record.state in ("disabled", "unmounted"):
                raise json_error(web.HTTPNotFound, "bot is disabled", botId=bot_id)
        raise json_error(web.HTTPNotFound, "not found", hint="module routes live under "
                         "/api/v1/bots/{botId}/mod/{module}/")

    # -- stop ----------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop HTTP, drain in-flight events up to a deadline, unmount bots, close modules and storage."""
        if self.watcher:
            await self.watcher.stop()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        if self._runner:
            if self.admin_views:
                await self.admin_views.close_all()
            if self.module_contexts:
                await self._call_modules("on_server_stopping", lambda name: {"server": self.module_contexts[name]})
            await self._runner.cleanup()  # stops accepting; lets running handlers finish
            self._runner = None
        if self._sock:  # start() failed before serving
            self._sock.close()
            self._sock = None
        if self.cluster:
            await self.cluster.stop()  # claims no more; what it holds drains below
        if self.pipeline:
            if not await self.pipeline.drain(SHUTDOWN_DRAIN_SECONDS):
                log.warning("shutdown deadline reached: unfinished events stay stored and replay at next start")
        if self.cluster:
            await self.cluster.leave()
        if self.registry:
            await self.registry.unmount_all()
        for hook in ("on_server_stopped", "on_module_unmount"):  # the second: deprecated name of the first
            await self._call_modules(hook, lambda name: {"server": self.module_contexts.get(name)})
        if self.storage:
            await self.storage.close()
        self._loop_errors.uninstall()
        if self._served:
            log.info("botpress-py stopped")
            self._served = False
