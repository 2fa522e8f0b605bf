"""The botpress-py command line: check, bots (online and offline), start as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.cli import main
from botpress_py.testing import free_port, make_bot, run_server, write_json

from .conftest import FIXTURE_MODULES


def echo_config(data_dir: Path, **extra: Any) -> None:
    write_json(data_dir / "global" / "botpress.config.json",
               {"modules": [{"location": "MODULES_ROOT/echo"}], **extra})


def test_check_ok(data_dir: Path, capsys: Any, monkeypatch: Any, echo: Any) -> None:
    monkeypatch.setenv("BP_MODULES_PATH", str(FIXTURE_MODULES))
    echo_config(data_dir)
    make_bot(data_dir, "alpha")
    assert main(["check", "--data", str(data_dir)]) == 0
    assert "OK: 0 problems" in capsys.readouterr().out


def test_check_lists_every_problem_with_file_and_pointer(data_dir: Path, capsys: Any, monkeypatch: Any,
                                                         echo: Any) -> None:
    monkeypatch.setenv("BP_MODULES_PATH", str(FIXTURE_MODULES))
    echo_config(data_dir, httpServer={"port": "x"})
    make_bot(data_dir, "alpha", module_configs={"echo": {"level": -1}})
    make_bot(data_dir, "beta")
    (data_dir / "bots" / "beta" / "echo-bad.flag").write_text("")  # the module's own check_bot complains
    (data_dir / "bots" / "Bad Id").mkdir()
    write_json(data_dir / "bots" / "Bad Id" / "bot.config.json", {})
    assert main(["check", "--data", str(data_dir)]) == 1
    out = capsys.readouterr().out
    assert "botpress.config.json#/httpServer/port" in out
    assert "bots/alpha/config/echo.json#/level" in out
    assert "echo-bad.flag present (delete it)" in out
    assert "invalid bot id 'Bad Id'" in out
    assert "FAILED: 4 problems" in out


def test_hook_check_bot_json_output(data_dir: Path, capsys: Any, monkeypatch: Any, echo: Any) -> None:
    monkeypatch.setenv("BP_MODULES_PATH", str(FIXTURE_MODULES))
    echo_config(data_dir)
    make_bot(data_dir, "beta")
    (data_dir / "bots" / "beta" / "echo-bad.flag").write_text("")
    assert main(["check", "--data", str(data_dir), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)
    assert problems == [{"file": str(data_dir / "bots" / "beta" / "echo-bad.flag"), "pointer": "",
                         "message": "echo-bad.flag present", "hint": "delete it"}]


def test_bots_offline_edits_files(data_dir: Path, capsys: Any) -> None:
    make_bot(data_dir, "alpha")
    url = "http://127.0.0.1:9"  # nothing listens on the discard port
    assert main(["bots", "disable", "alpha", "--data", str(data_dir), "--url", url]) == 0
    assert json.loads((data_dir / "bots/alpha/bot.config.json").read_text())["disabled"] is True
    assert "takes effect at next start" in capsys.readouterr().out
    assert main(["bots", "list", "--data", str(data_dir), "--url", url]) == 0
    assert "alpha" in capsys.readouterr().out
    assert main(["bots", "reload", "alpha", "--data", str(data_dir), "--url", url]) == 1
    assert main(["bots", "disable", "../etc", "--data", str(data_dir), "--url", url]) == 2


async def test_bots_cli_reports_auth_errors(data_dir: Path, env: dict, echo: Any, capsys: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": "right"}) as srv:
        code = await asyncio.to_thread(main, ["bots", "disable", "alpha", "--url", srv.url, "--token", "wrong",
                                              "--data", str(data_dir)])
        assert code == 1
        assert "403: invalid admin token" in capsys.readouterr().err
        assert srv.registry.records["alpha"].state == "mounted"
        code = await asyncio.to_thread(main, ["bots", "list", "--url", srv.url, "--token", "right",
                                              "--data", str(data_dir)])
        assert code == 0 and "alpha" in capsys.readouterr().out


def test_hook_register_commands_adds_module_verbs(data_dir: Path, capsys: Any, monkeypatch: Any, echo: Any) -> None:
    monkeypatch.setenv("BP_MODULES_PATH", str(FIXTURE_MODULES))
    monkeypatch.setenv("BP_DATA_PATH", str(data_dir))
    echo_config(data_dir)
    assert main(["echo-say", "bird"]) == 0
    assert capsys.readouterr().out.strip() == "echo says bird"


def test_every_verb_has_help(capsys: Any) -> None:
    for verb in (["start"], ["check"], ["bots"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*verb, "--help"])
        assert exit_info.value.code == 0
        assert "usage: botpress-py" in capsys.readouterr().out


async def test_start_serves_sample_bot_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """`botpress-py start` as a real process with the repo's sample bot; SIGTERM shuts it down cleanly."""
    data = tmp_path / "data"
    repo_data = Path(__file__).resolve().parent.parent / "data"
    (data / "bots").mkdir(parents=True)
    import shutil

    shutil.copytree(repo_data / "bots" / "welcome-bot", data / "bots" / "welcome-bot")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_") and k != "DATABASE_URL"}
    env["PYTHONWARNINGS"] = "always"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "dev", "-m", "botpress_py", "start", "--data", str(data), "--port", str(port),
        "--host", "127.0.0.1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"ready on" in line, line
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/status") as r:
            body = await r.json()
        assert body["bots"]["welcome-bot"]["state"] == "mounted"
        assert body["bots"]["welcome-bot"]["modules"]["qna"]["state"] == "on"
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    text = stderr.decode()
    assert "botpress-py stopped" in text
    for bad in ("Unclosed", "ResourceWarning", "Task was destroyed", "Traceback", "never awaited"):
        assert bad not in text, text


