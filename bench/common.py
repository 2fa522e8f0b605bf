"""Shared pieces of the benchmarks: constants, machine facts, signed Messenger bodies, data folders."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
SERVER_CORE = 0
LOAD_CORE = 1
HOST = "127.0.0.1"  # every benchmark talks to this machine only

APP_SECRET = "bench-app-secret-0123456789"
VERIFY_TOKEN = "bench-verify-token"
ADMIN_TOKEN = "bench-admin-token"
MODULE = "channel-messenger"
WEBHOOK_PATH = f"/api/v1/bots/{{bot}}/mod/{MODULE}/webhook"

# One short answer per message: one Send API call per event (plus mark_seen) at the emulator.
BENCH_QNA: dict[str, Any] = {
    "entries": [{"id": "hello", "questions": ["hello"], "answers": [{"type": "text", "text": "hi there"}]}],
    "fallback": [{"type": "text", "text": "sorry?"}],
}

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- machine ------------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_lines() -> list[str]:
    """What a reader needs to compare a table with another machine's."""
    import aiohttp as _aiohttp

    uv = "not installed"
    with contextlib.suppress(ImportError):
        import uvloop

        uv = uvloop.__version__
    load1, load5, _ = os.getloadavg()
    return [
        f"CPU: {cpu_model()}, {os.cpu_count()} cores; server pinned to core {SERVER_CORE}, "
        f"load generator and Graph emulator on core {LOAD_CORE}",
        f"Python {platform.python_version()}, aiohttp {_aiohttp.__version__}, SQLite {sqlite3.sqlite_version}, "
        f"uvloop {uv}, {wrk_version()}; kernel {platform.release()}",
        f"load average at start: {load1:.2f} (1 min), {load5:.2f} (5 min); "
        f"date {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
    ]


def wrk_version() -> str:
    path = shutil.which("wrk")
    if path is None:
        return "wrk not installed"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    first = (out.stdout or out.stderr).splitlines()[:1]
    return first[0].split("Copyright")[0].strip() if first else "wrk"


class ForeignLoad:
    """CPU used by processes other than this benchmark's while a scenario runs.

    /proc/stat's user+nice+system time of the whole machine, minus this process and its
    (reaped) children: what other users of the machine took from the cores meanwhile.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.machine0, self.ours0 = self._machine(), self._ours()

    @staticmethod
    def _machine() -> float:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        return (int(fields[0]) + int(fields[1]) + int(fields[2])) / CLK_TCK

    @staticmethod
    def _ours() -> float:
        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total

    def summary(self) -> str:
        """Call once every child is stopped (their CPU counts as ours only once reaped)."""
        seconds = time.monotonic() - self.started
        foreign = (self._machine() - self.machine0) - (self._ours() - self.ours0)
        share = max(0.0, foreign) / seconds if seconds > 0 else 0.0
        load1, _, _ = os.getloadavg()
        verdict = "quiet" if share < 0.05 else "LOADED: other work competed for the cores"
        return (f"other processes used {share:.0%} of one core on average during these {seconds:.0f} s "
                f"({verdict}); load average at the end {load1:.2f}")


def pin_to_load_core() -> None:
    """The bench process (load driver) runs on the core the server does not use."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > LOAD_CORE:
        os.sched_setaffinity(0, {LOAD_CORE})


