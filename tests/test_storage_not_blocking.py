"""The event loop and webhook acks keep flowing while storage runs a slow query."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.testing import make_bot, postgres_schema, run_server

from .test_pipeline import say

SLOW_SQLITE = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000000) "
               "SELECT count(*) FROM n")


@pytest.fixture(params=["sqlite", "postgres"])
async def backend_env(request: Any) -> Any:
    if request.param == "sqlite":
        yield "sqlite", {}
        return
    async with postgres_schema("bp_slow") as schema:
        yield "postgres", schema.env


async def test_acks_keep_flowing_during_a_slow_query(data_dir: Path, env: dict, echo: Any, backend_env: Any) -> None:
    kind, extra = backend_env
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, {**env, **extra}, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        assert srv.storage.kind == kind
        # A deliberately slow read, e.g. an operator's report over the whole history.
        if kind == "sqlite":
            slow = asyncio.create_task(srv.storage._fetchall(SLOW_SQLITE))
        else:
            slow = asyncio.create_task(srv.storage._fetch("SELECT pg_sleep(3)"))
        await asyncio.sleep(0)  # let the slow query start first
        ticks = 0
        for i in range(20):
            assert await say(s, srv, "alpha", f"u{i}", f"during {i}", mid=f"m{i}") == 1
            ticks += 1
        assert not slow.done(), "the slow query finished first: make it slower for this machine"
        assert ticks == 20  # every webhook was acknowledged (stored) while the slow query ran
        await slow
