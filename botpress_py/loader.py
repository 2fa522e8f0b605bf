"""Module discovery, manifest parsing, registration with pluggy, and the order hooks run in.

A broken module (missing folder, bad manifest, invalid schema, import error, unknown hook, a
hook wrapper, a channel another module already sends) is reported with its folder and the
reason; the others load. The core calls each module's implementation of a hook on its own (so
one module's failure never stops another), in the order ``call_order`` gives: pluggy's
``tryfirst`` implementations, then the plain ones, then the ``trylast`` ones, each group in
the config file's module order (docs/modules.md, "How hooks are called").
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .context import ConfigProblem
from .events import Middleware
from .jsonfiles import ConfigFileError, check_schema, load_json_file, validate_instance

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "botpress_py.modules"
MODULES_ROOT = "MODULES_ROOT"

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "entry"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,49}$"},
        "version": {"type": "string"},
        "description": {"type": "string"},
        "entry": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"},
        "kind": {"enum": ["channel", "logic", "other"]},
        "channels": {
            "type": "array", "uniqueItems": True,
            "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,49}$"},
            "description": "The channels (IOEvent.channel) whose outgoing events this module sends: its "
                           "on_outgoing gets those and no other. Only for kind \"channel\".",
        },
    },
}

# Hooks that release what others set up: within a group, they run in the reverse module order.
TEARDOWN_HOOKS = frozenset({"on_bot_unmount"})

EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass
class LoadedModule:
    name: str
    folder: Path | None
    manifest: dict[str, Any]
    schema: dict[str, Any]
    plugin: Any
    middleware: list[Middleware] = field(default_factory=list)
    # Served at /assets/modules/<name>/: the module folder's assets/, or for an entry-point
    # module the assets/ folder beside its package's __init__.py.
    assets_dir: Path | None = None

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "0.0.0"))

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", "other"))

    @property
    def channels(self) -> list[str]:
        """The channels whose outgoing events this module sends (``channels`` in module.json)."""
        return list(self.manifest.get("channels") or [])


@dataclass
class ModuleLoadError:
    location: str
    reason: str

    def __str__(self) -> str:
        return f"module {self.location}: {self.reason}"


def builtin_modules_dir() -> Path | None:
    """Modules shipped with the package: inside a wheel, or the repo's modules/ in a checkout."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "_builtin_modules", package_dir.parent / "modules"):
        if candidate.is_dir():
            return candidate
    return None


def module_roots(env: Mapping[str, str], cwd: Path | None = None) -> list[Path]:
    """Where MODULES_ROOT points, in lookup order: BP_MODULES_PATH, ./modules, built-ins."""
    roots = [Path(p) for p in env.get("BP_MODULES_PATH", "").split(os.pathsep) if p]
    roots.append((cwd or Path.cwd()) / "modules")
    builtin = builtin_modules_dir()
    if builtin:
        roots.append(builtin)
    unique: list[Path] = []
    for root in roots:
        resolved = root.resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def discover_module_folders(roots: list[Path]) -> list[str]:
    """Folder names with a module.json across the roots (first root wins), sorted."""
    names: list[str] = []
    for root in roots:
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if (child / "module.json").is_file() and child.name not in names:
                names.append(child.name)
    return names


def resolve_location(location: str, roots: list[Path], data_dir: Path) -> tuple[Path | None, list[Path]]:
    if location.startswith(MODULES_ROOT + "/"):
        rel = location[len(MODULES_ROOT) + 1 :]
        tried = [root / rel for root in roots]
    else:
        path = Path(location)
        tried = [path] if path.is_absolute() else [Path.cwd() / path, data_dir / path]
    for candidate in tried:
        if (candidate / "module.json").is_file():
            return candidate.resolve(), tried
    return None, tried


def hook_names() -> list[str]:
    """Every hook a module may implement (the hookspecs), sorted."""
    return sorted(name for name, value in vars(hookspecs).items()
                  if callable(value) and hasattr(value, f"{hookspecs.PROJECT_NAME}_spec"))


# Renamed hooks: the old name still works for a while, with a warning at load.
DEPRECATED_HOOKS = {"on_module_unmount": "on_server_stopped"}


