"""Scenario 1, ingest: acknowledged events/s and ack latency under wrk, vs a bare-aiohttp ceiling.

    python -m bench.run ingest [--repeat N] [--per-post 1 10] [--py-spy DIR]

Every target (the ceilings, then each botpress-py variant) runs once per round in a fresh
process on core 0; wrk (64 connections) on core 1 replays pre-signed deliveries.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import LOAD_CORE, ForeignLoad, machine_lines, write_wrk_bodies
from bench.emulator_service import page_id
from bench.processes import fetch_metrics, inbox_counts
from bench.tables import fmt, print_table, profile_summary
from bench.targets import (
    ANY_BOT_WEBHOOK,
    BENCH_BOT,
    BOTPRESS,
    HELD,
    UNKNOWN_PAGE,
    Running,
    admin,
    bench_data,
    start_baseline,
    start_botpress,
    start_emulator,
    uvloop_available,
)
from bench.wrk import WrkResult, run_wrk

# Reference points of the first ingest measurements (docs/benchmarks.md), taken on the reference
# machine where the bare-aiohttp ceiling (asyncio loop) acked about 13,000 req/s.
REFERENCE_CEILING = 13_000.0
REFERENCES = {"opsdroid 0.31 (no signature check)": 3_500.0, "Bottender 1.5.5": 2_900.0}


@dataclass
class IngestRow:
    target: str
    per_post: int
    wrk: WrkResult
    server_cpu: float
    rss_mb: float = 0.0
    threads: str = ""
    received: float | None = None
    processed: float | None = None
    profile: str = ""
    share_of_ceiling: float | None = None  # median over rounds of (this run / that round's ceiling)
    duplicates: float = 0.0  # redeliveries acknowledged (the bodies file wrapped around)

    @property
    def events_per_s(self) -> float:
        return self.wrk.acked_per_s * self.per_post


async def measure_ingest(target: Running, per_post: int, bodies: Path, warm: Path, args: argparse.Namespace
                         ) -> IngestRow:
    url = target.url + ANY_BOT_WEBHOOK
    await run_wrk(url, warm, args.connections, args.warmup)
    before = await fetch_metrics(target.port) if target.data_dir else {}
    profiler = None
    if args.py_spy and target.data_dir:
        out = Path(args.py_spy) / f"{re.sub(r'[^a-z0-9]+', '-', target.name.lower())}-{per_post}.txt"
        profiler = await start_py_spy(target.process.pid, out, args.duration)
    cpu, threads = target.process.cpu_seconds(), target.process.thread_stats()
    result = await run_wrk(url, bodies, args.connections, args.duration)
    server_cpu = (target.process.cpu_seconds() - cpu) / result.seconds
    row = IngestRow(target.name, per_post, result, server_cpu, rss_mb=target.process.memory_kb() / 1024,
                    threads=_thread_delta(threads, target.process.thread_stats(), result.requests * per_post))
    if target.data_dir:
        after = await fetch_metrics(target.port)
        row.received = after.get("bp_events_received_total", 0) - before.get("bp_events_received_total", 0)
        row.processed = after.get("bp_events_done_total", 0) - before.get("bp_events_done_total", 0)
        row.duplicates = after.get("bp_events_duplicate_total", 0) - before.get("bp_events_duplicate_total", 0)
    if profiler is not None:
        row.profile = await finish_py_spy(*profiler)
    return row


def _thread_delta(before: dict[str, tuple[float, float, int]], after: dict[str, tuple[float, float, int]],
                  events: int) -> str:
    """Where the server's CPU went, per thread: user/system ms and context switches per event."""
    parts = []
    for name, (user, system, switches) in sorted(after.items(), key=lambda kv: kv[0] != "main"):
        u0, s0, c0 = before.get(name, (0.0, 0.0, 0))
        if user - u0 + system - s0 <= 0 and switches == c0:
            continue
        per = max(events, 1)
        parts.append(f"{name} {1000 * (user - u0) / per:.2f}+{1000 * (system - s0) / per:.2f} ms "
                     f"({(switches - c0) / per:.1f} cs)")
    return "; ".join(parts)


