"""Helpers for tests of the core and of modules: a real server on a free port, bot folders,
the command line in this process.

Part of the package (not tests/) so module tests beside each module can use it too: with
``botpress_py.sdk`` (and ``botpress_py.browser_testing``) it is all a module's tests import.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .server import BotpressServer

__all__ = ["BotpressServer", "base_env", "make_bot", "parse_cli", "run_cli", "run_server", "send_retry_backoff",
           "wait_for", "write_json"]


def run_cli(argv: list[str]) -> int:
    """``botpress-py <argv>`` in this process; returns its exit status (what a shell would see)."""
    from .cli import main  # the command line loads modules: only when a test runs a verb

    return main(argv)


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """The options ``botpress-py <argv>`` would run with, without running it (the verbs and options of the
    modules found through ``--data`` or ``BP_DATA_PATH`` included). An unknown verb or option raises
    SystemExit(2), with argparse's message on stderr: a test that a documented command exists as written."""
    from .cli import _modules_for_cli, build_parser

    return build_parser(_modules_for_cli(argv)).parse_args(argv)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server a test starts as its own process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def make_bot(data_dir: Path, bot_id: str, *, module_configs: Mapping[str, dict[str, Any]] | None = None,
             qna: dict[str, Any] | None = None, disabled: bool = False, **bot_config: Any) -> Path:
    """Write ``data/bots/<bot_id>/`` with bot.config.json, config/<module>.json and qna.json."""
    folder = data_dir / "bots" / bot_id
    write_json(folder / "bot.config.json", {"id": bot_id, "name": bot_id, "disabled": disabled, **bot_config})
    for module, config in (module_configs or {}).items():
        write_json(folder / "config" / f"{module}.json", config)
    if qna is not None:
        write_json(folder / "qna.json", qna)
    return folder


def base_env(**extra: str) -> dict[str, str]:
    """A minimal environment: no inherited BP_* settings leak into a test server."""
    import os

    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("BP_", "PORT", "EXTERNAL_URL")) and k != "DATABASE_URL"}
    keep.update(extra)
    return keep


@contextlib.asynccontextmanager
async def run_server(data_dir: Path, env: Mapping[str, str] | None = None, *,
                     modules: list[str] | None = None, **config: Any) -> AsyncIterator[BotpressServer]:
    """Start a real server on 127.0.0.1 and a free port; stop it cleanly on exit.

    ``modules`` writes a botpress.config.json loading only those module folders (by name);
    other keyword arguments are merged into that file (e.g. ``admin={"token": "t"}``).
    """
    if modules is not None or config:
        global_file = data_dir / "global" / "botpress.config.json"
        current: dict[str, Any] = json.loads(global_file.read_text()) if global_file.exists() else {}
        if modules is not None:
            current["modules"] = [{"location": f"MODULES_ROOT/{m}", "enabled": True} for m in modules]
        current.update(config)
        current.setdefault("watch", {"enabled": True, "interval": "100ms"})
        write_json(global_file, current)
    server = BotpressServer(data_dir, base_env(**dict(env or {})), port=0, host="127.0.0.1")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.contextmanager
def send_retry_backoff(first_seconds: float) -> Iterator[None]:
    """Within the block, a failed send of any server in this process is retried after ``first_seconds``
    (doubled for each attempt after) instead of 1 s: a test of an outage need not last minutes.

    Delays already scheduled keep theirs; nested blocks restore the outer value on exit.
    """
    from . import delivery

    saved = delivery.RETRY_BASE_SECONDS
    delivery.RETRY_BASE_SECONDS = first_seconds
    try:
        yield
    finally:
        delivery.RETRY_BASE_SECONDS = saved


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Await until ``predicate()`` is truthy (it may be async); raise TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(interval)  # polling step of a condition wait, bounded by the timeout


class StuckSQLiteWriter:
    """Holds a server's SQLite writer thread inside a transaction until ``release()``: what a write to a
    frozen or dying disk does. For tests of storage stalls (SQLite only)."""

    active = False

    async def start(self, server: BotpressServer) -> None:
        import threading

        self.gate = threading.Event()
        entered = threading.Event()

        def stuck(db: Any) -> None:
            entered.set()
            self.gate.wait(60)  # bounded: a test that forgets release() still ends

        self.task = asyncio.ensure_future(server.storage._write(stuck))  # type: ignore[union-attr]
        await wait_for(entered.is_set, 10)
        self.active = True

    async def release(self) -> None:
        self.gate.set()
        await self.task
        self.active = False


@dataclasses.dataclass(frozen=True)
class PostgresSchema:
    """A schema of its own on $DATABASE_URL for one test: ``env`` points a server at it."""

    url: str
    name: str

    @property
    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.url, "BP_DATABASE_SCHEMA": self.name}


@contextlib.asynccontextmanager
async def postgres_schema(prefix: str, skip_reason: str = "DATABASE_URL not set: PostgreSQL test skipped; "
                                                          ".ci/run sets it") -> AsyncIterator[PostgresSchema]:
    """A fresh schema named ``<prefix>_<random>`` on $DATABASE_URL, dropped afterwards (what a server
    created in it goes with it). Skips the calling test when DATABASE_URL is unset."""
    import asyncpg
    import pytest

    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        pytest.skip(skip_reason)
    schema = PostgresSchema(url, f"{prefix}_{uuid.uuid4().hex[:12]}")
    try:
        yield schema
    finally:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema.name}" CASCADE')
        finally:
            await conn.close()

