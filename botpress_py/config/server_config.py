"""``data/global/botpress.config.json``: schema, defaults, env overrides (docs/configuration.md)."""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..context import ConfigProblem
from ..jsonfiles import ConfigFileError, load_json_file, schema_defaults, validate_instance, write_json_atomic

log = logging.getLogger(__name__)

CONFIG_FILE = "botpress.config.json"
SCHEMA_FILE = "botpress.config.schema.json"

_DURATION = r"^[0-9]+(ms|s|m|h|d)$"
_POSITIVE_DURATION = r"^0*[1-9][0-9]*(ms|s|m|h|d)$"

SERVER_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "botpress-py server configuration",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string", "description": "Path of this schema, for editor completion."},
        "httpServer": {
            "type": "object",
            "additionalProperties": False,
            "description": "The HTTP listener.",
            "properties": {
                "host": {"type": "string", "default": "localhost",
                         "description": "Interface to listen on (env BP_HOST). Use 0.0.0.0 for all."},
                "port": {"type": "integer", "minimum": 0, "maximum": 65535, "default": 3000,
                         "description": "TCP port (env PORT). 0 picks a free port."},
                "backlog": {"type": "integer", "minimum": 0, "default": 0,
                            "description": "Listen backlog; 0 keeps the system default (128)."},
                "bodyLimit": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?\s*(b|kb|mb|gb)?$",
                              "default": "10mb",
                              "description": "Largest request body on any route, e.g. \"10mb\", \"1kb\"; "
                                             "larger requests get 413."},
                "maxConnections": {"type": "integer", "minimum": 0, "default": 0,
                                   "description": "Most connections open at once; beyond it a new connection is "
                                                  "answered 503 and closed. 0: the file descriptor limit minus "
                                                  "a reserve for storage, outgoing requests and files."},
                "headerTimeout": {"type": "string", "pattern": _DURATION, "default": "10s",
                                  "description": "Time a new connection has to send its first request's headers "
                                                 "before it is closed. 0s: no limit."},
                "keepAliveTimeout": {"type": "string", "pattern": _DURATION, "default": "75s",
                                     "description": "Idle time after a response before a kept-alive connection is "
                                                    "closed; the next request's headers must arrive within it. "
                                                    "0s: no keep-alive."},
                "bodyTimeout": {"type": "string", "pattern": _DURATION, "default": "60s",
                                "description": "Time a request's body has to arrive once its headers have; "
                                               "then the connection is closed. 0s: no limit."},
                "cors": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "Cross-origin requests to the channel routes (/api/v1/bots/...).",
                    "properties": {
                        "enabled": {"type": "boolean", "default": True,
                                    "description": "Answer CORS preflights and add Access-Control headers on "
                                                   "channel routes."},
                        "origin": {"type": "string", "default": "*",
                                   "description": "Value of Access-Control-Allow-Origin on channel routes."},
                    },
                },
                "externalUrl": {"type": "string", "default": "",
                                "description": "Public base URL (env EXTERNAL_URL wins); "
                                               "default http://host:port. Prefixes relative media URLs."},
            },
        },
        "modules": {
            "type": "array",
            "description": "Modules to load, in order.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["location"],
                "properties": {
                    "location": {"type": "string", "minLength": 1,
                                 "description": "MODULES_ROOT/<folder>, a path, or entrypoint:<name>."},
                    "enabled": {"type": "boolean", "default": True,
                                "description": "Load this module."},
                },
            },
        },
        "admin": {
            "type": "object",
            "additionalProperties": False,
            "description": "The admin HTTP API and the admin page (/admin).",
            "properties": {
                "token": {"type": "string", "default": "",
                          "description": "Token of the admin API and the admin page (env BP_ADMIN_TOKEN wins). "
                                         "Empty: the token file data/secrets/admin.token, generated at the "
                                         "first start ('botpress-py admin token' prints it)."},
                "sessionLifetime": {"type": "string", "pattern": _DURATION, "default": "8h",
                                    "description": "How long an admin page login lasts before the page asks "
                                                   "for the token again."},
                "cors": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "Cross-origin requests to admin routes.",
                    "properties": {
                        "origins": {"type": "array", "default": [],
                                    "items": {"type": "string", "pattern": r"^https?://[^/\s*]+$"},
                                    "description": "Browser origins (scheme://host[:port]) allowed to call admin "
                                                   "routes; empty: none."},
                    },
                },
            },
        },
        "storage": {
            "type": "object",
            "additionalProperties": False,
            "description": "Durable storage (DATABASE_URL selects PostgreSQL; default SQLite "
                           "in data/storage/core.sqlite).",
            "properties": {
                "retention": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "How long processed rows are kept before the background purge.",
                    "properties": {
                        "events": {"type": "string", "pattern": _DURATION, "default": "7d",
                                   "description": "Processed inbox and sent outbox rows."},
                        "messages": {"type": "string", "pattern": _DURATION, "default": "90d",
                                     "description": "Message history."},
                        "failed": {"type": "string", "pattern": _DURATION, "default": "30d",
                                   "description": "Failed and discarded events (both directions), counted "
                                                  "from when they failed or were discarded."},
                        "media": {"type": "string", "pattern": _DURATION, "default": "90d",
                                  "description": "Media files (bot.media: what users sent), counted from when "
                                                 "they were stored."},
                    },
                },
                "media": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "Media storage (bot.media): files kept in the same database, served at "
                                   "/api/v1/bots/{botId}/media/{mediaId}.",
                    "properties": {
                        "maxBytes": {"type": "integer", "minimum": 1, "maximum": 104857600, "default": 26214400,
                                     "description": "Largest file bot.media.put accepts, in bytes (25 MB: "
                                                    "Messenger's own attachment limit)."},
                    },
                },
                "purgeInterval": {"type": "string", "pattern": _DURATION, "default": "1h",
                                  "description": "How often the purge runs."},
                "failedEvents": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "Retries of incoming events whose processing failed (not bot logic: "
                                   "storage errors such as a full disk), before they are marked failed.",
                    "properties": {
                        "maxAttempts": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5,
                                        "description": "Processing attempts of an incoming event before it "
                                                       "is marked failed (1: never retried)."},
                        "backoff": {"type": "string", "pattern": _DURATION, "default": "1s",
                                    "description": "Wait before the second attempt, doubled for each later "
                                                   "one (at most 5 minutes), with +-20% jitter."},
                    },
                },
                "ackTimeout": {"type": "string", "pattern": _POSITIVE_DURATION, "default": "5s",
                               "description": "How long a channel's bot.receive waits for its events to be "
                                              "committed; past it, it raises StorageUnavailable and the channel "
                                              "answers 503 (the platform redelivers)."},
                "queryTimeout": {"type": "string", "pattern": _POSITIVE_DURATION, "default": "30s",
                                 "description": "How long one storage operation may wait for a lock, a connection "
                                                "or the database before it fails with StorageUnavailable."},
            },
        },
        "logs": {
            "type": "object",
            "additionalProperties": False,
            "description": "What botpress-py start logs, and how (docs/operations.md, \"Logs\").",
            "properties": {
                "format": {"enum": ["text", "json"], "default": "text",
                           "description": "text: one readable line per record; json: one JSON object per line "
                                          "(time, level, logger, request_id, bot, channel, user hash, event_id, "
                                          "message, exc_info) for a log shipper. --log-format wins."},
                "level": {"enum": ["debug", "info", "warning", "error"], "default": "info",
                          "description": "Level of every logger without its own in levels. --log-level and "
                                         "BP_LOG_LEVEL win."},
                "levels": {"type": "object", "default": {},
                           "additionalProperties": {"enum": ["debug", "info", "warning", "error"]},
                           "description": "Level per module name (\"my-module\": its loggers and its "
                                          "bots' loggers) or per logger name prefix (\"botpress_py.storage\")."},
            },
        },
        "cluster": {
            "type": "object",
            "additionalProperties": False,
            "description": "Cluster mode: several server processes (nodes) on one PostgreSQL database "
                           "(docs/cluster.md).",
            "properties": {
                "enabled": {"type": "boolean", "default": False,
                            "description": "Run as one node of a cluster (env CLUSTER_ENABLED=true); needs "
                                           "DATABASE_URL=postgres://..."},
                "heartbeatInterval": {"type": "string", "pattern": _POSITIVE_DURATION, "default": "1s",
                                      "description": "How often a node tells the others it is alive and "
                                                     "rebalances the conversation partitions."},
                "nodeTimeout": {"type": "string", "pattern": _POSITIVE_DURATION, "default": "5s",
                                "description": "A node whose last heartbeat is older is gone: the others "
                                               "take over its partitions (within nodeTimeout + one heartbeat)."},
            },
        },
        "watch": {
            "type": "object",
            "additionalProperties": False,
            "description": "Watching data/ for edits.",
            "properties": {
                "enabled": {"type": "boolean", "default": True,
                            "description": "Remount a bot when its files change."},
                "interval": {"type": "string", "pattern": _DURATION, "default": "500ms",
                             "description": "How often the bots the kernel reported changed are scanned; "
                                            "when polling, how often data/bots is scanned (stretched with "
                                            "thousands of bots, so that scanning stays under 4% of a core)."},
                "inotify": {"type": "boolean", "default": True,
                            "description": "On Linux, learn from the kernel (inotify) which bot folders changed "
                                           "instead of polling them all; a slow full scan still runs. false: "
                                           "polling only."},
            },
        },
    },
}


