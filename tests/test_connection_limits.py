"""Connection limits of the HTTP listener, on a real server over raw sockets: deadlines for a
request's headers, an idle keep-alive and a body; the cap on open connections; malformed HTTP
logged as one line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botpress_py.testing import make_bot, run_server, wait_for

SLACK = 3.0  # a loaded CI machine: the deadline plus this is "closed in time"
LONG = "60s"


@contextlib.asynccontextmanager
async def raw(server: Any) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Read until the server closes the connection; what it sent. Fails if still open after ``within``."""
    received = b""
    async with asyncio.timeout(within):
        while True:
            try:
                chunk = await reader.read(4096)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


async def trickle(writer: asyncio.StreamWriter, piece: bytes, every: float = 0.2) -> None:
    """A slow client: a few bytes now and then, never finishing."""
    with contextlib.suppress(OSError, RuntimeError):
        while not writer.is_closing():
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every)  # the slow client's pace


async def answer_of(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    """Send one request, read its whole answer (headers and a Content-Length body)."""
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


def limits(**over: str | int) -> dict[str, Any]:
    return {"headerTimeout": LONG, "keepAliveTimeout": LONG, "bodyTimeout": LONG, **over}


async def test_half_sent_headers_are_closed_after_the_header_timeout(data_dir: Path, env: dict,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="botpress_py")
    async with run_server(data_dir, env, modules=[], httpServer=limits(headerTimeout="1s")) as srv:
        async with raw(srv) as (reader, writer):
            started = time.monotonic()
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n")
            slow = asyncio.create_task(trickle(writer, b"X-Slow: a\r\n"))
            try:
                assert await closed_by_server(reader, 1 + SLACK) == b""
            finally:
                slow.cancel()
            assert time.monotonic() - started >= 0.9  # the deadline, not at once
        async with raw(srv) as (reader, writer):  # a client that sends its request in time is served
            assert b" 200 " in await answer_of(reader, writer, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert srv.metrics.counters["bp_http_connections_timed_out_total"] == 1
    assert any("no complete request headers within 1s" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)


async def test_an_idle_keep_alive_connection_is_closed(data_dir: Path, env: dict) -> None:
    async with run_server(data_dir, env, modules=[], httpServer=limits(keepAliveTimeout="1s")) as srv, \
            raw(srv) as (reader, writer):
        first = await answer_of(reader, writer, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in first and b"Connection: close" not in first  # kept alive...
        assert await closed_by_server(reader, 1 + SLACK) == b""  # ...until idle for keepAliveTimeout


async def test_a_body_that_never_arrives_is_closed_after_the_body_timeout(data_dir: Path, env: dict, echo: Any,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="botpress_py")
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"], httpServer=limits(bodyTimeout="1s")) as srv:
        async with raw(srv) as (reader, writer):
            writer.write(b"POST /api/v1/bots/alpha/mod/echo/in HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"user\": ")
            slow = asyncio.create_task(trickle(writer, b" "))
            try:
                await closed_by_server(reader, 1 + SLACK)
            finally:
                slow.cancel()
        async with aiohttp.ClientSession() as s, s.post(f"{srv.url}/api/v1/bots/alpha/mod/echo/in",
                                                        json={"user": "u1", "text": "on time"}) as r:
            assert r.status == 200  # a body that arrives is read as before
    assert any("request body not received within 1s" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the closed read is no server error


async def test_connections_over_the_cap_are_closed_while_open_ones_are_served(
        data_dir: Path, env: dict, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="botpress_py")
    cap, extra = 4, 4
    async with run_server(data_dir, env, modules=[], httpServer=limits(maxConnections=cap)) as srv:
        # One burst from zero: all accepted in one go, before any of them is counted.
        burst = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", srv.bound_port)
                                       for _ in range(cap + extra)))
        try:
            await wait_for(lambda: srv.metrics.counters["bp_http_connections_refused_total"] == extra)
            assert srv.open_connections() == cap
            for _ in range(3):  # one more at a time: answered 503 (or reset) and closed at once
                async with raw(srv) as (reader, writer):
                    sent = await closed_by_server(reader, SLACK)
                    assert sent == b"" or sent.startswith(b"HTTP/1.1 503 "), sent
            answers = []
            for reader, writer in burst:  # the connections it kept are still served
                try:
                    answers.append(await answer_of(reader, writer, b"GET /status HTTP/1.1\r\nHost: x\r\n"
                                                                   b"Connection: close\r\n\r\n"))
                except (asyncio.IncompleteReadError, ConnectionError):
                    answers.append(b"")  # closed by the server before it could say why
            assert sum(b" 200 " in a[:20] for a in answers) == cap
            assert all(a == b"" or a.startswith(b"HTTP/1.1 503 ") for a in answers if b" 200 " not in a[:20])
        finally:
            for _, writer in burst:
                writer.close()
        await wait_for(lambda: srv.open_connections() == 0)
        async with aiohttp.ClientSession() as s, s.get(f"{srv.url}/status") as r:
            assert r.status == 200  # room again once they closed
        assert srv.metrics.counters["bp_http_connections_refused_total"] == extra + 3
    refusals = [r for r in caplog.records if "refusing new connections" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING  # throttled: one line for all


async def test_malformed_requests_are_one_info_line_without_traceback(data_dir: Path, env: dict,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="botpress_py")
    async with run_server(data_dir, env, modules=[]) as srv:
        for _ in range(5):
            async with raw(srv) as (reader, writer):
                writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\nThis is no header\r\n\r\n")
                assert b" 400 " in (await closed_by_server(reader, SLACK))[:20]
        async with aiohttp.ClientSession() as s, s.get(f"{srv.url}/status") as r:
            assert r.status == 200
    lines = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # throttled
    assert lines[0].levelno == logging.INFO and "from 127.0.0.1: " in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_body_that_cannot_be_decoded_is_answered_400_in_one_line(data_dir: Path, env: dict, echo: Any,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="botpress_py")
    make_bot(data_dir, "alpha")
    async with run_server(data_dir, env, modules=["echo"]) as srv, raw(srv) as (reader, writer):
        writer.write(b"POST /api/v1/bots/alpha/mod/echo/in HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\nthis is not gzip....")
        answer = await closed_by_server(reader, SLACK)
        assert answer.startswith(b"HTTP/1.1 400 ") and b"malformed request body" in answer
        assert b"Can not decode content-encoding: gzip" in answer
    lines = [r.getMessage() for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert lines == ["malformed HTTP request from 127.0.0.1: Can not decode content-encoding: gzip"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
