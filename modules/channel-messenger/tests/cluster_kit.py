"""Three botpress-py processes in cluster mode on one PostgreSQL schema, one data folder and a Graph emulator.

Used by test_cluster.py. Each node is a real ``python -m botpress_py start`` process on its own free port;
the client posts signed webhooks to them round robin, as a load balancer without stickiness would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import GraphEmulator

from botpress_py.testing import free_port, make_bot, postgres_schema, write_json

REPO = Path(__file__).resolve().parents[3]
PAGE, TOKEN, SECRET = "7007", "EAA-cluster-token", "cluster-app-secret-123456"
ADMIN_TOKEN = "cluster-admin-token-0123456789abcdef"
BOT = "clusterbot"

# The bot answers every text with "re: <the text>": replies say which message they answer.
TRANSFORMERS = '''
import contextvars

_TEXT = contextvars.ContextVar("text", default="")


def transform_input(event, bot):
    if event.type == "text":
        _TEXT.set(event.payload.get("text", ""))


def transform_output(event, bot):
    if event.payload.get("type") == "text":
        event.payload["text"] = "re: " + _TEXT.get()
'''


CLUSTER_SKIP_REASON = "DATABASE_URL not set: cluster mode needs PostgreSQL (.ci/run sets it)"


def database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        pytest.skip(CLUSTER_SKIP_REASON)
    return url


@asynccontextmanager
async def cluster_schema() -> AsyncIterator[str]:
    async with postgres_schema("bp_cluster", CLUSTER_SKIP_REASON) as schema:
        yield schema.name


def write_data(data: Path, graph: GraphEmulator, *, greeting: str | None = None, **messenger_config: Any) -> None:
    write_json(data / "global" / "botpress.config.json",
               {"modules": [{"location": "MODULES_ROOT/channel-messenger"}, {"location": "MODULES_ROOT/qna"}]})
    write_json(data / "global" / "config" / "channel-messenger.json",
               {"appSecret": SECRET, "verifyToken": "v", "graphApiUrl": graph.url})
    messenger: dict[str, Any] = {"enabled": True, "accessToken": TOKEN, "pageId": PAGE, "typingIndicators": False}
    if greeting:
        messenger["greeting"] = greeting
    messenger.update(messenger_config)
    make_bot(data, BOT, module_configs={"channel-messenger": messenger},
             qna={"entries": [], "fallback": [{"type": "text", "text": "noted"}]})
    (data / "bots" / BOT / "transformers.py").write_text(TRANSFORMERS)


@dataclass
class Node:
    port: int
    proc: asyncio.subprocess.Process
    log: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook(self) -> str:
        return f"{self.base}/api/v1/bots/___/mod/channel-messenger/webhook"


def node_env(schema: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_") and k not in ("DATABASE_URL",
                                                                                        "CLUSTER_ENABLED")}
    env.update({"DATABASE_URL": database_url(), "BP_DATABASE_SCHEMA": schema, "CLUSTER_ENABLED": "true",
                "BP_ADMIN_TOKEN": ADMIN_TOKEN, "BP_CONFIG_CLUSTER_NODETIMEOUT": "3s",
                "BP_CONFIG_CLUSTER_HEARTBEATINTERVAL": "500ms", **extra})
    return env


async def start_node(data: Path, env: dict[str, str]) -> Node:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "botpress_py", "start", "--data", str(data), "--port", str(port),
        "--host", "127.0.0.1", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    node = Node(port, proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
        if not line:
            raise AssertionError("node exited before it was ready:\n" + "".join(node.log[-30:]))
        node.log.append(line.decode(errors="replace"))
        if b"ready on" in line:
            break
    node.drain = asyncio.create_task(_drain_output(node))  # type: ignore[attr-defined]
    return node


async def _drain_output(node: Node) -> None:
    assert node.proc.stdout is not None
    while line := await node.proc.stdout.readline():
        node.log.append(line.decode(errors="replace"))


async def stop_node(node: Node, sig: int = signal.SIGTERM) -> None:
    if node.proc.returncode is None:
        node.proc.send_signal(sig)
        try:
            await asyncio.wait_for(node.proc.wait(), 30)
        except TimeoutError:
            node.proc.kill()
            await node.proc.wait()


@asynccontextmanager
async def nodes_running(data: Path, schema: str, count: int = 3, **extra: str) -> AsyncIterator[list[Node]]:
    env = node_env(schema, **extra)
    started = await asyncio.gather(*(start_node(data, env) for _ in range(count)), return_exceptions=True)
    nodes = [n for n in started if isinstance(n, Node)]
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield nodes
    finally:
        await asyncio.gather(*(stop_node(n) for n in nodes))


async def status(http: aiohttp.ClientSession, node: Node) -> dict[str, Any]:
    async with http.get(f"{node.base}/status") as r:
        return await r.json()


def message_body(user: str, text: str, mid: str) -> tuple[bytes, dict[str, str]]:
    body = GraphEmulator.webhook_body(PAGE, [GraphEmulator.user_message(PAGE, user, text, mid=mid)])
    return GraphEmulator.signed(body, SECRET)


async def post(http: aiohttp.ClientSession, node: Node, user: str, text: str, mid: str) -> int:
    raw, headers = message_body(user, text, mid)
    async with http.post(node.webhook, data=raw, headers=headers) as r:
        return r.status


async def post_messaging(http: aiohttp.ClientSession, node: Node, item: dict[str, Any]) -> int:
    raw, headers = GraphEmulator.signed(GraphEmulator.webhook_body(PAGE, [item]), SECRET)
    async with http.post(node.webhook, data=raw, headers=headers) as r:
        return r.status


def replies_by_user(graph: GraphEmulator) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for message in graph.sent_messages:
        out.setdefault(message["recipient"]["id"], []).append(message["message"].get("text", ""))
    return out


async def balanced(http: aiohttp.ClientSession, nodes: list[Node], timeout: float = 20.0) -> None:
    """Wait until the live nodes hold every partition between them, each its fair share."""
    deadline = time.monotonic() + timeout
    while True:
        shares = []
        for node in nodes:
            with_status = await status(http, node)
            me = next(n for n in with_status["nodes"] if n["self"])
            shares.append((me["partitions"], with_status["cluster"]["fairShare"]))
        if sum(p for p, _ in shares) == 64 and all(p == f for p, f in shares):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"partitions not balanced within {timeout} s: {shares}")
        await asyncio.sleep(0.2)
