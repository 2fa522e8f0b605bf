"""Scenario 3, bot scale: start time, memory, idle CPU, disable + enable of one bot under traffic.

    python -m bench.run scale --bots 1 100 1000 10000

For each bot count a data folder of that many messenger-enabled bots (distinct Pages) is
generated, the server started on core 0, and timed until every bot is mounted. Waits and
polling scale with the bot count (10,000 bots: minutes of budget, /status read every 0.2 s)
so a big run neither times out early nor loads the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import HOST, ForeignLoad, http_post_bytes, machine_lines, signed_post
from bench.emulator_service import page_id
from bench.loadgen import HttpLoad, Outcome
from bench.tables import fmt, percentile, print_table
from bench.targets import ANY_BOT_WEBHOOK, BENCH_BOT, Running, admin, bench_data, start_botpress, start_emulator
from bench.wrk import run_wrk

READY_LINE = " ready on http"  # what `botpress-py start` prints once started


def start_budget(bots: int) -> float:
    """Seconds allowed from spawn until every bot is mounted: generous, bounded (10,000 bots: 560 s)."""
    return 60.0 + 0.05 * bots


def poll_interval(bots: int) -> float:
    """/status of N bots costs the server O(N): poll big servers less often (resolution vs load)."""
    return 0.01 if bots <= 100 else 0.05 if bots <= 1000 else 0.2


@dataclass
class ScaleRow:
    bots: int
    with_page_id: bool
    start_seconds: float
    mounted: int
    rss_mb: float
    idle_cpu: float
    ingest_rate: float | None = None
    toggles: list[tuple[float, float]] | None = None
    traffic_sent: int = 0
    traffic_failed: int = 0
    write_seconds: float = 0.0
    start_cpu: float = 0.0  # server CPU seconds until every bot was mounted: what load on the machine does not change
    ready_seconds: float | None = None  # spawn until the server said it is ready (watcher in place, garbage collected)
    messenger_errors: int = 0  # bots mounted with channel-messenger in error
    first_error: str = ""


def _all_on(status: dict[str, Any]) -> int:
    return sum(1 for b in status.get("bots", {}).values()
               if b.get("state") == "mounted" and b.get("modules", {}).get("channel-messenger", {}).get("state")
               == "on")


def _settled(status: dict[str, Any]) -> int:
    """Bots whose mount is over, whatever its outcome (a module in error stays so until a reload).

    Every bench bot is enabled, so "disabled" here means not mounted yet.
    """
    return sum(1 for b in status.get("bots", {}).values() if b.get("state") in ("mounted", "error"))


def _messenger_errors(status: dict[str, Any]) -> tuple[int, str]:
    """How many bots have channel-messenger in error, and the first reason."""
    reasons = [str(b.get("modules", {}).get("channel-messenger", {}).get("reason", "")) for b in
               status.get("bots", {}).values() if b.get("modules", {}).get("channel-messenger", {}).get("state")
               == "error"]
    return len(reasons), reasons[0] if reasons else ""


async def measure_scale(work: Path, graph_url: str, bots: int, with_page_id: bool, args: argparse.Namespace
                        ) -> ScaleRow:
    print(f"scale: {bots} bot(s), pageId {'set' if with_page_id else 'learned with GET /me'}: writing the data "
          "folder...", flush=True)
    written = time.monotonic()
    data_dir = await asyncio.to_thread(bench_data, work, f"scale-{bots}-{'pageid' if with_page_id else 'me'}",
                                       graph_url, bots, with_page_id=with_page_id)
    write_seconds = time.monotonic() - written
    print(f"scale: {bots} bot(s): data folder written in {write_seconds:.1f} s; starting...", flush=True)
    budget, interval = start_budget(bots), poll_interval(bots)
    running, status, _ = await start_botpress(data_dir, data_dir.parent / "server.log", timeout=budget,
                                              poll_interval=interval)
    try:
        deadline = running.process.started_at + budget
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            # Until every bot is mounted with the channel on, or has settled otherwise (a bot whose
            # channel failed at mount stays in error: waiting longer would only measure the budget).
            while _all_on(status) < bots and _settled(status) < bots and time.monotonic() < deadline:
                await asyncio.sleep(interval)  # polling step, bounded by the deadline
                async with http.get(f"{running.url}/status") as response:
                    status = await response.json()
        start_seconds = time.monotonic() - running.process.started_at
        row = ScaleRow(bots, with_page_id, start_seconds, _all_on(status),
                       running.process.memory_kb() / 1024, 0.0, write_seconds=write_seconds,
                       start_cpu=running.process.cpu_seconds())
        row.messenger_errors, row.first_error = _messenger_errors(status)
        print(f"scale: {bots} bot(s): {row.mounted} mounted in {start_seconds:.2f} s ({row.start_cpu:.1f} s of "
              f"CPU), RSS {row.rss_mb:.0f} MB", flush=True)
        # The server serves once the bots are mounted, then puts the file watcher in place and collects
        # start-up's garbage before it says it is ready: idle starts there, not during that work.
        row.ready_seconds = await _ready(running, deadline, interval)
        cpu = running.process.cpu_seconds()
        await asyncio.sleep(args.idle_seconds)  # idle window: what the watcher and timers cost
        row.idle_cpu = (running.process.cpu_seconds() - cpu) / args.idle_seconds
        if with_page_id:
            await _toggle_under_traffic(running, row, args)
            if args.scale_ingest:
                row.ingest_rate = await _ingest_many_pages(work, running, bots, args)
    finally:
        await running.process.stop()
    return row


async def _ready(running: Running, deadline: float, interval: float) -> float | None:
    """Seconds from spawn until the server printed that it is ready; None if not by ``deadline``."""
    while time.monotonic() < deadline:
        if READY_LINE in running.process.log_tail(200):
            return time.monotonic() - running.process.started_at
        await asyncio.sleep(interval)  # polling step of a log file, bounded by the deadline
    return None


async def _toggle_under_traffic(running: Running, row: ScaleRow, args: argparse.Namespace) -> None:
    """Disable + enable one bot ``args.cycles`` times while the other bots take webhook traffic."""
    target = BENCH_BOT if row.bots == 1 else "bot-0000"
    others = list(range(1, row.bots))
    stop = asyncio.Event()
    traffic: asyncio.Task[list[Outcome]] | None = None
    load: HttpLoad | None = None
    if others:
        load = HttpLoad(HOST, running.port, max_connections=64)

        def make(i: int) -> bytes:
            index = others[i % len(others)]
            return http_post_bytes(ANY_BOT_WEBHOOK, *signed_post(page_id(index), [str(7 * 10**15 + i)], "t"),
                                   running.port)

        bound = int(args.scale_rate * 600)  # at most ten minutes of traffic
        traffic = asyncio.create_task(load.open_loop(make, bound, args.scale_rate, stop=stop, drain_timeout=30))
        await asyncio.sleep(1.0)  # traffic flowing before the first toggle
    toggles: list[tuple[float, float]] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            for _ in range(args.cycles):
                disable_ms, _ = await admin(http, running, target, "disable")
                enable_ms, state = await admin(http, running, target, "enable")  # answers once mounted
                if state.get("state") != "mounted":
                    raise RuntimeError(f"{target} is {state} after enable")
                toggles.append((disable_ms, enable_ms))
                await asyncio.sleep(0.5)  # spacing between cycles
    finally:
        stop.set()
        if traffic is not None and load is not None:
            outcomes = await traffic
            load.close()
            row.traffic_sent = len(outcomes)
            row.traffic_failed = sum(1 for o in outcomes if o.status != 200)
    row.toggles = toggles


async def _ingest_many_pages(work: Path, running: Running, bots: int, args: argparse.Namespace) -> float:
    """Webhook ack rate through ___ when deliveries spread over every page (wrk, short run)."""
    bodies = work / f"bodies-scale-{bots}.txt"
    posts = int(args.scale_ingest_seconds * args.bodies_rate) + 1
    with bodies.open("wb") as out:
        for post in range(posts):
            raw, sig = signed_post(page_id(post % bots), [str(8 * 10**15 + post)], f"s{bots}")
            out.write(sig.encode() + b"\t" + raw + b"\n")
    result = await run_wrk(running.url + ANY_BOT_WEBHOOK, bodies, args.connections, args.scale_ingest_seconds)
    return result.acked_per_s


async def scenario_scale(args: argparse.Namespace, work: Path) -> str:
    machine, load = machine_lines(), ForeignLoad()
    emulator, graph_url = await start_emulator(work, pages=max(args.bots))
    rows: list[ScaleRow] = []
    try:
        for bots in args.bots:
            for with_page_id in (True, False) if args.measure_get_me else (True,):
                rows.append(await measure_scale(work, graph_url, bots, with_page_id, args))
    finally:
        await emulator.stop()
    headers = ["bots", "pageId", "start → all mounted s", "server CPU s", "→ ready s", "mounted", "RSS MB", "idle CPU",
               "disable ms (median/max)",
               "enable ms (median/max)", "disable+enable ms max", "other-bot requests", "failed",
               "ack req/s, N pages"]
    table_rows = []
    for r in rows:
        toggles = r.toggles or []
        dis = sorted(t[0] for t in toggles)
        ena = sorted(t[1] for t in toggles)
        both = max((t[0] + t[1] for t in toggles), default=float("nan"))
        table_rows.append([
            str(r.bots), "set" if r.with_page_id else "GET /me", fmt(r.start_seconds, 2), fmt(r.start_cpu, 1),
            fmt(r.ready_seconds, 2) if r.ready_seconds is not None else "n/a", str(r.mounted),
            fmt(r.rss_mb, 0), fmt(r.idle_cpu * 100, 1) + "%",
            f"{fmt(percentile(dis, 50), 0)} / {fmt(dis[-1], 0)}" if dis else "n/a",
            f"{fmt(percentile(ena, 50), 0)} / {fmt(ena[-1], 0)}" if ena else "n/a",
            fmt(both, 0), str(r.traffic_sent) if r.bots > 1 and r.toggles is not None else "n/a",
            str(r.traffic_failed) if r.bots > 1 and r.toggles is not None else "n/a",
            fmt(r.ingest_rate, 0) if r.ingest_rate else "n/a",
        ])
    notes = [
        "Start time: from spawning `taskset -c 0 python -m botpress_py start` until GET /status shows every bot "
        "mounted with channel-messenger on (polled every 0.01 s up to 100 bots, 0.05 s up to 1,000, 0.2 s "
        "beyond); it includes the interpreter start and imports; server CPU: the CPU seconds the server used until "
        "then (the figure other load on the machine does not change). RSS: VmRSS right then. → ready: until the "
        "server printed that it is ready (after mounting it puts the file watcher in place and collects the "
        f"start's garbage). Idle CPU: over {args.idle_seconds:g} s with no traffic from then on.",
        "Data folders (messenger-enabled bots, one distinct Page each, qna answering) written before the start "
        "in " + ", ".join(f"{r.write_seconds:.1f} s ({r.bots:,} bots)" for r in rows if r.with_page_id) + ".",
        f"Disable + enable: {args.cycles} cycles of POST /api/v1/admin/bots/<bot>/disable then /enable (each "
        f"answers once the bot is unmounted / mounted), while the other bots receive {args.scale_rate:g} "
        "webhook deliveries/s through /api/v1/bots/___/… (open loop); failed = their non-200 answers.",
        f"ack req/s, N pages: wrk for {args.scale_ingest_seconds:g} s, {args.connections} connections, deliveries "
        "spread over every page through the any-bot webhook.",
    ]
    for r in rows:
        if r.mounted < r.bots:
            how = "pageId set" if r.with_page_id else "GET /me"
            notes.append(f"WARNING: {r.bots:,} bots ({how}): {r.mounted:,} mounted with channel-messenger on after "
                         f"{r.start_seconds:.1f} s (budget {start_budget(r.bots):.0f} s); {r.messenger_errors:,} in "
                         f"error" + (f", e.g. \"{r.first_error[:160]}\"" if r.first_error else ""))
    return print_table("Bot scale: start, memory, disable + enable under traffic", headers, table_rows, notes,
                       machine=machine, load=load)