async def start_py_spy(pid: int, out: Path, duration: float) -> tuple[asyncio.subprocess.Process, Path]:
    """Sample the server (threads holding the GIL) on the load core while it is measured."""
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", str(LOAD_CORE), "py-spy", "record", "--pid", str(pid), "--duration", f"{duration:g}",
        "--rate", "200", "--gil", "--nonblocking", "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return proc, out


async def finish_py_spy(proc: asyncio.subprocess.Process, out: Path) -> str:
    try:
        await asyncio.wait_for(proc.wait(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    return await asyncio.to_thread(_summary, out)


def _summary(out: Path) -> str:
    return profile_summary(out) if out.exists() else f"py-spy wrote nothing to {out}"


async def scenario_ingest(args: argparse.Namespace, work: Path) -> tuple[str, float]:
    """Table of scenario 1 and the max ingest rate of botpress-py (events/s, one per POST)."""
    machine, load = machine_lines(), ForeignLoad()
    emulator, graph_url = await start_emulator(work, pages=1)
    rows: list[IngestRow] = []
    notes: list[str] = []
    try:
        for per_post in args.per_post:
            # Enough distinct deliveries that the stored rows never wrap around into redeliveries
            # (those are acknowledged as duplicates, a cheaper path): at least 2,500 POST/s.
            posts = int(args.duration * max(args.bodies_rate / per_post, 2_500)) + 1
            print(f"ingest: writing {posts} signed deliveries of {per_post} event(s)...", flush=True)
            bodies = write_wrk_bodies(work / f"bodies-{per_post}.txt", posts=posts, per_post=per_post,
                                      page=page_id(0), tag=f"i{per_post}", psid_base=10**15)
            warm = write_wrk_bodies(work / f"warm-{per_post}.txt", posts=max(2000, int(posts * args.warmup
                                                                                        / args.duration)),
                                    per_post=per_post, page=page_id(0), tag=f"w{per_post}", psid_base=2 * 10**15)
            unknown = unknown_warm = None
            if args.decompose:
                # Deliveries for a Page no bot serves: verified, parsed and routed, then skipped (200).
                unknown = write_wrk_bodies(work / f"unknown-{per_post}.txt", posts=posts, per_post=per_post,
                                           page=UNKNOWN_PAGE, tag=f"u{per_post}", psid_base=10**15)
                unknown_warm = write_wrk_bodies(work / f"unknown-warm-{per_post}.txt", posts=2000,
                                                per_post=per_post, page=UNKNOWN_PAGE, tag=f"uw{per_post}",
                                                psid_base=2 * 10**15)
            targets: list[tuple[Callable[[], Any], Path, Path]] = [
                (lambda: start_baseline(work, "asyncio"), bodies, warm)]
            if uvloop_available():
                targets.append((lambda: start_baseline(work, "uvloop"), bodies, warm))
            variants: list[tuple[str, Path, Path]] = [("answering", bodies, warm)]
            if unknown is not None and unknown_warm is not None:
                variants += [("held", bodies, warm), ("unknown page", unknown, unknown_warm)]
            if args.uvloop_server and uvloop_available():
                variants.append(("uvloop", bodies, warm))
            for kind, kind_bodies, kind_warm in variants:
                def start(kind: str = kind, per_post: int = per_post) -> Any:
                    return start_ingest_botpress(work, graph_url, per_post, kind)
                targets.append((start, kind_bodies, kind_warm))
            # Rounds: every target once per round, in turn, so each run of botpress-py is compared
            # with a ceiling measured minutes (not a quarter of an hour) apart: this VM's speed
            # drifts by 20-30% over an hour.
            runs: list[list[tuple[IngestRow, dict[str, int]]]] = [[] for _ in targets]
            for attempt in range(args.repeat):  # a fresh process (and data folder) per run
                for index, (make, target_bodies, target_warm) in enumerate(targets):
                    target = await make()
                    try:
                        print(f"ingest: {target.name}, {per_post} event(s)/POST, {args.duration:g} s, "
                              f"round {attempt + 1}/{args.repeat}...", flush=True)
                        row = await measure_ingest(target, per_post, target_bodies, target_warm, args)
                    finally:
                        await target.process.stop()
                    runs[index].append((row, inbox_counts(target.data_dir) if target.data_dir else {}))
            ceiling_runs = [r.events_per_s for r, _ in runs[0]]
            for target_runs in runs:
                by_rate = sorted(target_runs, key=lambda run: run[0].events_per_s)
                row, counts = by_rate[len(by_rate) // 2]  # the median run
                # The share of the ceiling: the median of each round's own ratio.
                shares = sorted(r.events_per_s / c for (r, _), c in zip(target_runs, ceiling_runs, strict=True))
                row.share_of_ceiling = shares[len(shares) // 2]
                rows.append(row)
                if len(target_runs) > 1:
                    each = " / ".join(f"{fmt(r.events_per_s, 0)} ({r.events_per_s / c:.0%})"
                                      for (r, _), c in zip(target_runs, ceiling_runs, strict=True))
                    notes.append(f"- {row.target}, {per_post}/POST, rounds: {each} events/s (share of that round's "
                                 "ceiling); the table shows the median run and the median share")
                if counts:
                    notes.append(f"- {row.target}, {per_post}/POST: inbox after stop {counts}")
            command = rows[-1].wrk.command
    finally:
        await emulator.stop()

    table_rows = []
    for row in rows:
        ceiling = next((r for r in rows if r.per_post == row.per_post and r.target == "bare aiohttp (asyncio)"), None)
        ceiling_uv = next((r for r in rows if r.per_post == row.per_post and r.target == "bare aiohttp (uvloop)"),
                          None)
        table_rows.append([
            row.target, str(row.per_post), fmt(row.wrk.requests / row.wrk.seconds, 0), fmt(row.events_per_s, 0),
            str(row.wrk.status_errors + row.wrk.socket_errors), fmt(row.wrk.p50_ms, 2), fmt(row.wrk.p99_ms, 2),
            fmt(row.server_cpu * 100, 0) + "%", fmt(row.wrk.cpu_share * 100, 0) + "%",
            fmt((row.share_of_ceiling if row.share_of_ceiling is not None
                 else row.events_per_s / ceiling.events_per_s) * 100, 0) + "%" if ceiling else "n/a",
            fmt(row.events_per_s / ceiling_uv.events_per_s * 100, 0) + "%" if ceiling_uv else "n/a",
        ])
        if row.received is not None:
            notes.append(f"- {row.target}, {row.per_post}/POST: events stored during the run "
                         f"{row.received:,.0f} (acked {row.events_per_s * row.wrk.seconds:,.0f}"
                         + (f", of which {row.duplicates:,.0f} redeliveries" if row.duplicates else "")
                         + f"), processed by the bot meanwhile {row.processed:,.0f}; RSS at the end "
                         f"{row.rss_mb:,.0f} MB; bodies file wrapped {row.wrk.wrapped}x")
            acked = row.events_per_s * row.wrk.seconds
            if row.received + row.duplicates < 0.99 * acked and "unknown page" not in row.target:
                notes.append(f"- WARNING: {row.target}, {row.per_post}/POST: fewer events stored than acknowledged "
                             "(200 without storing?): check the server log")
        if row.threads:
            notes.append(f"- {row.target}, {row.per_post}/POST, CPU per acked event by thread (user+system, "
                         f"context switches): {row.threads}")
        if row.profile:
            print(f"py-spy, {row.target}, {row.per_post}/POST:\n{row.profile}\n", flush=True)
    ours = next((r for r in rows if r.target == BOTPRESS and r.per_post == 1), None)
    ceiling1 = next((r for r in rows if r.target == "bare aiohttp (asyncio)" and r.per_post == 1), None)
    for mine in (r for r in rows if r.per_post == 1 and r.target in (BOTPRESS, HELD)):
        if ceiling1 is None:
            break
        share = mine.share_of_ceiling if mine.share_of_ceiling is not None else \
            mine.events_per_s / ceiling1.events_per_s
        for ref, value in REFERENCES.items():
            # Compared as shares of each machine's own ceiling: the references were measured where
            # a bare aiohttp server did REFERENCE_CEILING req/s.
            ref_share = value / REFERENCE_CEILING
            notes.append(f"- {mine.target} vs {ref}: {value:,.0f} req/s = {ref_share:.0%} of its machine's "
                         f"ceiling ({REFERENCE_CEILING:,.0f}); botpress-py {share:.0%} of this one's = "
                         f"{share / ref_share:.2f}x (raw figures: {mine.events_per_s:,.0f} against {value:,.0f} "
                         f"= {mine.events_per_s / value:.2f}x)")
    headers = ["server (core 0)", "ev/POST", "POST/s", "acked events/s", "non-200/err", "ack p50 ms",
               "ack p99 ms", "server CPU", "wrk CPU", "vs ceiling", "vs uvloop ceiling"]
    table = print_table(
        f"Ingest: acknowledged events/s, {args.connections} connections, {args.duration:g} s per run "
        f"(after {args.warmup:g} s warm-up)", headers, table_rows,
        [f"Load: `{command}`", "Notes:", *notes], machine=machine, load=load)
    # The rate the bot kept up with: when acks outpace processing (a burst past what the bot can
    # answer: the rest waits in storage), the processed rate is the capacity e2e should load.
    max_rate = 0.0
    if ours:
        max_rate = ours.events_per_s
        if ours.processed is not None:
            max_rate = min(max_rate, ours.processed / ours.wrk.seconds)
    return table, max_rate


async def start_ingest_botpress(work: Path, graph_url: str, per_post: int, kind: str = "answering") -> Running:
    """The server with the bench bot, set up for one row of the ingest table.

    ``answering``: the bot answers every event (the steady state); ``held``: the bot is
    disabled, so its events are verified, mapped and stored but not processed (the ingest
    path alone); ``unknown page``: the traffic names a Page no bot serves, so each delivery
    is verified, parsed and routed, then skipped (no storage); ``uvloop``: answering, on uvloop.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", kind)
    data_dir = bench_data(work, f"ingest-{per_post}-{slug}", graph_url)
    running, _, _ = await start_botpress(data_dir, data_dir.parent / "server.log", uvloop=kind == "uvloop")
    if kind == "held":
        # A Page whose bot is disabled at run time stays known to the channel: its deliveries
        # are still verified, mapped and stored (200) and wait until the bot is enabled again.
        async with aiohttp.ClientSession() as http:
            await admin(http, running, BENCH_BOT, "disable")
    running.name = {"answering": BOTPRESS, "held": HELD,
                    "unknown page": "botpress-py, unknown page: verify+parse, no storage",
                    "uvloop": BOTPRESS + ", on uvloop"}[kind]
    return running


async def quick_max_rate(work: Path, graph_url: str, args: argparse.Namespace) -> float:
    """The saturation answering rate (one event per POST) measured like scenario 1, when --max-rate is not given."""
    posts = int(args.duration * args.bodies_rate) + 1
    bodies = write_wrk_bodies(work / "bodies-max.txt", posts=posts, per_post=1, page=page_id(0), tag="max",
                              psid_base=3 * 10**15)
    warm = write_wrk_bodies(work / "warm-max.txt", posts=2000, per_post=1, page=page_id(0), tag="wmax",
                            psid_base=4 * 10**15)
    target = await start_ingest_botpress(work, graph_url, 1)
    try:
        row = await measure_ingest(target, 1, bodies, warm, args)
    finally:
        await target.process.stop()
    # As in scenario_ingest: the rate the bot kept up with, when acks outpaced answering.
    if row.processed is not None:
        return min(row.events_per_s, row.processed / row.wrk.seconds)
    return row.events_per_s