def parse_size(text: str) -> int:
    """'10mb' -> bytes (1024-based, like Botpress's bytes library)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(b|kb|mb|gb)?\s*", text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    unit = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[match.group(2) or "b"]
    return int(float(match.group(1)) * unit)


def parse_duration(text: str) -> float:
    """'500ms', '30s', '7d' -> seconds."""
    match = re.fullmatch(r"([0-9]+)(ms|s|m|h|d)", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * factor


def default_server_config(found_modules: list[str]) -> dict[str, Any]:
    config = schema_defaults(SERVER_CONFIG_SCHEMA)
    config["modules"] = [{"location": f"MODULES_ROOT/{name}", "enabled": True} for name in found_modules]
    return config


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def env_value(raw: str) -> Any:
    """Env values are JSON when they parse as JSON, otherwise the raw string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _env_paths(schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Every config path reachable in the schema, by its BP_CONFIG_ env name."""
    out: dict[str, tuple[str, ...]] = {}
    for key, sub in (schema.get("properties") or {}).items():
        if key == "$schema":
            continue
        path = (*prefix, key)
        out["BP_CONFIG_" + "_".join(p.upper() for p in path)] = path
        if isinstance(sub, dict) and sub.get("type") == "object":
            out.update(_env_paths(sub, path))
    return out


@dataclass
class ServerConfig:
    """The effective server config and where each part came from."""

    data: dict[str, Any]
    file: Path
    problems: list[ConfigProblem] = field(default_factory=list)

    @property
    def http(self) -> dict[str, Any]:
        return self.data["httpServer"]

    @property
    def host(self) -> str:
        return self.http["host"]

    @property
    def port(self) -> int:
        return int(self.http["port"])

    @property
    def body_limit(self) -> int:
        return parse_size(self.http["bodyLimit"])

    def external_url(self, bound_port: int | None = None) -> str:
        url = self.http.get("externalUrl") or ""
        if url:
            return url.rstrip("/")
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "localhost"
        return f"http://{host}:{bound_port or self.port}"

    def duration(self, key: str) -> float:
        """An httpServer duration in seconds (``headerTimeout``, ``keepAliveTimeout``, ``bodyTimeout``)."""
        return parse_duration(self.http[key])

    def admin_origins(self) -> frozenset[str]:
        return frozenset(self.data.get("admin", {}).get("cors", {}).get("origins", []))

    def admin_token(self) -> str:
        return self.data.get("admin", {}).get("token", "")


def load_server_config(
    data_dir: Path, env: Mapping[str, str], found_modules: list[str], *, create: bool = True
) -> ServerConfig:
    """Load (creating it with defaults if missing), apply env overrides, validate.

    Problems are collected, not raised: ``botpress-py check`` lists them all and ``start``
    refuses to run with any.
    """
    global_dir = data_dir / "global"
    path = global_dir / CONFIG_FILE
    display = str(path)
    problems: list[ConfigProblem] = []
    if create:
        write_json_atomic(global_dir / SCHEMA_FILE, SERVER_CONFIG_SCHEMA)
    if not path.exists():
        file_data: dict[str, Any] = {"$schema": f"./{SCHEMA_FILE}", **default_server_config(found_modules)}
        if create:
            write_json_atomic(path, file_data)
            log.info("created %s with defaults", display)
    else:
        try:
            loaded = load_json_file(path, display)
        except ConfigFileError as exc:
            return ServerConfig(default_server_config(found_modules), path, exc.problems)
        if not isinstance(loaded, dict):
            return ServerConfig(default_server_config(found_modules), path,
                                [ConfigProblem(display, "/", "must be a JSON object")])
        file_data = loaded
    problems += validate_instance(file_data, SERVER_CONFIG_SCHEMA, display)

    merged = deep_merge(default_server_config(found_modules), {k: v for k, v in file_data.items()})
    if "modules" in file_data and isinstance(file_data["modules"], list):
        merged["modules"] = [
            {"enabled": True, **m} if isinstance(m, dict) else m for m in file_data["modules"]
        ]

    env_paths = _env_paths(SERVER_CONFIG_SCHEMA)
    for name, raw in sorted(env.items()):
        if not name.startswith("BP_CONFIG_"):
            continue
        if name not in env_paths:
            problems.append(ConfigProblem(f"env {name}", "", "no such config key",
                                          f"known: {', '.join(sorted(env_paths))}"))
            continue
        _set_path(merged, env_paths[name], env_value(raw))
    if env.get("PORT"):
        _set_path(merged, ("httpServer", "port"), env_value(env["PORT"]))
    if env.get("BP_HOST"):
        _set_path(merged, ("httpServer", "host"), env["BP_HOST"])
    if env.get("EXTERNAL_URL"):
        _set_path(merged, ("httpServer", "externalUrl"), env["EXTERNAL_URL"])
    if env.get("CLUSTER_ENABLED", "").strip():
        _set_path(merged, ("cluster", "enabled"), env["CLUSTER_ENABLED"].strip().lower() in ("1", "true", "yes", "on"))
    if env.get("BP_ADMIN_TOKEN"):
        _set_path(merged, ("admin", "token"), env["BP_ADMIN_TOKEN"])

    merged.pop("$schema", None)
    if not problems:
        # Env values can break the schema too (BP_CONFIG_HTTPSERVER_PORT=abc): say which.
        problems += [
            ConfigProblem(f"{display} + env overrides", p.pointer, p.message, p.hint)
            for p in validate_instance(merged, SERVER_CONFIG_SCHEMA, display)
        ]
    return ServerConfig(merged, path, problems)


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
