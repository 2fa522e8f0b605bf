"""What the SDK gives modules beyond hooks: start options, stop requests, config sources, the data folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from botpress_py.cli import main
from botpress_py.sdk import DataFolder
from botpress_py.testing import make_bot, run_server, write_json

from .conftest import FIXTURE_MODULES, REPO_ROOT

ECHO_SCHEMA_KEYS = {"greeting", "level", "tags", "failMount"}


def _echo_only(data_dir: Path) -> None:
    write_json(data_dir / "global" / "botpress.config.json",
               {"modules": [{"location": "MODULES_ROOT/echo", "enabled": True}]})


def test_hook_register_start_options_reach_server_options_and_a_module_can_stop_the_server(data_dir: Path) -> None:
    """A real `botpress-py start` process: the module's --echo-stop-when-ready option reaches
    server.options, and its request_stop ends the process cleanly (exit 0, no traceback)."""
    _echo_only(data_dir)
    make_bot(data_dir, "alpha")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_") and k != "DATABASE_URL"}
    env["BP_MODULES_PATH"] = str(FIXTURE_MODULES)
    done = subprocess.run([sys.executable, "-m", "botpress_py", "start", "--data", str(data_dir), "--port", "0",
                           "--host", "127.0.0.1", "--echo-stop-when-ready"],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "stop requested: module echo: --echo-stop-when-ready was given" in done.stderr
    assert "Traceback" not in done.stderr
    help_text = subprocess.run([sys.executable, "-m", "botpress_py", "start", "--data", str(data_dir), "--help"],
                               env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "--echo-stop-when-ready" in help_text.stdout


def test_a_module_that_asks_the_server_to_stop_with_a_status_makes_start_exit_with_it(data_dir: Path) -> None:
    """``server.request_stop(reason, status=3)``: ``botpress-py start`` stops cleanly and exits 3, so that a
    script sees the module's refusal; the log says which status was asked for."""
    _echo_only(data_dir)
    make_bot(data_dir, "alpha")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_") and k != "DATABASE_URL"}
    env["BP_MODULES_PATH"] = str(FIXTURE_MODULES)
    done = subprocess.run([sys.executable, "-m", "botpress_py", "start", "--data", str(data_dir), "--port", "0",
                           "--host", "127.0.0.1", "--echo-stop-when-ready", "--echo-stop-status", "3"],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "stop requested: module echo: --echo-stop-when-ready was given (exit status 3)" in done.stderr
    assert "botpress-py stopped" in done.stderr and "Traceback" not in done.stderr


async def test_request_stop_refuses_a_status_that_is_not_an_exit_status(data_dir: Path, env: dict,
                                                                        echo: Any) -> None:
    async with run_server(data_dir, env, modules=["echo"]) as srv:
        server = srv.module_contexts["echo"]
        for bad in (256, -1, True, "1", 1.0):
            with pytest.raises(ValueError, match=r"request_stop: status must be an integer from 0 to 255, not "):
                server.request_stop("bad status", status=bad)  # type: ignore[arg-type]
        assert not srv.stop_requested.is_set()
        server.request_stop("a refusal", status=2)
        server.request_stop("too late", status=0)  # the first request counts
        assert (srv.stop_reason, srv.stop_status) == ("module echo: a refusal", 2)


def test_ctrl_c_in_a_module_verb_ends_it_quietly(data_dir: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("BP_MODULES_PATH", str(FIXTURE_MODULES))
    monkeypatch.setenv("BP_DATA_PATH", str(data_dir))
    _echo_only(data_dir)
    assert main(["echo-say", "bird", "--interrupt"]) == 130
    assert "Traceback" not in capsys.readouterr().err


async def test_bot_config_sources_say_where_each_value_came_from(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "hey"}})
    write_json(data_dir / "global" / "config" / "echo.json", {"level": 3})
    async with run_server(data_dir, {**env, "BP_MODULE_ECHO_TAGS": '["x"]'}, modules=["echo"]):
        sources = echo.CONFIG_SOURCES["alpha"]
    assert sources["greeting"] == str((data_dir / "bots" / "alpha" / "config" / "echo.json").resolve())
    assert sources["level"] == str((data_dir / "global" / "config" / "echo.json").resolve())
    assert sources["tags"] == "env BP_MODULE_ECHO_TAGS"
    assert sources["failMount"] == "schema default"


def test_data_folder_resolves_module_config_like_the_server(tmp_path: Path, echo: Any) -> None:
    data = tmp_path / "data"
    make_bot(data, "alpha", name="Alpha Bot", module_configs={"echo": {"greeting": "hey"}})
    write_json(data / "global" / "config" / "echo.json", {"level": 3})
    write_json(data / "global" / "botpress.config.json", {"httpServer": {"host": "0.0.0.0", "port": 4123}})
    folder = DataFolder(data, env={"BP_MODULE_ECHO_TAGS": '["x"]'})
    resolved = folder.module_config("echo", echo.SCHEMA, "alpha")
    assert resolved.ok
    assert resolved.config == {"greeting": "hey", "level": 3, "tags": ["x"], "failMount": False}
    assert resolved.sources["tags"] == "env BP_MODULE_ECHO_TAGS"
    assert folder.server_url() == "http://127.0.0.1:4123"
    assert DataFolder(data, env={"PORT": "5000"}).server_url() == "http://127.0.0.1:5000"
    assert DataFolder(data, env={"BP_URL": "http://x:1/"}).server_url() == "http://x:1"
    assert folder.bot_ids() == ["alpha"] and folder.bot_name("alpha") == "Alpha Bot"
    assert DataFolder(data, env={"BP_DATA_PATH": str(data)}).path == data.resolve()

    bad = folder.module_config("echo", echo.SCHEMA | {}, None)
    assert bad.ok
    write_json(data / "bots" / "alpha" / "config" / "echo.json", {"level": "high"})
    problems = folder.module_config("echo", echo.SCHEMA, "alpha").problems
    assert [(p.pointer, "echo.json" in p.file) for p in problems] == [("/level", True)]


def test_data_folder_updates_a_config_file_keeping_other_keys(tmp_path: Path) -> None:
    folder = DataFolder(tmp_path / "data", env={})
    path = folder.update_module_config("echo", "alpha", {"greeting": "hi", "level": 2})
    assert json.loads(path.read_text()) == {"$schema": "../../../assets/modules/echo/config.schema.json",
                                            "greeting": "hi", "level": 2}
    folder.update_module_config("echo", "alpha", {"level": 5}, remove=["greeting"])
    assert json.loads(path.read_text()) == {"$schema": "../../../assets/modules/echo/config.schema.json",
                                            "level": 5}
    global_path = folder.update_module_config("echo", None, {"level": 1})
    assert global_path == (tmp_path / "data" / "global" / "config" / "echo.json").resolve()
    assert json.loads(global_path.read_text())["$schema"] == "../../assets/modules/echo/config.schema.json"
    path.write_text("{ not json")
    from botpress_py.sdk import ConfigFileError

    with pytest.raises(ConfigFileError):
        folder.update_module_config("echo", "alpha", {"level": 1})
