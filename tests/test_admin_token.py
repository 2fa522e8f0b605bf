"""The local admin token: generated into the data folder when none is set, found there by the command line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.cli import main
from botpress_py.server import BotpressServer, StartupError
from botpress_py.testing import base_env, make_bot, run_server, write_json

from .admin_support import call
from .conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def no_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line reads the environment: a developer's own token must not leak into these tests."""
    for name in ("BP_ADMIN_TOKEN", "BP_URL", "BP_DATA_PATH"):
        monkeypatch.delenv(name, raising=False)


def token_file(data_dir: Path) -> Path:
    return data_dir / "secrets" / "admin.token"


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_a_server_with_no_token_set_generates_one_that_the_command_line_finds(
        data_dir: Path, env: dict, echo: Any, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv:
        path = token_file(data_dir)
        token = path.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", token) and path.stat().st_mode & 0o777 == 0o600
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert str(path) in logged and token not in logged

        where = ["--data", str(data_dir), "--url", srv.url]
        code, out, err = await cli(capsys, "bots", "disable", "alpha", *where)
        assert code == 0, err
        assert srv.registry.records["alpha"].state == "disabled"
        assert (await cli(capsys, "bots", "enable", "alpha", *where))[0] == 0
        code, out, err = await cli(capsys, "events", "failed", *where)
        assert code == 0 and "0 failed events" in err
        code, out, err = await cli(capsys, "users", "erase", "--bot", "alpha", "--user", "u1", "--channel", "test",
                                   *where)
        assert code == 0 and "via the running server" in out

        code, out, err = await cli(capsys, "admin", "token", "--data", str(data_dir))
        assert code == 0 and out.strip() == token  # the token on stdout, for the terminal or $(...)
        assert str(path) in err and "/admin" in err and token not in err
    # A restart keeps the same token.
    async with run_server(data_dir, env, modules=["echo"]) as srv:
        assert token_file(data_dir).read_text().strip() == token
        assert (await cli(capsys, "bots", "list", "--data", str(data_dir), "--url", srv.url))[0] == 0


async def test_an_explicit_token_wins_over_the_file(data_dir: Path, env: dict, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async with run_server(data_dir, env, modules=[]):
        generated = token_file(data_dir).read_text().strip()
    async with run_server(data_dir, env, modules=[], admin={"token": "from-the-config"}) as srv, \
            aiohttp.ClientSession() as s:
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots", {"Authorization": f"Bearer {generated}"})
        assert status == 403 and body["tokenSource"] == "config" and body["restartNeeded"] is False
        assert "admin.token in <data>/global/botpress.config.json" in body["hint"]
        code, _out, err = await cli(capsys, "bots", "list", "--data", str(data_dir), "--url", srv.url)
        assert code == 0, err  # the command line follows the same precedence
        assert (await cli(capsys, "admin", "token", "--data", str(data_dir)))[1].strip() == "from-the-config"
    async with run_server(data_dir, {**env, "BP_ADMIN_TOKEN": "from-the-environment"}, modules=[]) as srv, \
            aiohttp.ClientSession() as s:
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots",
                                  {"Authorization": "Bearer from-the-config"})
        assert status == 403 and body["tokenSource"] == "env" and "BP_ADMIN_TOKEN" in body["hint"]
        monkeypatch.setenv("BP_ADMIN_TOKEN", "from-the-environment")
        assert (await cli(capsys, "bots", "list", "--data", str(data_dir), "--url", srv.url))[0] == 0


async def test_a_token_set_while_the_server_runs_gets_a_restart_hint(data_dir: Path, env: dict,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=[]) as srv, aiohttp.ClientSession() as s:
        config_file = data_dir / "global" / "botpress.config.json"
        config = json.loads(config_file.read_text())
        write_json(config_file, {**config, "admin": {"token": "set-while-running"}})
        code, _out, err = await cli(capsys, "bots", "list", "--data", str(data_dir), "--url", srv.url)
        assert code == 1
        assert "403: invalid admin token" in err and "restart the server" in err
        assert "set-while-running" not in err
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots",
                                  {"Authorization": "Bearer set-while-running"})
        assert status == 403 and body["restartNeeded"] is True
        # a plain wrong token is not told to restart
        status, body = await call(s, "GET", f"{srv.url}/api/v1/admin/bots", {"Authorization": "Bearer nope"})
        assert status == 403 and body["restartNeeded"] is False and "restart" not in body["hint"]
    async with run_server(data_dir, env, modules=[]) as srv:
        assert (await cli(capsys, "bots", "list", "--data", str(data_dir), "--url", srv.url))[0] == 0


async def test_without_any_token_the_command_line_says_where_it_looked(data_dir: Path, env: dict,
                                                                       capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    async with run_server(data_dir, env, modules=[]) as srv:
        elsewhere = tmp_path / "another-data-folder"
        code, _out, err = await cli(capsys, "bots", "list", "--data", str(elsewhere), "--url", srv.url)
        assert code == 1 and "401: missing admin token" in err and "--data" in err


async def test_the_token_command_creates_the_file_a_later_server_uses(data_dir: Path, env: dict,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(capsys, "admin", "token", "--data", str(data_dir))
    token = out.strip()
    assert code == 0 and re.fullmatch(r"[0-9a-f]{64}", token) and "created now" in err
    assert token_file(data_dir).stat().st_mode & 0o777 == 0o600
    async with run_server(data_dir, env, modules=[]) as srv, aiohttp.ClientSession() as s:
        status, _ = await call(s, "GET", f"{srv.url}/api/v1/admin/bots", {"Authorization": f"Bearer {token}"})
        assert status == 200


async def test_a_token_file_the_server_did_not_write_stops_the_start_with_its_name(data_dir: Path) -> None:
    token_file(data_dir).parent.mkdir(parents=True)
    token_file(data_dir).write_text("my own password\n")
    server = BotpressServer(data_dir, base_env(), port=0, host="127.0.0.1")
    with pytest.raises(StartupError) as raised:
        await server.start()
    await server.stop()
    assert str(token_file(data_dir)) in str(raised.value) and "delete the file" in str(raised.value)
    assert "my own password" not in str(raised.value)


def test_the_token_file_is_kept_out_of_version_control() -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = ["data/secrets/admin.token", "data/secrets/admin-sessions.key"]
    result = subprocess.run(["git", "check-ignore", *files], cwd=REPO_ROOT, check=False, capture_output=True,
                            text=True)
    assert result.stdout.split() == files
