"""Helpers for the emulator and ``botpress-py messenger`` tests: a real server wired to a real emulator,
and the command line run as a user runs it (``botpress_py.testing.run_cli`` in a thread, or a subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import DEMO_APP_SECRET, DEMO_PAGE_ID, DEMO_TOKEN, GraphEmulator

from botpress_py import testing
from botpress_py.testing import make_bot, run_server, write_json

MODULE = "channel-messenger"
REPO_ROOT = Path(__file__).resolve().parents[3]
MODULES_ROOT = REPO_ROOT / "modules"
SAMPLE_BOT = REPO_ROOT / "data" / "bots" / "welcome-bot"
PAGE, TOKEN, SECRET = DEMO_PAGE_ID, DEMO_TOKEN, DEMO_APP_SECRET
USER = "2000000000000077"
SHIPPED = ["global/botpress.config.json", "global/botpress.config.schema.json", "bots/welcome-bot/bot.config.json",
           "bots/welcome-bot/qna.json", "bots/welcome-bot/config/channel-web.json"]


def shipped_data(tmp_path: Path) -> Path:
    """What a fresh clone has in data/ (run-time files, and the sample bot's Messenger settings, left out)."""
    data = tmp_path / "data"
    for name in SHIPPED:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes((REPO_ROOT / "data" / name).read_bytes())
    return data


@dataclass
class Rig:
    data: Path
    emulator: GraphEmulator
    server: Any
    http: aiohttp.ClientSession

    @property
    def emu(self) -> str:
        return self.emulator.url

    async def emulator_send(self, **spec: Any) -> tuple[int, dict[str, Any]]:
        if spec.get("wait"):
            spec.setdefault("settle", 0.4)  # seconds of quiet that end a bot turn (default 1): quicker tests
        async with self.http.post(f"{self.emu}/_emulator/send", json=spec) as response:
            return response.status, await response.json()

    async def module_status(self, bot: str = "welcome-bot") -> dict[str, Any]:
        async with self.http.get(self.server.url + "/status") as response:
            return (await response.json())["bots"][bot].get("modules", {}).get(MODULE, {})


def emulator_bot_config(emulator: GraphEmulator, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "graphApiUrl": emulator.url, "accessToken": TOKEN, "appSecret": SECRET,
            "getStarted": "GET_STARTED", **extra}


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, bot: str = "welcome-bot", qna: dict[str, Any] | None = None,
              bot_config: dict[str, Any] | None = None, global_config: dict[str, Any] | None = None,
              server_env: dict[str, str] | None = None, **emulator_options: Any) -> AsyncIterator[Rig]:
    """The server with one bot whose channel talks to a GraphEmulator that knows the demo Page.

    ``bot="welcome-bot"`` without ``qna`` copies the shipped sample bot. ``bot_config`` is merged
    over the emulator settings of the bot's file (a None value leaves that key out); ``{emulator}``
    in a ``server_env`` value is replaced by the emulator's URL.
    """
    data = tmp_path / "data"
    options = {"app_secret": SECRET, "any_user": True, **emulator_options}
    async with GraphEmulator({PAGE: {"token": TOKEN, "name": "Emulator Page"}}, **options) as emulator:
        config = {k: v for k, v in {**emulator_bot_config(emulator), **(bot_config or {})}.items() if v is not None}
        if qna is None and bot == "welcome-bot":
            shutil.copytree(SAMPLE_BOT, data / "bots" / bot)
            write_json(data / "bots" / bot / "config" / f"{MODULE}.json", config)
        else:
            make_bot(data, bot, qna=qna, module_configs={MODULE: config})
        if global_config is not None:
            write_json(data / "global" / "config" / f"{MODULE}.json", global_config)
        env = {k: v.format(emulator=emulator.url) for k, v in (server_env or {}).items()}
        async with run_server(data, env=env, modules=[MODULE, "qna"]) as server, \
                aiohttp.ClientSession() as http:
            emulator.server_url = server.url
            yield Rig(data, emulator, server, http)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line sees no BP_* setting of the developer's shell, and finds the modules."""
    for name in list(os.environ):
        if name.startswith(("BP_", "PORT", "EXTERNAL_URL")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BP_MODULES_PATH", str(MODULES_ROOT))


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``botpress-py ARGV`` in a thread (it is synchronous; the server runs on this loop)."""
    capsys.readouterr()
    # The CLI quiets the botpress_py logger for its own process; keep this test process's logging as it was.
    logger = logging.getLogger("botpress_py")
    level = logger.level
    try:
        code = await asyncio.to_thread(testing.run_cli, list(argv))
    finally:
        logger.setLevel(level)
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a ``botpress-py`` process a test starts: none of the developer's BP_* settings, and no
    DATABASE_URL, so a server it starts keeps its storage in the test's own data folder (a shared database
    would carry what one test's server remembers, e.g. a pushed Messenger profile, into another's)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BP_", "PORT", "EXTERNAL_URL")) and k != "DATABASE_URL"}
    env.update({"BP_MODULES_PATH": str(MODULES_ROOT), "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    env.update(extra)
    return env


async def botpress_py(*argv: str, stdin: bytes | None = None, timeout: float = 60.0) -> tuple[int, str, str]:
    """``python -m botpress_py ARGV`` as a separate process; (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "botpress_py", *argv, cwd=REPO_ROOT, env=subprocess_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class EmulatorProcess:
    def __init__(self, process: asyncio.subprocess.Process, banner: list[str]) -> None:
        self.process = process
        self.banner = banner
        match = re.search(r"on (http://\S+)", banner[0])
        assert match, banner
        self.url = match.group(1)

    async def stop(self) -> tuple[int, str]:
        """Ctrl+C, as a user stops it; (exit status, what it printed after the banner)."""
        self.process.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(self.process.communicate(), 20)
        assert self.process.returncode is not None
        return self.process.returncode, out.decode()


@contextlib.asynccontextmanager
async def emulator_process(*args: str, until: str = "Graph API emulator on") -> AsyncIterator[EmulatorProcess]:
    """Start ``python -m botpress_py messenger emulator ARGS``; yield once its banner is printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "botpress_py", "messenger", "emulator", "--port", "0", *args, cwd=REPO_ROOT,
        env=subprocess_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert process.stdout is not None
    banner: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not any(until in line for line in banner):
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise AssertionError("the emulator exited: " + "".join(banner))
                banner.append(line.rstrip("\n"))
            # The rest of the banner comes in the same write; take what is there.
            while True:
                try:
                    line = (await asyncio.wait_for(process.stdout.readline(), 0.3)).decode()
                except TimeoutError:
                    break
                if not line:
                    break
                banner.append(line.rstrip("\n"))
        yield EmulatorProcess(process, banner)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


class Terminal:
    """A ``python -m botpress_py ARGV`` process driven as a person at a terminal would (pipes instead of a tty)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.out = ""
        self._read_up_to = 0  # where the next expect starts looking

    @classmethod
    async def start(cls, *argv: str) -> Terminal:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "botpress_py", *argv, cwd=REPO_ROOT, env=subprocess_env(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(process)

    async def expect(self, text: str, timeout: float = 30.0) -> str:
        """Read the output until ``text`` shows; returns the output from the end of the last expect to the
        end of ``text`` (what follows is left for the next one)."""
        assert self.process.stdout is not None
        start = self._read_up_to
        async with asyncio.timeout(timeout):
            while text not in self.out[start:]:
                chunk = await self.process.stdout.read(4096)
                if not chunk:
                    raise AssertionError(f"the process ended before {text!r}: {self.out[start:]!r}")
                self.out += chunk.decode()
        self._read_up_to = self.out.index(text, start) + len(text)
        return self.out[start:self._read_up_to]

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def ctrl_c(self) -> None:
        self.process.send_signal(signal.SIGINT)

    async def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        """Wait for the exit; (status, stdout after the last expect, all of stderr)."""
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        self.out += out.decode()
        assert self.process.returncode is not None
        return self.process.returncode, self.out[self._read_up_to:], err.decode()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def terminal(*argv: str) -> AsyncIterator[Terminal]:
    term = await Terminal.start(*argv)
    try:
        yield term
    finally:
        await term.kill()
