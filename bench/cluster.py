"""Scale-out: answered events/s with 1 worker on SQLite, 1 and 2 workers on PostgreSQL.

    DATABASE_URL=postgresql://root@127.0.0.1:5432/test python -m bench.run cluster [--repeat 2]

Same measurement as ``answer`` (bench/answering.py: wrk, 32 connections, answers counted at
the local Graph API), same run, rounds interleaved. One worker runs alone on core 0; two
workers (``botpress-py start --workers 2``) get both cores, so wrk and the Graph API share
core 1 with a worker: their CPU is in the table, so stolen time shows. Every PostgreSQL run
has its own fresh schema (``BP_DATABASE_SCHEMA``), dropped afterwards. Until the server has
``--workers`` (``botpress-py start --help`` is read at run time) that row says so instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from bench.answering import (
    AnsweredRun,
    Bodies,
    graph_lifetime,
    measure_answered,
    median_ratio,
    median_run,
    per_round,
    rounds_note,
    run_note,
    write_answer_bodies,
)
from bench.common import LOAD_CORE, ROOT, SERVER_CORE, ForeignLoad, machine_lines
from bench.processes import ManagedProcess, clean_env
from bench.tables import fmt, print_table
from bench.targets import GraphOk, bench_data, start_botpress


@dataclass(frozen=True)
class Config:
    label: str
    storage: str  # "sqlite" or "postgres"
    workers: int

    @property
    def cores(self) -> str:
        """One worker: the server core alone; more: both cores of the machine (load core shared)."""
        return f"{SERVER_CORE},{LOAD_CORE}" if self.workers > 1 else str(SERVER_CORE)


CONFIGS: dict[str, Config] = {
    "sqlite-1": Config("botpress-py, 1 worker, SQLite", "sqlite", 1),
    "postgres-1": Config("botpress-py, 1 worker, PostgreSQL", "postgres", 1),
    "postgres-2": Config("botpress-py, 2 workers, PostgreSQL", "postgres", 2),
}


def workers_supported() -> bool:
    """Whether this botpress-py has ``start --workers`` (read from its own --help)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([sys.executable, "-m", "botpress_py", "start", "--help"], cwd=ROOT, env=clean_env(),
                             capture_output=True, text=True, timeout=60, check=False)
        return "--workers" in out.stdout
    return False


async def _drop_schema(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url, timeout=30)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def postgres_version(database_url: str) -> str:
    conn = await asyncpg.connect(database_url, timeout=30)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def run_config(key: str, work: Path, graph: GraphOk, bodies: Bodies, args: argparse.Namespace,
                     round_no: int) -> AnsweredRun:
    config = CONFIGS[key]
    data_dir = bench_data(work, f"cluster-{key}-{round_no}", graph.url, mark_seen=False)
    env = clean_env()
    schema = ""
    if config.storage == "postgres":
        schema = f"bench_{os.getpid()}_{key.replace('-', '_')}_{round_no}"
        await _drop_schema(args.database_url, schema)  # fresh, even after an interrupted earlier run
        env = clean_env(DATABASE_URL=args.database_url, BP_DATABASE_SCHEMA=schema)
    extra: tuple[str, ...] = ()
    if config.workers > 1:
        env["CLUSTER_ENABLED"] = "true"
        extra = ("--workers", str(config.workers))
    running, _, _ = await start_botpress(data_dir, data_dir.parent / "server.log", core=config.cores,
                                         extra_args=extra, env=env)
    try:
        if config.workers > 1:
            # /status answers as soon as the first worker serves: wait for all, and for the
            # partitions to be shared out, or the run would measure one worker doing most of it.
            took = await wait_balanced(running.url, running.process, config.workers)
            print(f"cluster: {config.workers} workers serving, partitions shared out, {took:.1f} s after the first",
                  flush=True)
        print(f"cluster: {config.label}, round {round_no + 1}/{args.repeat}, {args.duration:g} s...", flush=True)
        return await measure_answered(config.label, running.process, running.url + running.webhook_path, graph,
                                      bodies, args, answers=True,
                                      db_command="postgres" if config.storage == "postgres" else "",
                                      alone_on=SERVER_CORE if config.workers == 1 else None)
    finally:
        await running.process.stop()
        if schema:
            await _drop_schema(args.database_url, schema)


async def wait_balanced(url: str, process: ManagedProcess, workers: int, timeout: float = 120.0) -> float:
    """Seconds until every worker serves and holds its fair share of partitions (/status, new connections)."""
    started = time.monotonic()
    seen: dict[int, tuple[int, int, int]] = {}  # pid -> (live nodes, partitions held, fair share)
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(aiohttp.ClientError, KeyError, TypeError, ValueError):
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
                        http.get(f"{url}/status") as response:
                    status = await response.json()
                cluster = status["cluster"]
                me = next(n for n in status["nodes"] if n.get("self"))
                seen[int(status["node"]["pid"])] = (cluster["liveNodes"], me["partitions"], cluster["fairShare"])
            if len(seen) >= workers and all(live == workers and held == share for live, held, share in seen.values()):
                return time.monotonic() - started
            if not process.alive():
                raise RuntimeError(f"the workers stopped while starting:\n{process.log_tail()}")
            await asyncio.sleep(0.05)  # polling step, bounded by the timeout above