def use_uvloop() -> str:
    """Run the bench process on uvloop when it is installed (a cheaper load driver)."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


# -- Messenger bodies -----------------------------------------------------------------------------
def signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def message_event(page: str, psid: str, mid: str, text: str = "hello") -> dict[str, Any]:
    return {"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": int(time.time() * 1000),
            "message": {"mid": mid, "text": text}}


def webhook_body(page: str, events: list[dict[str, Any]]) -> bytes:
    body = {"object": "page", "entry": [{"id": page, "time": int(time.time() * 1000), "messaging": events}]}
    return json.dumps(body, separators=(",", ":")).encode()


def signed_post(page: str, psids: Sequence[str], tag: str, secret: str = APP_SECRET,
                text: str = "hello") -> tuple[bytes, str]:
    """(raw body, X-Hub-Signature-256) of one delivery: one message per PSID, mids unique per ``tag``."""
    events = [message_event(page, psid, f"m_{tag}_{psid}", text) for psid in psids]
    raw = webhook_body(page, events)
    return raw, signature(secret, raw)


def http_post_bytes(path: str, raw: bytes, sig: str, port: int) -> bytes:
    """A complete HTTP/1.1 request, ready to write to a keep-alive connection."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"X-Hub-Signature-256: {sig}\r\nContent-Length: {len(raw)}\r\n\r\n")
    return head.encode() + raw


def sha1_signature(secret: str, raw: bytes) -> str:
    """The legacy ``X-Hub-Signature`` (HMAC-SHA1), which Meta still sends and Bottender checks."""
    return "sha1=" + hmac.new(secret.encode(), raw, hashlib.sha1).hexdigest()


def write_wrk_bodies(path: Path, *, posts: int, per_post: int, page: str, tag: str, psid_base: int,
                     sha1: bool = False) -> Path:
    """``posts`` lines of ``<signature>\\t<body>`` for bench/wrk_webhook.lua; every mid unique.

    ``sha1``: each line also carries the SHA-1 ``X-Hub-Signature`` (``<sha256>\\t<sha1>\\t<body>``),
    as Meta sends both; servers that check only one of them get what they need.
    """
    with path.open("wb") as out:
        for post in range(posts):
            first = psid_base + post * per_post
            raw, sig = signed_post(page, [str(first + k) for k in range(per_post)], tag)
            extra = sha1_signature(APP_SECRET, raw).encode() + b"\t" if sha1 else b""
            out.write(sig.encode() + b"\t" + extra + raw + b"\n")
    return path


# -- data folders -----------------------------------------------------------------------------------
@dataclass
class BenchBot:
    bot_id: str
    page_id: str
    token: str
    with_page_id: bool = True


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def write_data_folder(data_dir: Path, graph_url: str, bots: Iterable[BenchBot], *, watch: bool = True,
                      mark_seen: bool = True, graph_batching: bool = True) -> None:
    """A data folder of messenger-enabled bots answering from BENCH_QNA through ``graph_url``."""
    write_json(data_dir / "global" / "botpress.config.json", {
        "httpServer": {"host": HOST},
        "admin": {"token": ADMIN_TOKEN},
        "watch": {"enabled": watch},
        "modules": [{"location": f"MODULES_ROOT/{MODULE}", "enabled": True},
                    {"location": "MODULES_ROOT/qna", "enabled": True}],
    })
    write_json(data_dir / "global" / "config" / f"{MODULE}.json",
               {"appSecret": APP_SECRET, "verifyToken": VERIFY_TOKEN, "graphApiUrl": graph_url})
    for bot in bots:
        folder = data_dir / "bots" / bot.bot_id
        write_json(folder / "bot.config.json", {"id": bot.bot_id, "name": bot.bot_id})
        # sendRateLimit 0: the local Graph API is not Meta's, so the bench measures the server, not Meta's
        # per-Page budget (250/s by default would cap every one-Page scenario).
        config: dict[str, Any] = {"enabled": True, "accessToken": bot.token, "typingIndicators": False,
                                  "messageDelay": 0, "sendRateLimit": 0}
        if bot.with_page_id:
            config["pageId"] = bot.page_id
        if not mark_seen:
            config["disabledActions"] = ["mark_seen"]
        if not graph_batching:  # on by default, as for any bot: Meta's batch requests are a real feature
            config["graphBatching"] = False
        write_json(folder / "config" / f"{MODULE}.json", config)
        write_json(folder / "qna.json", BENCH_QNA)
