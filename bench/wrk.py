"""wrk, the closed-loop saturation load: one thread on the load core, pre-signed deliveries."""

from __future__ import annotations

import asyncio
import json
import re
import resource
from dataclasses import dataclass
from pathlib import Path

from bench.common import BENCH_DIR, LOAD_CORE


@dataclass
class WrkResult:
    requests: int
    seconds: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    wrapped: int
    cpu_seconds: float
    command: str

    @property
    def acked_per_s(self) -> float:
        return (self.requests - self.status_errors) / self.seconds

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.seconds


def wrk_argv(url: str, bodies: Path, connections: int, duration: float) -> list[str]:
    return ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout",
            "10s", "-s", str(BENCH_DIR / "wrk_webhook.lua"), url, "--", str(bodies)]


async def run_wrk(url: str, bodies: Path, connections: int, duration: float) -> WrkResult:
    """One wrk run; its CPU is what this process's reaped children used meanwhile (only wrk runs)."""
    argv = wrk_argv(url, bodies, connections, duration)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.decode(errors="replace")
    match = re.search(r"BENCH_JSON (\{.*\})", text)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}")
    data = json.loads(match.group(1))
    return WrkResult(
        requests=data["requests"], seconds=data["duration_us"] / 1e6, status_errors=data["status"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, max_ms=data["max_us"] / 1000,
        wrapped=data["wrapped"],
        cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        command=" ".join(argv).replace(str(bodies), "BODIES").replace(str(BENCH_DIR) + "/", "bench/"),
    )
