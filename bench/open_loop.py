"""One open-loop run against a fresh botpress-py: fixed-rate signed deliveries (one event per
POST, a new user each), replies timed at the Graph emulator. Used by e2e and its rate search."""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import HOST, http_post_bytes, signed_post
from bench.emulator_service import page_id
from bench.loadgen import HttpLoad
from bench.targets import ANY_BOT_WEBHOOK, bench_data, start_botpress


async def emulator_messages(http: aiohttp.ClientSession, graph_url: str, since: int) -> tuple[int, list[Any]]:
    async with http.get(f"{graph_url}/_bench/messages", params={"since": str(since)}) as response:
        data = await response.json()
        return int(data["total"]), list(data["messages"])


@dataclass
class E2ERow:
    fraction: float
    rate: float
    sent: int
    acked: int
    non_200: int
    replied: int
    latencies: list[float]
    ack_latencies: list[float]
    send_lag: list[float]
    send_seconds: float
    drain_seconds: float
    server_cpu: float
    driver_cpu: float
    last_reply_after_load_ms: float = float("nan")  # the last reply's arrival after the last request was due
    sql: str = ""

    @property
    def lost(self) -> int:
        return self.acked - self.replied


async def measure_open_loop(work: Path, graph_url: str, rate: float, duration: float, psid_base: int,
                            args: argparse.Namespace, *, name: str, fraction: float, drain_timeout: float,
                            stall_timeout: float) -> E2ERow:
    """A fresh server loaded at ``rate`` events/s (one event per POST, a new user each) for ``duration``."""
    count = max(1, int(rate * duration))
    data_dir = bench_data(work, name, graph_url, mark_seen=not args.no_mark_seen,
                          graph_batching=not getattr(args, "no_graph_batching", False))
    sql_counts = data_dir.parent / "sql-counts.txt" if args.sql_count else None
    running, _, _ = await start_botpress(data_dir, data_dir.parent / "server.log", sql_counts=sql_counts)
    psids = [str(psid_base + i) for i in range(count)]
    path = ANY_BOT_WEBHOOK
    requests = [http_post_bytes(path, *signed_post(page_id(0), [psid], f"e{psid_base}"), running.port)
                for psid in psids]
    replies: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            seen, _ = await emulator_messages(http, graph_url, 0)
            load = HttpLoad(HOST, running.port, max_connections=args.max_connections)
            cpu0, self0 = running.process.cpu_seconds(), _self_cpu()
            t0 = time.monotonic()
            outcomes = await load.open_loop(lambda i: requests[i], count, rate, drain_timeout=120)
            send_seconds = time.monotonic() - t0
            cpu1, self1 = running.process.cpu_seconds(), _self_cpu()
            load.close()
            acked = sum(1 for o in outcomes if o.status == 200)
            wanted = set(psids)
            deadline = time.monotonic() + drain_timeout
            last_progress = time.monotonic()
            while len(replies) < acked and time.monotonic() < deadline \
                    and time.monotonic() - last_progress < stall_timeout:
                seen_total, new = await emulator_messages(http, graph_url, seen)
                seen = seen_total
                for psid, at in new:
                    if psid in wanted and psid not in replies:
                        replies[psid] = at
                        last_progress = time.monotonic()
                await asyncio.sleep(0.2)  # polling step, bounded by the deadlines above
            drain_seconds = time.monotonic() - t0 - send_seconds
    finally:
        await running.process.stop()
    sql = await asyncio.to_thread(_sql_per_event, sql_counts, len(replies)) if sql_counts else ""
    scheduled = {psids[o.index]: o for o in outcomes}
    latencies = sorted((at - scheduled[p].scheduled) * 1000 for p, at in replies.items() if p in scheduled)
    last_due = max((o.scheduled for o in outcomes), default=0.0)
    return E2ERow(
        last_reply_after_load_ms=max(0.0, (max(replies.values()) - last_due) * 1000) if replies else float("nan"),
        fraction=fraction, rate=rate, sent=len(outcomes), acked=acked,
        non_200=sum(1 for o in outcomes if o.status != 200), replied=len(replies), latencies=latencies,
        ack_latencies=sorted((o.done - o.scheduled) * 1000 for o in outcomes if o.status == 200),
        send_lag=sorted((o.sent - o.scheduled) * 1000 for o in outcomes),
        send_seconds=send_seconds, drain_seconds=max(0.0, drain_seconds),
        server_cpu=(cpu1 - cpu0) / send_seconds, driver_cpu=(self1 - self0) / send_seconds, sql=sql,
    )


def _sql_per_event(path: Path, events: int) -> str:
    """SQL statements and transactions per answered event, from bench/sql_count_start.py's counts."""
    if not path.exists() or not events:
        return ""
    counts = [(int(n), shape) for n, _, shape in (line.partition("\t") for line in path.read_text().splitlines())]
    total = sum(n for n, _ in counts)
    commits = sum(n for n, shape in counts if shape == "COMMIT")
    top = "; ".join(f"{n / events:.1f}x {shape[:48]}" for n, shape in counts[:12])
    return (f"{total / events:.1f} SQL statements and {commits / events:.1f} transactions per answered event "
            f"({top})")


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
