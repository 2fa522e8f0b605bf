"""Module discovery and loading; broken modules are reported and the rest load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from botpress_py.loader import ModuleLoader, builtin_modules_dir, discover_module_folders, module_roots
from botpress_py.testing import make_bot, run_server

from .conftest import FIXTURE_MODULES, REPO_ROOT

BROKEN = ["broken-import", "bad-manifest", "bad-schema", "unknown-hook", "missing-folder"]


def test_module_roots_order(tmp_path: Path) -> None:
    roots = module_roots({"BP_MODULES_PATH": f"{tmp_path / 'a'}:{tmp_path / 'b'}"}, cwd=tmp_path)
    assert roots[:3] == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve(), (tmp_path / "modules").resolve()]
    assert roots[-1] == builtin_modules_dir()
    assert builtin_modules_dir() == REPO_ROOT / "modules"


def test_discovery_finds_builtin_modules() -> None:
    names = discover_module_folders([REPO_ROOT / "modules"])
    assert {"channel-messenger", "qna"} <= set(names)


def test_broken_modules_are_reported_with_folder_and_reason(data_dir: Path, echo: Any) -> None:
    loader = ModuleLoader(data_dir, {"BP_MODULES_PATH": str(FIXTURE_MODULES)})
    loader.load_all([{"location": f"MODULES_ROOT/{name}", "enabled": True} for name in [*BROKEN, "echo"]])
    assert list(loader.modules) == ["echo"]
    reasons = {e.location.split("/")[-1]: e.reason for e in loader.errors}
    assert set(reasons) == set(BROKEN)
    assert "No module named 'a_package_that_does_not_exist'" in reasons["broken-import"]
    assert str(FIXTURE_MODULES / "broken-import") in reasons["broken-import"]
    assert "bad manifest" in reasons["bad-manifest"] and "line 2" in reasons["bad-manifest"]
    assert "invalid JSON Schema" in reasons["bad-schema"]
    assert str(FIXTURE_MODULES / "unknown-hook") in reasons["unknown-hook"]
    assert "unknown hook 'on_bot_mout'" in reasons["unknown-hook"] and "on_bot_mount" in reasons["unknown-hook"]
    assert "module folder not found" in reasons["missing-folder"] and "BP_MODULES_PATH" in reasons["missing-folder"]
    # a refused module leaves nothing registered behind
    assert loader.pm.get_plugin("unknown-hook") is None


def test_disabled_module_is_not_loaded(data_dir: Path, echo: Any) -> None:
    loader = ModuleLoader(data_dir, {"BP_MODULES_PATH": str(FIXTURE_MODULES)})
    loader.load_all([{"location": "MODULES_ROOT/echo", "enabled": False}])
    assert loader.modules == {} and loader.errors == []


async def test_hook_register_middleware_and_broken_modules_at_runtime(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=[*BROKEN, "echo"], admin={"token": "t"}) as srv, \
            aiohttp.ClientSession() as s:
        async with s.get(f"{srv.url}/status") as r:
            body = await r.json()
        assert body["bots"]["alpha"]["state"] == "mounted"
        assert len(body["moduleErrors"]) == len(BROKEN)
        async with s.get(f"{srv.url}/api/v1/admin/modules", headers={"Authorization": "Bearer t"}) as r:
            modules = await r.json()
        assert [m["name"] for m in modules["modules"]] == ["echo"]
        assert {e["location"] for e in modules["errors"]} == {f"MODULES_ROOT/{n}" for n in BROKEN}
    assert ("register_middleware", "") in echo.CALLS
    assert [m.name for m in srv.loader.modules["echo"].middleware] == ["tag-in", "tag-out"]


def test_hook_config_schema_used_when_no_schema_file(data_dir: Path, echo: Any) -> None:
    loader = ModuleLoader(data_dir, {"BP_MODULES_PATH": str(FIXTURE_MODULES)})
    loader.load_all([{"location": "MODULES_ROOT/echo", "enabled": True}])
    assert loader.modules["echo"].schema is echo.SCHEMA


async def test_create_module_gives_each_server_its_own_instance(tmp_path: Path, env: dict) -> None:
    """Two servers in one process, different data folders: a factory-made module shares no state."""
    first, second = tmp_path / "one", tmp_path / "two"
    for folder, bots in ((first, ["a", "b"]), (second, ["c"])):
        for bot in bots:
            make_bot(folder, bot)
    async with run_server(first, env, modules=["counter"]) as one, run_server(second, env, modules=["counter"]) as two:
        plugin_one = one.loader.pm.get_plugin("counter")
        plugin_two = two.loader.pm.get_plugin("counter")
        assert plugin_one is not plugin_two
        assert sorted(plugin_one.mounted) == ["a", "b"]
        assert plugin_two.mounted == ["c"]


def test_a_misspelt_hook_gets_a_suggestion_for_every_kind_of_hook(tmp_path: Path) -> None:
    """The hint knows every hook, transform_* and register_* included, not only on_*."""
    folder = tmp_path / "typo"
    (folder / "typo_module").mkdir(parents=True)
    (folder / "module.json").write_text('{"name": "typo", "entry": "typo_module"}')
    (folder / "typo_module" / "__init__.py").write_text(
        "from botpress_py.sdk import hookimpl\n\n\n@hookimpl\ndef transform_inptu(event, bot):\n    return None\n")
    loader = ModuleLoader(tmp_path, {"BP_MODULES_PATH": str(tmp_path)})
    loader.load_all([{"location": "MODULES_ROOT/typo", "enabled": True}])
    [error] = loader.errors
    assert "unknown hook 'transform_inptu'; did you mean 'transform_input'?" in error.reason


async def test_hook_on_module_unmount_is_the_deprecated_name_of_on_server_stopped(
        data_dir: Path, env: dict, caplog: Any) -> None:
    import logging
    import sys

    sys.path.insert(0, str(FIXTURE_MODULES / "legacy-hooks"))
    import legacy_hooks_module

    legacy_hooks_module.CALLS.clear()
    make_bot(data_dir, "alpha")
    with caplog.at_level(logging.WARNING, logger="botpress_py"):
        async with run_server(data_dir, env, modules=["legacy-hooks"]):
            assert legacy_hooks_module.CALLS == []
    assert legacy_hooks_module.CALLS == ["on_module_unmount legacy-hooks"]
    assert any("hook on_module_unmount is deprecated, rename it on_server_stopped" in r.getMessage()
               for r in caplog.records)
