"""Processes the benchmarks start: pinned, measured (CPU, memory), stopped only by their own pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import CLK_TCK, HOST, ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BP_", "PORT", "EXTERNAL_URL")) and k not in ("DATABASE_URL", "REDIS_URL",
                                                                               "CLUSTER_ENABLED")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _pid_cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return 0.0


def _pid_start_time(pid: int) -> int | None:
    """Clock ticks after boot when ``pid`` started: tells a process from a later one with its pid."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # a zombie has exited already
            return int(fields[19])
    return None


def _pid_memory_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def core_busy_seconds(core: int) -> float:
    """Seconds core ``core`` was busy (anything but idle and iowait, steal included) since boot."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(v) for v in line.split()[1:]]
            return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    return 0.0


def cpu_of_command(comm: str) -> float:
    """CPU seconds so far of every live process named ``comm`` (e.g. PostgreSQL's backends), read only.

    Each counts its children that exited too (cutime, cstime): a backend that ends within the
    window moves its CPU into its parent's (the postmaster's) count instead of out of the sum.
    """
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            if text[text.index("(") + 1 : text.rindex(")")] == comm:
                fields = text.rsplit(")", 1)[1].split()
                total += sum(int(f) for f in fields[11:15]) / CLK_TCK
    return total


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
        return _pid_cpu_seconds(self.pid)

    def descendants(self) -> list[int]:
        """Pids of the processes this one started, and theirs (e.g. server workers)."""
        found: list[int] = []
        pending = [self.pid]
        while pending and len(found) < 1024:  # bounded walk of /proc/<pid>/task/*/children
            pid = pending.pop()
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError, ValueError):
                        children = [int(c) for c in (task / "children").read_text().split()]
                        found += children
                        pending += children
        return found

    def tree_cpu_seconds(self) -> float:
        """CPU of the process and every live descendant (a server with several workers)."""
        return self.cpu_seconds() + sum(_pid_cpu_seconds(pid) for pid in self.descendants())

    def tree_memory_kb(self, key: str = "VmRSS") -> int:
        return self.memory_kb(key) + sum(_pid_memory_kb(pid, key) for pid in self.descendants())

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
                    out[name] = (user + int(fields[11]) / CLK_TCK, system + int(fields[12]) / CLK_TCK,
                                 count + switches)
        return out

    def memory_kb(self, key: str = "VmRSS") -> int:
        return _pid_memory_kb(self.pid, key)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; descendants it leaves behind are killed too.

        A parent (e.g. ``start --workers N``) is expected to stop its own children; any still
        running after it exited are ours to end, each by its pid and start time (never a pid
        that was reused meanwhile).
        """
        started_by_it = [(pid, _pid_start_time(pid)) for pid in self.descendants()]
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.popen.wait), timeout)
            except TimeoutError:
                self.popen.kill()
                await asyncio.to_thread(self.popen.wait)
        deadline = time.monotonic() + timeout
        left = [(pid, start) for pid, start in started_by_it if start is not None]
        while left and time.monotonic() < deadline:  # bounded grace for the children to exit
            left = [(pid, start) for pid, start in left if _pid_start_time(pid) == start]
            if left:
                await asyncio.sleep(0.1)
        for pid, start in left:
            if _pid_start_time(pid) == start:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        return self.popen.poll()


def spawn(name: str, argv: list[str], *, core: int | str | None, log_path: Path, env: dict[str, str] | None = None,
          stdout_pipe: bool = False, cwd: Path | None = None) -> ManagedProcess:
    """Start ``argv`` pinned to ``core`` (a core, or a list such as "0,1") with ``taskset -c``."""
    command = (["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []) + argv
    log_file = log_path.open("wb")
    popen = subprocess.Popen(command, cwd=cwd or ROOT, env=env or clean_env(), stdin=subprocess.DEVNULL,
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
