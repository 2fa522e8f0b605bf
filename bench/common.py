"""Shared pieces of the benchmarks: machine facts, signed Messenger bodies, processes, tables."""

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
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

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

_CLK_TCK = os.sysconf("SC_CLK_TCK")


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
        return (int(fields[0]) + int(fields[1]) + int(fields[2])) / _CLK_TCK

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


def write_wrk_bodies(path: Path, *, posts: int, per_post: int, page: str, tag: str, psid_base: int) -> Path:
    """``posts`` lines of ``<signature>\\t<body>`` for bench/wrk_webhook.lua; every mid unique."""
    with path.open("wb") as out:
        for post in range(posts):
            first = psid_base + post * per_post
            raw, sig = signed_post(page, [str(first + k) for k in range(per_post)], tag)
            out.write(sig.encode() + b"\t" + raw + b"\n")
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
                      mark_seen: bool = True) -> None:
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
        config: dict[str, Any] = {"enabled": True, "accessToken": bot.token, "typingIndicators": False,
                                  "messageDelay": 0}
        if bot.with_page_id:
            config["pageId"] = bot.page_id
        if not mark_seen:
            config["disabledActions"] = ["mark_seen"]
        write_json(folder / "config" / f"{MODULE}.json", config)
        write_json(folder / "qna.json", BENCH_QNA)


# -- processes ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BP_", "PORT", "EXTERNAL_URL")) and k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@dataclass
class ManagedProcess:
    """A child process this benchmark started (and only ever stops by its own pid)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of every thread of the process so far."""
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK
        return 0.0

    def thread_stats(self) -> dict[str, tuple[float, float, int]]:
        """Per thread (by name, ``main`` for the event loop): user s, system s, context switches."""
        out: dict[str, tuple[float, float, int]] = {}
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    switches = sum(int(line.split()[1]) for line in (task / "status").read_text().splitlines()
                                   if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
                    name = "main" if task.name == str(self.pid) else (task / "comm").read_text().strip()
                    user, system, count = out.get(name, (0.0, 0.0, 0))
                    out[name] = (user + int(fields[11]) / _CLK_TCK, system + int(fields[12]) / _CLK_TCK,
                                 count + switches)
        return out

    def memory_kb(self, key: str = "VmRSS") -> int:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def stop(self, timeout: float = 20.0) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.popen.wait), timeout)
            except TimeoutError:
                self.popen.kill()
                await asyncio.to_thread(self.popen.wait)
        return self.popen.poll()


def spawn(name: str, argv: list[str], *, core: int | None, log_path: Path, env: dict[str, str] | None = None,
          stdout_pipe: bool = False) -> ManagedProcess:
    """Start ``argv`` pinned to ``core`` with ``taskset -c`` (as the method asks)."""
    command = (["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []) + argv
    log_file = log_path.open("wb")
    popen = subprocess.Popen(command, cwd=ROOT, env=env or clean_env(), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE if stdout_pipe else log_file, stderr=log_file)
    log_file.close()
    return ManagedProcess(name, popen, log_path)


def botpress_command(data_dir: Path, port: int, *, uvloop: bool = False, sql_counts: Path | None = None
                     ) -> list[str]:
    start = ["start", "--data", str(data_dir), "--port", str(port)]
    if uvloop:
        return [sys.executable, "-m", "bench.uvloop_start", *start]
    if sql_counts is not None:
        return [sys.executable, "-m", "bench.sql_count_start", str(sql_counts), *start]
    return [sys.executable, "-m", "botpress_py", *start]


async def wait_until_serving(url: str, process: ManagedProcess, timeout: float = 120.0,
                             interval: float = 0.02) -> dict[str, Any]:
    """Poll ``url`` (GET /status) until it answers 200; the JSON it answered."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < deadline:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return dict(await response.json(content_type=None))
            await asyncio.sleep(interval)  # polling step, bounded by the deadline
    raise TimeoutError(f"{process.name} did not serve {url} within {timeout:.0f} s:\n{process.log_tail()}")


async def fetch_metrics(port: int) -> dict[str, float]:
    """Counters of GET /metrics (name without labels → value)."""
    out: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
            http.get(f"http://{HOST}:{port}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
    return out


def inbox_counts(data_dir: Path) -> dict[str, int]:
    """Inbox rows by status, read from the stopped server's SQLite file."""
    path = data_dir / "storage" / "core.sqlite"
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {str(s): int(n) for s, n in db.execute("SELECT status, COUNT(*) FROM inbox GROUP BY status")}


# -- numbers and tables ------------------------------------------------------------------------------
def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already-sorted ``values`` (NaN when empty)."""
    if not values:
        return float("nan")
    rank = max(1, min(len(values), round(pct / 100 * len(values) + 0.5)))
    return values[rank - 1]


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def print_table(title: str, headers: list[str], rows: list[list[str]], notes: Iterable[str] = (), *,
                machine: list[str] | None = None, load: ForeignLoad | None = None) -> str:
    """A Markdown table with the machine facts above it (pasted as-is into docs/benchmarks.md)."""
    facts = list(machine or machine_lines())
    if load is not None:
        facts.append(load.summary())
    lines = [f"### {title}", "", *[f"- {line}" for line in facts], ""]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    notes = list(notes)
    if notes:
        lines.append("")
        lines.extend(notes)
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def profile_summary(raw_path: Path, top: int = 25) -> str:
    """Self and inclusive shares of a py-spy ``--format raw`` profile, by function (lines folded)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") else frame for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    if not total:
        return "no samples"

    def lines(counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"  {100 * n / total:5.1f}%  {name}" for name, n in ranked]

    return "\n".join([f"{total} samples; self time:", *lines(own), "inclusive:", *lines(inclusive)])
