"""``botpress-py start --log-format json`` on a real server process with the Messenger channel: one JSON
object per line, the webhook's request id carried to the delivery of the reply, and never a secret or
(masking on) a message text in the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import ADMIN, PAGE_A, SECRET, TOKEN_A, VERIFY, FakeMeta, add_bot, messages_with, write_global
from observation_kit import api

from botpress_py.testing import wait_for, write_json

REPO = Path(__file__).resolve().parents[3]
USER = "98765432109"  # a PSID: never in the log, only its hash
TEXTS = ("zebracard-7781", "SECRET-REPLY-4242", "NOTIFY-TEXT-9090")
QNA = {"entries": [{"id": "card", "questions": ["my card is zebracard-7781"],
                    "answers": [{"type": "text", "text": "Noted SECRET-REPLY-4242"}]}],
       "fallback": [{"type": "text", "text": "fallback"}]}


class Process:
    def __init__(self, url: str) -> None:
        self.url = url


@contextlib.asynccontextmanager
async def server_process(data: Path, log_file: Path, *args: str) -> AsyncIterator[Process]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_") and k != "DATABASE_URL"}
    with log_file.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "botpress_py", "start", "--data", str(data), "--port", "0", "--host", "127.0.0.1",
            *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=log)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        match = re.search(rb"ready on (http://\S+)", line)
        assert match, line + log_file.read_bytes()[-3000:]
        yield Process(match.group(1).decode())
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def json_lines(log_file: Path) -> list[dict[str, Any]]:
    lines = [line for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object, or this raises


async def test_json_logs_carry_the_request_id_and_never_a_secret_or_a_masked_text(
        tmp_path: Path, emulator: GraphEmulator, http: aiohttp.ClientSession) -> None:
    data = tmp_path / "data"
    write_global(data, emulator)
    write_json(data / "global" / "botpress.config.json", {
        "modules": [{"location": "MODULES_ROOT/channel-messenger"}, {"location": "MODULES_ROOT/qna"}],
        "admin": {"token": ADMIN},
        # The config keys; the options below win for the format and the level, levels stay per logger.
        "logs": {"format": "text", "level": "warning",
                 "levels": {"botpress_py.loader": "warning", "qna": "error"}},
    })
    add_bot(data, "shop", TOKEN_A, qna=QNA, maskIncomingMessages=True, maskOutgoingMessages=True)
    log_file = tmp_path / "server.log"
    async with server_process(data, log_file, "--log-format", "json", "--log-level", "debug") as server:
        meta = FakeMeta(http, server)
        body = GraphEmulator.webhook_body(PAGE_A, [GraphEmulator.user_message(PAGE_A, USER, TEXTS[0], "m.1")])
        status, _ = await meta.post(body, headers={"X-Request-Id": "req-from-meta-1"})
        assert status == 200
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 1)
        code, _ = await api(http, server, "shop", "notify", {"userId": USER,
                                                             "payload": {"type": "text", "text": TEXTS[2]}})
        assert code == 202
        await emulator.wait_for(lambda e: len(messages_with(e, TOKEN_A)) == 2)
        # A request id that could break a header or a log line is replaced, and every answer says which it got.
        async with http.get(f"{server.url}/status", headers={"X-Request-Id": "bad id\twith spaces"}) as r:
            generated = r.headers["X-Request-Id"]
            assert re.fullmatch(r"[0-9a-f]{32}", generated)
        async with http.get(f"{server.url}/status", headers={"X-Request-Id": "ok-id.42"}) as r:
            assert r.headers["X-Request-Id"] == "ok-id.42"

        def delivered() -> list[dict[str, Any]]:
            return [r for r in json_lines(log_file) if "delivered on messenger" in r["message"]]
        await wait_for(lambda: len(delivered()) == 2, 10)
        # The same traffic in /metrics: the webhook's acknowledgement and the reply timed, per channel.
        async with http.get(f"{server.url}/metrics") as r:
            metrics = await r.text()
    for line in ('bp_events_in_total{bot="shop",channel="messenger"} 1.0',
                 'bp_events_out_total{bot="shop",channel="messenger"} 2.0',
                 'bp_ack_latency_seconds_count{channel="messenger"} 1.0',
                 'bp_reply_latency_seconds_count{channel="messenger"} 1.0'):  # the notify message answers nothing
        assert line in metrics.splitlines(), line
    assert USER not in metrics and TEXTS[0] not in metrics
    records = json_lines(log_file)
    assert {"time", "level", "logger", "message"} <= set(records[0])
    for_request = [r for r in records if r.get("request_id") == "req-from-meta-1"]
    # Processed and delivered under the webhook's request id, with the bot, channel, hashed user and event.
    processed = [r for r in for_request if re.search(r"incoming event \S+ done", r["message"])]
    assert len(processed) == 1 and processed[0]["logger"] == "botpress_py.pipeline", for_request
    reply = [r for r in for_request if "delivered on messenger" in r["message"]]
    assert len(reply) == 1 and reply[0]["bot"] == "shop" and reply[0]["channel"] == "messenger"
    assert re.fullmatch(r"[0-9a-f]{16}", reply[0]["user"]) and reply[0]["event_id"] != processed[0]["event_id"]
    # The notify message has its own request id (the admin call's), and the same user hash.
    notify = [r for r in records if "delivered on messenger" in r["message"] and r is not reply[0]]
    assert len(notify) == 1 and notify[0]["user"] == reply[0]["user"]
    assert notify[0].get("request_id") not in (None, "req-from-meta-1")
    # Per-module levels: a logger prefix and a module name (its bots' loggers too) quieter than the rest.
    assert not [r for r in records if r["logger"].startswith("botpress_py.loader") and r["level"] == "info"]
    assert not [r for r in records if r["logger"] == "botpress_py.bot.shop.qna"]
    assert [r for r in records if r["logger"] == "botpress_py.bot.shop.channel-messenger" and r["level"] == "info"]
    text = log_file.read_text(encoding="utf-8")
    for secret in (SECRET, TOKEN_A, ADMIN, VERIFY, USER, *TEXTS):
        assert secret not in text, f"{secret!r} is in the log"