async def scenario_cluster(args: argparse.Namespace, work: Path) -> str:
    machine, load = machine_lines(), ForeignLoad()
    unavailable: dict[str, str] = {}
    if not args.database_url:
        unavailable |= {k: "n/a (DATABASE_URL not set)" for k, c in CONFIGS.items() if c.storage == "postgres"}
    else:
        machine.append(f"PostgreSQL {await postgres_version(args.database_url)} at DATABASE_URL (each run in a "
                       "fresh schema)")
    if not workers_supported():
        unavailable.setdefault("postgres-2", "n/a (no --workers support)")
    for key, reason in unavailable.items():
        print(f"cluster: {CONFIGS[key].label}: {reason}", flush=True)
    bodies = write_answer_bodies(work, args, "cluster")
    graph = await GraphOk.start(work, graph_lifetime(args, len(CONFIGS) * args.repeat))
    rounds: list[dict[str, AnsweredRun]] = []
    try:
        for round_no in range(args.repeat):
            runs: dict[str, AnsweredRun] = {}
            for key in CONFIGS:
                if key not in unavailable:
                    runs[key] = await run_config(key, work, graph, bodies, args, round_no)
            rounds.append(runs)
    finally:
        await graph.stop()
    return cluster_table(args, rounds, unavailable, machine, load)


def _reference(key: str) -> Callable[[dict[str, AnsweredRun]], float | None]:
    def answered(runs: dict[str, AnsweredRun]) -> float | None:
        return runs[key].answered_per_s if key in runs else None

    return answered


def cluster_table(args: argparse.Namespace, rounds: list[dict[str, AnsweredRun]], unavailable: dict[str, str],
                  machine: list[str], load: ForeignLoad) -> str:
    headers = ["server", "cores", "acked/s", "answered/s", "ack p99 ms", "vs 1 worker SQLite",
               "vs 1 worker PostgreSQL", "unanswered", "server CPU", "others on core 0", "PostgreSQL CPU", "wrk CPU",
               "Graph API CPU"]
    table_rows: list[list[str]] = []
    notes: list[str] = []
    ratios: dict[str, tuple[float | None, float | None]] = {}
    for key, config in CONFIGS.items():
        runs = [r[key] for r in rounds if key in r]
        if not runs:
            table_rows.append([config.label, config.cores, unavailable.get(key, "n/a"), *["n/a"] * 10])
            continue
        run = median_run(runs)
        vs_sqlite = median_ratio(per_round(rounds, key, lambda r: r.answered_per_s, _reference("sqlite-1")))
        vs_pg = median_ratio(per_round(rounds, key, lambda r: r.answered_per_s, _reference("postgres-1")))
        ratios[key] = (vs_sqlite, vs_pg)
        table_rows.append([
            config.label, config.cores, fmt(run.acked_per_s, 0), fmt(run.answered_per_s, 0), fmt(run.wrk.p99_ms, 1),
            f"{vs_sqlite:.2f}x" if vs_sqlite is not None else "n/a", f"{vs_pg:.2f}x" if vs_pg is not None else "n/a",
            str(run.unanswered), fmt(run.server_cpu * 100, 0) + "%",
            fmt(run.core_others * 100, 0) + "%" if run.core_others is not None else "-",
            fmt(run.db_cpu * 100, 0) + "%" if run.db_cpu is not None else "-", fmt(run.wrk.cpu_share * 100, 0) + "%",
            fmt(run.graph_cpu * 100, 0) + "%",
        ])
        if len(runs) > 1:
            notes.append(rounds_note(config.label, runs))
        notes.append(run_note(run))
    summary = []
    if "postgres-1" in ratios and ratios["postgres-1"][0] is not None:
        summary.append(f"- 1 worker on PostgreSQL: **{ratios['postgres-1'][0]:.0%}** of SQLite (target ≥ 70%)")
    if "postgres-2" in ratios and ratios["postgres-2"][1] is not None:
        summary.append(f"- 2 workers on PostgreSQL: **{ratios['postgres-2'][1]:.2f}x** one worker (target ≥ 1.6x), "
                       f"{ratios['postgres-2'][0] or 0:.2f}x one SQLite process (target > 1x)")
    notes = [
        *summary,
        f"- Load: wrk, {args.connections} connections, {args.duration:g} s after a {args.warmup:g} s warm-up, on core "
        f"{LOAD_CORE} with the local Graph API (bench/peers/graph_ok.py); one \"hello\" from a new user per POST. "
        f"Rounds: {args.repeat}, every configuration once per round, fresh process, data folder and schema.",
        "- The bench bot answers every message with one text (qna), mark_seen off, typingIndicators false, "
        "messageDelay 0. 2 workers: `botpress-py start --workers 2` with CLUSTER_ENABLED=true, pinned to both "
        "cores; the load generator's CPU (wrk + Graph API columns) is taken from the same cores.",
        "- answered/s: replies at the Graph API during the window; server CPU: all worker processes, in shares of "
        "one core (2 workers can reach 200%). PostgreSQL CPU: every `postgres` process of the machine over the "
        "window (not pinned: the database server is not ours to pin; it competes for both cores, and counts as "
        "\"other processes\" above). others on core 0: what else kept core 0 busy meanwhile (1 worker only; "
        "PostgreSQL included when it ran there).",
        *notes,
    ]
    return print_table(f"Scale-out: answered events/s by storage and workers, {args.duration:g} s per run", headers,
                       table_rows, notes, machine=machine, load=load)