def test_start_refuses_unknown_database_url_clearly(data_dir: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@db/x")
    assert main(["start", "--data", str(data_dir), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "DATABASE_URL" in err and "postgres" in err and "hunter2" not in err
    assert "Traceback" not in err


async def test_users_erase_without_channel_erases_on_every_declared_channel(
        data_dir: Path, env: dict, echo: Any, capsys: Any, monkeypatch: Any) -> None:
    """The core knows no channel by name: the default is every channel the loaded modules declare."""
    monkeypatch.setenv("BP_MODULES_PATH", env["BP_MODULES_PATH"])
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], admin={"token": "t"}) as srv:
        users = srv.registry.records["alpha"].contexts["echo"].users
        await users.save("u1", "test", {"first_name": "Bo"})
        await users.save("u1", "elsewhere", {"first_name": "Bo"})
        code = await asyncio.to_thread(main, ["users", "erase", "--bot", "alpha", "--user", "u1",
                                              "--data", str(data_dir), "--url", srv.url, "--token", "t"])
        assert code == 0
        assert "erased user u1 of bot alpha on test via the running server: 1 row" in capsys.readouterr().out
        assert await users.get("u1", "test") is None
        assert await users.get("u1", "elsewhere") is not None  # a channel nobody declares is left alone


def test_check_counts_agree_with_their_nouns(data_dir: Path, capsys: Any) -> None:
    make_bot(data_dir, "alpha")
    write_json(data_dir / "global" / "botpress.config.json", {"modules": [{"location": "MODULES_ROOT/qna"}]})
    (data_dir / "bots" / "alpha" / "qna.json").write_text("{", encoding="utf-8")
    assert main(["check", "--data", str(data_dir)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        f"FAILED: 1 problem in {data_dir} (checked 1 module (qna), 1 bot)")


def test_a_port_in_use_is_named_with_how_to_pick_another_and_no_stopped_line(
        data_dir: Path, capsys: Any, caplog: Any, monkeypatch: Any) -> None:
    import logging

    # The test's own storage (SQLite in its data folder), never a database other runs share: the start must
    # get as far as binding the port whatever that database holds.
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with caplog.at_level(logging.INFO, logger="botpress_py"):
            assert main(["start", "--data", str(data_dir), "--port", str(port), "--host", "127.0.0.1"]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot listen on 127.0.0.1:{port}: the address is already in use" in err
    assert f"--port {port + 1} (or PORT={port + 1})" in err
    assert "Traceback" not in err
    messages = [record.getMessage() for record in caplog.records]
    assert "botpress-py stopped" not in messages, messages
