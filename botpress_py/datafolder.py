"""A data folder as command-line verbs see it, outside a running server.

Module commands (``botpress-py messenger simulate`` and the like) run in their own process and
may import nothing of the core but the SDK; they still need what the server would see: its
URL, a bot's name, a module's config resolved exactly as the server resolves it, with the place
each value came from, and a safe way to edit a bot's config file while the server watches it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config.module_config import ModuleConfigResolver
from .config.server_config import load_server_config
from .context import ConfigProblem
from .jsonfiles import ConfigFileError, load_json_file, write_json_atomic


@dataclass(frozen=True, slots=True)
class _ModuleSpec:
    """What config resolution needs of a module: its name and schema."""

    name: str
    schema: dict[str, Any]


@dataclass
class ModuleConfig:
    """A module's config for one bot (or the global one), resolved as the server resolves it."""

    config: dict[str, Any]
    # top-level key -> "schema default", a file path, or "env BP_MODULE_…"
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def connect_host(host: str) -> str:
    """The address a local client uses to reach a server listening on ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "", "localhost") else host


class DataFolder:
    """``DataFolder(path)``: ``path``, else ``$BP_DATA_PATH``, else ``./data`` (as ``botpress-py start``)."""

    def __init__(self, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.path = Path(path or self.env.get("BP_DATA_PATH") or "data").resolve()

    def __repr__(self) -> str:
        return f"<DataFolder {self.path}>"

    def server_url(self, explicit: str | None = None) -> str:
        """``explicit``, else ``$BP_URL``, else where the server of this folder listens (config file,
        ``$PORT``, ``$BP_HOST`` and ``BP_CONFIG_*`` overrides, as the server reads them)."""
        if explicit or self.env.get("BP_URL"):
            return str(explicit or self.env["BP_URL"]).rstrip("/")
        config = load_server_config(self.path, self.env, [], create=False)
        return f"http://{connect_host(config.host)}:{config.port}"

    def external_url(self) -> str:
        """The server's public base URL as the server computes it (``httpServer.externalUrl``, ``$EXTERNAL_URL``,
        else its own address): what a channel's setup check calls from outside."""
        config = load_server_config(self.path, self.env, [], create=False)
        return config.external_url()

    def bot_ids(self) -> list[str]:
        """Folders under ``bots/`` holding a ``bot.config.json``, sorted."""
        folder = self.path / "bots"
        return sorted(p.parent.name for p in folder.glob("*/bot.config.json")) if folder.is_dir() else []

    def bot_config(self, bot_id: str) -> dict[str, Any]:
        """The bot's ``bot.config.json`` (``{}`` when missing or unreadable; ``botpress-py check`` says why)."""
        try:
            data = load_json_file(self.path / "bots" / bot_id / "bot.config.json")
        except (ConfigFileError, OSError):
            return {}
        return data if isinstance(data, dict) else {}

    def bot_name(self, bot_id: str) -> str:
        name = self.bot_config(bot_id).get("name")
        return name if isinstance(name, str) and name else bot_id

    def module_config_file(self, module: str, bot_id: str | None = None) -> Path:
        """``bots/<bot>/config/<module>.json``, or the global ``global/config/<module>.json``."""
        resolver = ModuleConfigResolver(self.path, self.env)
        return resolver.global_file(module) if bot_id is None else resolver.bot_file(bot_id, module)

    def module_config(self, module: str, schema: dict[str, Any], bot_id: str | None = None) -> ModuleConfig:
        """Schema defaults < global file < ``BP_MODULE_<MODULE>_*`` < the bot's file, validated."""
        resolved = ModuleConfigResolver(self.path, self.env).resolve(_ModuleSpec(module, schema), bot_id)  # type: ignore[arg-type]
        return ModuleConfig(resolved.config, dict(resolved.sources), list(resolved.problems))

    def update_module_config(self, module: str, bot_id: str | None, changes: Mapping[str, Any],
                             remove: Iterable[str] = ()) -> Path:
        """Set ``changes`` and drop ``remove`` in a module's config file, keeping every other key.

        Written atomically (a watching server never reads half a file); a missing file is created
        with its ``$schema`` line. Raises ``ConfigFileError`` when the file exists but is not valid JSON.
        """
        path = self.module_config_file(module, bot_id)
        data: dict[str, Any] = {}
        if path.exists():
            loaded = load_json_file(path)
            if not isinstance(loaded, dict):
                raise ConfigFileError([ConfigProblem(str(path), "/", "must be a JSON object")])
            data = loaded
        else:
            depth = "../../.." if bot_id is not None else "../.."
            data["$schema"] = f"{depth}/assets/modules/{module}/config.schema.json"
        for key in remove:
            data.pop(key, None)
        data.update(changes)
        write_json_atomic(path, data)
        return path
