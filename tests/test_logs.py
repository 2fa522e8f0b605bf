"""The log formats and per-module levels (botpress_py.logs), and the request id of HTTP answers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.log_context import log_scope, sane_request_id
from botpress_py.logs import LevelFilter, configure_logging
from botpress_py.testing import make_bot, run_server, wait_for


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_levels_match_module_names_their_bots_and_logger_prefixes() -> None:
    f = LevelFilter(logging.INFO, {"my-module": logging.DEBUG, "botpress_py.storage": logging.WARNING,
                                   "botpress_py.storage.sqlite": logging.ERROR})
    assert f.level_of("botpress_py.module.my-module") == logging.DEBUG
    assert f.level_of("botpress_py.module.my-module.graph") == logging.DEBUG
    assert f.level_of("botpress_py.bot.shop.my-module") == logging.DEBUG
    assert f.level_of("botpress_py.bot.shop.other") == logging.INFO
    assert f.level_of("botpress_py.module.my-module-two") == logging.INFO  # a prefix ends at a dot
    assert f.level_of("botpress_py.storage.postgres") == logging.WARNING
    assert f.level_of("botpress_py.storage.sqlite") == logging.ERROR  # the most specific key wins
    assert f.level_of("aiohttp.server") == logging.INFO


def test_json_lines_carry_the_context_and_the_traceback(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("info", "json", {"noisy": "error"}, stream=out, force=True)
    log = logging.getLogger("botpress_py.test_logs")
    with log_scope(request_id="r-1", bot="shop", channel="test", user="abc", event_id="e1"):
        log.info("hello %s", "there")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    log.debug("not shown")
    logging.getLogger("botpress_py.module.noisy").warning("quiet module")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["hello there", "failed"]
    first = lines[0]
    assert first["request_id"] == "r-1" and first["bot"] == "shop" and first["user"] == "abc"
    assert first["level"] == "info" and first["logger"] == "botpress_py.test_logs" and first["time"].endswith("Z")
    assert "RuntimeError: boom" in lines[1]["exc_info"] and "exc_info" not in first
    with pytest.raises(ValueError, match="log format 'xml'"):
        configure_logging("info", "xml", force=True)


def test_request_ids_are_honoured_only_when_sane() -> None:
    assert sane_request_id("abc-123.X:y_z") == "abc-123.X:y_z"
    for bad in ("", None, "a b", "x" * 65, "é", "a\nb", "-leading"):
        assert sane_request_id(bad) != bad and len(sane_request_id(bad)) == 32


async def test_every_answer_carries_a_request_id_errors_too(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        async with s.get(f"{srv.url}/status", headers={"X-Request-Id": "mine-1"}) as r:
            assert r.headers["X-Request-Id"] == "mine-1"
        async with s.get(f"{srv.url}/api/v1/bots/nobody/mod/echo/x") as r:
            assert r.status == 404 and len(r.headers["X-Request-Id"]) == 32
        async with s.post(f"{srv.url}/api/v1/bots/alpha/mod/echo/in", json={"user": "u", "text": "hi"},
                          headers={"X-Request-Id": "hook-7"}) as r:
            assert r.status == 200 and r.headers["X-Request-Id"] == "hook-7"

        async def stored() -> list[dict[str, Any]]:
            return [e for e in await srv.storage.messages_for("alpha", "test", "u") if e["direction"] == "incoming"]
        [event] = await wait_for(stored)
    # Stored with the event: the id reaches its processing even after a restart.
    assert event["flags"]["requestId"] == "hook-7"
