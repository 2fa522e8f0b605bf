"""Module config resolution (docs/architecture.md, "The external contract"; docs/configuration.md).

Precedence, lowest to highest: schema defaults < data/global/config/<module>.json <
env BP_MODULE_<MODULE>_<OPTION> < data/bots/<botId>/config/<module>.json, merged per
top-level key. Every file is re-read on each call: a mount never sees a stale config. The
environment, fixed for the process's life, is read once per module.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..context import ConfigProblem
from ..jsonfiles import ConfigFileError, load_json_file, schema_defaults, validate_instance, write_json_atomic
from ..loader import LoadedModule
from .server_config import env_value

log = logging.getLogger(__name__)


def env_prefix(module: str) -> str:
    return "BP_MODULE_" + re.sub(r"[^A-Za-z0-9]", "_", module).upper() + "_"


def env_name(module: str, option: str) -> str:
    return env_prefix(module) + re.sub(r"[^A-Za-z0-9]", "_", option).upper()


@dataclass
class ResolvedConfig:
    config: dict[str, Any]
    problems: list[ConfigProblem] = field(default_factory=list)
    # top-level key -> where its value came from ("schema default", a file path, "env NAME")
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


class ModuleConfigResolver:
    def __init__(self, data_dir: Path, env: Mapping[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        # Names of every loaded module: BP_MODULE_QNA_EXTRA_X belongs to a module "qna-extra",
        # not to an unknown option "extra_x" of "qna".
        self.module_names: set[str] = set()
        # The environment is fixed for the server's life: what it sets for each module is worked out
        # once (every bot mount resolves each module's config; 10,000 bots: 20,000 times).
        self._env_cache: dict[str, tuple[tuple[frozenset[str], int], ResolvedConfig]] = {}

    def global_file(self, module: str) -> Path:
        return self.data_dir / "global" / "config" / f"{module}.json"

    def bot_file(self, bot_id: str, module: str) -> Path:
        return self.data_dir / "bots" / bot_id / "config" / f"{module}.json"

    def schema_file(self, module: str) -> Path:
        return self.data_dir / "assets" / "modules" / module / "config.schema.json"

    def prepare(self, module: LoadedModule) -> None:
        """Write the schemas for editors and create the global file with $schema + defaults.

        Besides the config schema, every other ``<name>.schema.json`` of the module folder (the
        schema of a file the module reads from bot folders, such as a qna.json) is copied next to
        it, so such files can point their ``$schema`` at ``data/assets/modules/<module>/``.
        """
        write_json_atomic(self.schema_file(module.name), _editor_schema(module.schema))
        for own in sorted(module.folder.glob("*.schema.json")) if module.folder else []:
            if own.name != "config.schema.json":
                try:
                    write_json_atomic(self.schema_file(module.name).parent / own.name, load_json_file(own))
                except (OSError, ConfigFileError) as exc:  # only editors miss it
                    log.warning("module %s: %s not copied for editors: %s", module.name, own.name, exc)
        path = self.global_file(module.name)
        if not path.exists():
            data = {"$schema": f"../../assets/modules/{module.name}/config.schema.json",
                    **schema_defaults(module.schema)}
            write_json_atomic(path, data)
            log.info("created %s with the module's defaults", path)

    def resolve(self, module: LoadedModule, bot_id: str | None) -> ResolvedConfig:
        result = ResolvedConfig({})
        for key, value in schema_defaults(module.schema).items():
            result.config[key] = value
            result.sources[key] = "schema default"
        self._merge_file(result, self.global_file(module.name))
        self._merge_env(result, module)
        if bot_id is not None:
            self._merge_file(result, self.bot_file(bot_id, module.name))
        if result.problems:
            return result
        result.problems = validate_instance(result.config, module.schema, str(self.global_file(module.name)),
                                            file_for_key=result.sources)
        return result

    def _merge_file(self, result: ResolvedConfig, path: Path) -> None:
        if not path.exists():
            return
        try:
            data = load_json_file(path)
        except ConfigFileError as exc:
            result.problems += exc.problems
            return
        if not isinstance(data, dict):
            result.problems.append(ConfigProblem(str(path), "/", "must be a JSON object",
                                                 "wrap the settings in { }"))
            return
        for key, value in data.items():
            if key == "$schema":
                continue
            result.config[key] = value
            result.sources[key] = str(path)

    def _merge_env(self, result: ResolvedConfig, module: LoadedModule) -> None:
        known = (frozenset(self.module_names), id(module.schema))
        cached = self._env_cache.get(module.name)
        if cached is None or cached[0] != known:
            cached = self._env_cache[module.name] = (known, self._from_env(module))
        from_env = cached[1]
        result.problems += from_env.problems
        for key, raw in from_env.config.items():
            result.config[key] = env_value(raw)  # parsed again: each bot gets its own copy
            result.sources[key] = from_env.sources[key]

    def _from_env(self, module: LoadedModule) -> ResolvedConfig:
        """The module's options set by BP_MODULE_<MODULE>_<OPTION> (raw text), and the unknown ones."""
        out = ResolvedConfig({})
        prefix = env_prefix(module.name)
        by_env = {env_name(module.name, key): key for key in (module.schema.get("properties") or {})}
        longer = [env_prefix(m) for m in self.module_names if env_prefix(m).startswith(prefix) and m != module.name]
        for name, raw in self.env.items():
            if not name.startswith(prefix):
                continue
            key = by_env.get(name)
            if key is None and any(name.startswith(p) for p in longer):
                continue
            if key is None:
                out.problems.append(ConfigProblem(
                    f"env {name}", "", f"module {module.name} has no such option",
                    "options: " + ", ".join(sorted(by_env)) if by_env else "the module has no options"))
                continue
            out.config[key] = raw
            out.sources[key] = f"env {name}"
        return out


def _editor_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as written for editors: it must accept the ``$schema`` key the files carry."""
    out = dict(schema)
    props = dict(out.get("properties") or {})
    props.setdefault("$schema", {"type": "string"})
    out["properties"] = props
    return out