class ModuleLoader:
    """Owns the single PluginManager and the list of loaded modules."""

    def __init__(self, data_dir: Path, env: Mapping[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.roots = module_roots(env)
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.modules: dict[str, LoadedModule] = {}
        self.errors: list[ModuleLoadError] = []
        # channel name -> the module that sends its outgoing events
        self.channel_senders: dict[str, str] = {}
        # (module, hook) -> its implementations: looked up several times per event, and only
        # registering or unregistering a module changes them.
        self._impls: dict[tuple[str, str], list[pluggy.HookImpl]] = {}
        self._orders: dict[tuple[str, bool], list[str]] = {}
        self._undeclared_senders: list[str] | None = None

    def load_all(self, module_entries: list[dict[str, Any]]) -> None:
        for entry in module_entries:
            if not entry.get("enabled", True):
                continue
            location = entry["location"]
            if location.startswith("entrypoint:"):
                continue  # loaded with the other entry points below
            try:
                self._load_folder(location)
            except _LoadFailure as failure:
                self.errors.append(ModuleLoadError(location, str(failure)))
                log.error("module %s not loaded: %s", location, failure)
        disabled_eps = {
            e["location"].split(":", 1)[1] for e in module_entries
            if e["location"].startswith("entrypoint:") and not e.get("enabled", True)
        }
        self._load_entry_points(disabled_eps)

    def _load_folder(self, location: str) -> None:
        folder, tried = resolve_location(location, self.roots, self.data_dir)
        if folder is None:
            raise _LoadFailure(
                "module folder not found (looked in " + ", ".join(str(t) for t in tried)
                + "); set BP_MODULES_PATH or fix modules[].location in botpress.config.json"
            )
        manifest_path = folder / "module.json"
        try:
            manifest = load_json_file(manifest_path)
        except ConfigFileError as exc:
            raise _LoadFailure(f"{folder}: bad manifest: {exc}") from None
        problems = validate_instance(manifest, MANIFEST_SCHEMA, str(manifest_path))
        if problems:
            raise _LoadFailure(f"{folder}: bad manifest: " + "; ".join(map(str, problems)))
        name = manifest["name"]
        if name in self.modules:
            raise _LoadFailure(f"{folder}: a module named {name!r} is already loaded from "
                               f"{self.modules[name].folder}")
        schema: dict[str, Any] | None = None
        schema_path = folder / "config.schema.json"
        if schema_path.exists():
            try:
                schema = load_json_file(schema_path)
            except ConfigFileError as exc:
                raise _LoadFailure(f"{folder}: config.schema.json: {exc}") from None
            bad = check_schema(schema, str(schema_path))
            if bad:
                raise _LoadFailure(f"{folder}: " + "; ".join(map(str, bad)))
        package = self._import_entry(folder, manifest["entry"])
        self._register(name, folder, manifest, schema, self._instantiate(folder, package), folder / "assets")

    @staticmethod
    def _instantiate(folder: Path | None, package: Any) -> Any:
        """The plugin object for this server: ``create_module()`` of the entry package when it has one.

        A python package is imported once per process, so state kept at its top level would be
        shared by every server of the process; a factory gives each server (each loader) its own
        instance, whose methods are the hook implementations.
        """
        factory = getattr(package, "create_module", None)
        if factory is None:
            return package
        if not callable(factory):
            raise _LoadFailure(f"{folder}: create_module is not callable")
        try:
            return factory()
        except Exception as exc:
            raise _LoadFailure(f"{folder}: create_module() failed: {type(exc).__name__}: {exc}") from None

    def _import_entry(self, folder: Path, entry: str) -> ModuleType:
        top = entry.split(".")[0]
        existing = sys.modules.get(top)
        if existing is not None:
            origin = Path(getattr(existing, "__file__", "") or "").resolve()
            if folder not in origin.parents:
                raise _LoadFailure(
                    f"{folder}: python package {top!r} is already imported from {origin}; "
                    "rename the module's entry package"
                )
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        try:
            return importlib.import_module(entry)
        except Exception as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f" ({last.filename}:{last.lineno})" if last else ""
            raise _LoadFailure(f"{folder}: import of {entry!r} failed: "
                               f"{type(exc).__name__}: {exc}{where}") from None

    def _register(self, name: str, folder: Path | None, manifest: dict[str, Any],
                  schema: dict[str, Any] | None, plugin: Any, assets_dir: Path | None = None) -> None:
        self._forget_lookups()
        channels = self._check_channels(name, folder, manifest)
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise _LoadFailure(f"{folder or name}: {exc}") from None
        try:
            self._check_hook_names(name, folder)
            self._refuse_wrappers(name, folder)
            if schema is None:
                schema = self._call_sync(name, "config_schema") or EMPTY_SCHEMA
                bad = check_schema(schema, f"{name} config_schema()")
                if bad:
                    raise _LoadFailure(f"{folder or name}: " + "; ".join(map(str, bad)))
            middleware = self._collect_middleware(name)
            for old_name, new_name in DEPRECATED_HOOKS.items():
                if self.impls(name, old_name):
                    log.warning("module %s: hook %s is deprecated, rename it %s (same arguments, same moment)",
                                name, old_name, new_name)
            self._warn_undeclared_sender(name, manifest)
        except _LoadFailure:
            self.pm.unregister(name=name)
            self._forget_lookups()
            raise
        except Exception as exc:
            self.pm.unregister(name=name)
            self._forget_lookups()
            raise _LoadFailure(f"{folder or name}: {type(exc).__name__}: {exc}") from None
        self.modules[name] = LoadedModule(name, folder, manifest, schema, plugin, middleware, assets_dir)
        self._orders.clear()  # the new module takes its place in every hook's order
        self._undeclared_senders = None
        for channel in channels:
            self.channel_senders[channel] = name
        log.info("module %s %s loaded from %s", name, manifest.get("version", ""), folder or "entry point")

    def _check_hook_names(self, name: str, folder: Path | None) -> None:
        """A misspelt hook would silently never run: refuse the module and suggest the name."""
        plugin = self.pm.get_plugin(name)
        known = hook_names()
        for caller in self.pm.get_hookcallers(plugin) or []:
            if caller.spec is None:
                close = difflib.get_close_matches(caller.name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known hooks: {', '.join(known)}"
                raise _LoadFailure(f"{folder or name}: unknown hook {caller.name!r}{hint}")

    def _check_channels(self, name: str, folder: Path | None, manifest: dict[str, Any]) -> list[str]:
        """The module's declared channels; refused when another module already sends one of them."""
        where = folder / "module.json" if folder else f"entry point {name} (MODULE_MANIFEST)"
        only_channels = {"type": "object", "properties": {"channels": MANIFEST_SCHEMA["properties"]["channels"]}}
        problems = validate_instance(manifest, only_channels, str(where))
        if problems:  # a folder's manifest is checked whole earlier; an entry point's MODULE_MANIFEST here
            raise _LoadFailure(f"{where}: bad manifest: " + "; ".join(map(str, problems)))
        channels = list(manifest.get("channels") or [])
        if channels and manifest.get("kind") != "channel":
            raise _LoadFailure(f"{where}: \"channels\" is only for modules of \"kind\": \"channel\" "
                               f"(this one is {manifest.get('kind', 'other')!r})")
        for channel in channels:
            owner = self.channel_senders.get(channel)
            if owner is not None:
                raise _LoadFailure(f"{where}: channel {channel!r} is already sent by module {owner!r} "
                                   f"(from {self.modules[owner].folder or 'an entry point'}); one module sends "
                                   "each channel: disable one of them in botpress.config.json")
        return channels

    def _warn_undeclared_sender(self, name: str, manifest: dict[str, Any]) -> None:
        if not self.impls(name, "on_outgoing") or manifest.get("channels"):
            return
        log.warning("module %s implements on_outgoing but declares no \"channels\" in module.json: it is offered "
                    "the outgoing events of every channel no module declares, until one module sends each; "
                    "declare its channels (docs/modules.md, module.json)", name)

    def _refuse_wrappers(self, name: str, folder: Path | None) -> None:
        """Wrappers run around the other modules' implementations: one failing would fail them all."""
        plugin = self.pm.get_plugin(name)
        for caller in self.pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                    kind = "hookwrapper=True" if impl.hookwrapper else "wrapper=True"
                    raise _LoadFailure(
                        f"{folder or name}: hook {caller.name!r} is marked {kind}: botpress-py calls each module's "
                        "hooks on their own, so a wrapper cannot wrap the others; remove the marker (use "
                        "tryfirst=True or trylast=True to run before or after the other modules)")

    def _collect_middleware(self, name: str) -> list[Middleware]:
        out: list[Middleware] = []
        for item in self._call_sync_all(name, "register_middleware"):
            for mw in item or []:
                if not isinstance(mw, Middleware):
                    raise _LoadFailure(f"register_middleware returned {type(mw).__name__}, not Middleware")
                out.append(mw)
        return out

    def _load_entry_points(self, disabled: set[str]) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled or ep.name in self.modules:
                continue
            location = f"entrypoint:{ep.name}"
            try:
                package = ep.load()
                manifest = dict(getattr(package, "MODULE_MANIFEST", {}) or {})
                manifest.setdefault("name", ep.name)
                manifest.setdefault("entry", ep.value.split(":")[0])
                schema = getattr(package, "CONFIG_SCHEMA", None)
                package_file = getattr(package, "__file__", None)
                assets = Path(package_file).parent / "assets" if package_file else None
                self._register(ep.name, None, manifest, schema, self._instantiate(None, package), assets)
            except _LoadFailure as failure:
                self.errors.append(ModuleLoadError(location, str(failure)))
            except Exception as exc:
                self.errors.append(ModuleLoadError(location, f"{type(exc).__name__}: {exc}"))

    # -- calling one module's implementation of a hook --------------------------------------
    def _forget_lookups(self) -> None:
        self._impls.clear()
        self._orders.clear()
        self._undeclared_senders = None

    def call_order(self, hook: str, names: Iterable[str] | None = None, *, teardown: bool | None = None) -> list[str]:
        """``names`` (default: every loaded module) in the order the core calls ``hook`` on them.

        Modules whose implementation is marked ``tryfirst``, then the plain ones (and those that do
        not implement the hook), then those marked ``trylast``; each group in module order (the
        order of ``modules`` in botpress.config.json), reversed for a teardown hook (on_bot_unmount
        releases in the reverse order of on_bot_mount).
        """
        reverse = hook in TEARDOWN_HOOKS if teardown is None else teardown
        order = self._orders.get((hook, reverse))
        if order is None:
            position = {name: i for i, name in enumerate(self.modules)}

            def key(name: str) -> tuple[int, int]:
                impls = self.impls(name, hook)
                group = 0 if any(i.tryfirst for i in impls) else 2 if any(i.trylast for i in impls) else 1
                return group, -position[name] if reverse else position[name]

            order = self._orders[(hook, reverse)] = sorted(self.modules, key=key)
        if names is None:
            return list(order)
        wanted = names if isinstance(names, Mapping | set | frozenset) else set(names)
        return [name for name in order if name in wanted]

    def senders_of(self, channel: str) -> list[str]:
        """The modules whose ``on_outgoing`` may send an outgoing event of ``channel``: the one module
        that declares it in module.json; when none does, every module implementing ``on_outgoing``
        that declares no channels, in hook order (each is offered the event until one sends it)."""
        sender = self.channel_senders.get(channel)
        if sender is not None:
            return [sender]
        if self._undeclared_senders is None:
            self._undeclared_senders = [name for name in self.call_order("on_outgoing")
                                        if not self.modules[name].channels and self.implements(name, "on_outgoing")]
        return self._undeclared_senders

    def impls(self, module: str, hook: str) -> list[pluggy.HookImpl]:
        found = self._impls.get((module, hook))
        if found is None:
            plugin = self.pm.get_plugin(module)
            caller = getattr(self.pm.hook, hook)
            found = self._impls[(module, hook)] = [impl for impl in caller.get_hookimpls() if impl.plugin is plugin]
        return found

    def _call_sync_all(self, module: str, hook: str, **kwargs: Any) -> list[Any]:
        return [impl.function(*[kwargs[a] for a in impl.argnames]) for impl in self.impls(module, hook)]

    def _call_sync(self, module: str, hook: str, **kwargs: Any) -> Any:
        results = [r for r in self._call_sync_all(module, hook, **kwargs) if r is not None]
        return results[0] if results else None

    async def call(self, module: str, hook: str, **kwargs: Any) -> list[Any]:
        """Call one module's implementations of ``hook``, awaiting async ones."""
        results = []
        for impl in self.impls(module, hook):
            result = impl.function(*[kwargs[a] for a in impl.argnames])
            if inspect.isawaitable(result):
                result = await result
            results.append(result)
        return results

    def implements(self, module: str, hook: str) -> bool:
        return bool(self.impls(module, hook))

    def problems(self) -> list[ConfigProblem]:
        return [ConfigProblem(e.location, "", e.reason) for e in self.errors]


class _LoadFailure(Exception):
    pass
