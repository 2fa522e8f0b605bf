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

from botpress_py.events import IOEvent
from botpress_py.log_context import current_fields, log_fields, log_scope, sane_request_id
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


class FieldsRecorder(logging.Handler):
    """Records each line with the log fields in force where it was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), log_fields(current_fields())))


async def test_the_request_id_survives_the_inbox_of_a_parked_bot(data_dir: Path, env: dict, echo: Any,
                                                                 restore_root: None) -> None:
    """Events of a disabled bot wait in storage only; processed once it is enabled, read back from
    storage, they are still logged under the request that brought them, and so are their replies."""
    make_bot(data_dir, "alpha")
    recorder = FieldsRecorder()
    pipeline_log = logging.getLogger("botpress_py.pipeline")
    pipeline_log.addHandler(recorder)
    old_level = pipeline_log.level
    pipeline_log.setLevel(logging.DEBUG)
    try:
        async with run_server(data_dir, env, modules=["echo"]) as srv:
            ctx = srv.registry.records["alpha"].contexts["echo"]
            await srv.registry.set_disabled("alpha", True)
            with log_scope(request_id="parked-req-1"):
                await ctx.receive([IOEvent(type="text", channel="test", direction="incoming", botId="alpha",
                                           target="u1", payload={"text": "while off"})])
            assert srv.pipeline.parked_bots() == {"alpha"}
            await srv.registry.set_disabled("alpha", False)
            await wait_for(lambda: [m for m, _ in recorder.lines if "delivered" in m])
    finally:
        pipeline_log.removeHandler(recorder)
        pipeline_log.setLevel(old_level)
    about = [(m, f) for m, f in recorder.lines if "incoming event" in m or "delivered" in m]
    assert len(about) == 2, recorder.lines
    for message, fields in about:
        assert fields["request_id"] == "parked-req-1" and fields["bot"] == "alpha", (message, fields)
        assert fields["user"] and fields["user"] != "u1"
