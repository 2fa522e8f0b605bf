"""Answered events/s under wrk, counted at the local Graph API: the measurement behind the
``answer`` and ``cluster`` tables.

One *run* is one server process (tree) already listening: wrk warms it up, then loads it for
``--duration`` seconds with pre-signed deliveries (one "hello" from a new user per POST).
Acknowledged = wrk's 2xx answers; answered = replies that reached the Graph API
(bench/peers/graph_ok.py) during that window, whatever the server is: botpress-py, Bottender
and opsdroid are counted the same way, at the same place. After the window the run waits
(bounded) for the backlog, and reports how many acknowledged events never got a reply and
how many got more than one.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import SERVER_CORE, write_wrk_bodies
from bench.emulator_service import page_id
from bench.processes import ManagedProcess, core_busy_seconds, cpu_of_command
from bench.targets import GraphOk
from bench.wrk import WrkResult, run_wrk

PSID_BASE = 9 * 10**15  # users of the answering runs (the warm-up's start at 9.5e15)


@dataclass
class Bodies:
    measured: Path
    warm: Path


def write_answer_bodies(work: Path, args: argparse.Namespace, tag: str) -> Bodies:
    """Signed deliveries (both signature headers, as Meta sends them) for every run of a scenario.

    Each run is a fresh server with a fresh data folder and the Graph API counts are reset in
    between, so runs can replay the same file; it is sized so that it never wraps within a run.
    """
    posts = int(args.duration * args.bodies_rate) + 1
    print(f"{tag}: writing {posts} signed deliveries...", flush=True)
    measured = write_wrk_bodies(work / f"bodies-{tag}.txt", posts=posts, per_post=1, page=page_id(0),
                                tag=tag, psid_base=PSID_BASE, sha1=True)
    warm = write_wrk_bodies(work / f"warm-{tag}.txt", posts=max(2000, int(args.warmup * args.bodies_rate)),
                            per_post=1, page=page_id(0), tag=f"w{tag}", psid_base=PSID_BASE + 5 * 10**14, sha1=True)
    return Bodies(measured, warm)


def graph_lifetime(args: argparse.Namespace, runs: int) -> float:
    """A generous bound on how long a scenario of ``runs`` runs keeps the local Graph API."""
    return 600.0 + runs * (args.warmup + args.duration + min(args.drain_timeout, 300.0) + 120.0)


@dataclass
class AnsweredRun:
    target: str
    wrk: WrkResult
    answers: bool  # False for targets that only acknowledge (the ceiling, a disabled bot)
    answered: int  # replies at the Graph API during the measured window
    server_cpu: float  # share of one core, the whole process tree
    graph_cpu: float  # the local Graph API's share of a core (on the load core)
    rss_mb: float
    acked_total: int = 0  # warm-up + measured
    answered_total: int = 0  # distinct users answered once the backlog drained
    duplicates: int = 0  # replies beyond the first to one user
    drain_seconds: float = 0.0
    db_cpu: float | None = None  # the database server's processes (PostgreSQL), share of a core
    core_others: float | None = None  # share of the server's core used by anything else (noise check)
    calls: int = 0  # Send API calls at the Graph API during the measured window (messages and sender actions)
    batches: int = 0  # batch requests among them (graphBatching), and the calls they carried
    batched_calls: int = 0

    @property
    def acked_per_s(self) -> float:
        return self.wrk.acked_per_s

    @property
    def answered_per_s(self) -> float:
        return self.answered / self.wrk.seconds

    @property
    def rate(self) -> float:
        """What the run is ranked by: answered/s, or acked/s for a target that does not answer."""
        return self.answered_per_s if self.answers else self.acked_per_s

    @property
    def unanswered(self) -> int:
        return max(0, self.acked_total - self.answered_total) if self.answers else 0


async def measure_answered(name: str, process: ManagedProcess, url: str, graph: GraphOk, bodies: Bodies,
                           args: argparse.Namespace, *, answers: bool, db_command: str = "",
                           alone_on: int | None = SERVER_CORE) -> AnsweredRun:
    """Warm-up, measured window, bounded drain; ``url`` is the webhook of the running server.

    ``db_command``: the process name of a database server the target uses (``postgres``); its
    CPU over the window is reported too, since it runs outside the pinned process tree.
    ``alone_on``: the core the target should have to itself; what else ran there is reported.
    """
    await graph.reset()
    warm = await run_wrk(url, bodies.warm, args.connections, args.warmup)
    before = await graph.counts()
    cpu0, graph0 = process.tree_cpu_seconds(), graph.process.cpu_seconds()
    db0 = cpu_of_command(db_command) if db_command else 0.0
    core0 = core_busy_seconds(alone_on) if alone_on is not None else 0.0
    result = await run_wrk(url, bodies.measured, args.connections, args.duration)
    cpu1, graph1 = process.tree_cpu_seconds(), graph.process.cpu_seconds()
    db1 = cpu_of_command(db_command) if db_command else 0.0
    core1 = core_busy_seconds(alone_on) if alone_on is not None else 0.0
    after = await graph.counts()
    run = AnsweredRun(
        name, result, answers, answered=after["sends"] - before["sends"],
        server_cpu=(cpu1 - cpu0) / result.seconds, graph_cpu=(graph1 - graph0) / result.seconds,
        rss_mb=process.tree_memory_kb() / 1024,
        acked_total=(warm.requests - warm.status_errors) + (result.requests - result.status_errors),
        db_cpu=(db1 - db0) / result.seconds if db_command else None,
        core_others=max(0.0, (core1 - core0 - (cpu1 - cpu0)) / result.seconds) if alone_on is not None else None,
        calls=after.get("calls", 0) - before.get("calls", 0),
        batches=after.get("batches", 0) - before.get("batches", 0),
        batched_calls=after.get("batched_calls", 0) - before.get("batched_calls", 0),
    )
    if answers:
        counts, run.drain_seconds = await _drain(graph, run.acked_total, args)
        run.answered_total, run.duplicates = counts["recipients"], counts["duplicates"]
    return run


async def _drain(graph: GraphOk, acked: int, args: argparse.Namespace) -> tuple[dict[str, int], float]:
    """Wait until every acknowledged event is answered, or the drain or stall timeout passes."""
    started = last_progress = time.monotonic()
    counts = await graph.counts()
    while counts["recipients"] < acked and time.monotonic() - started < args.drain_timeout \
            and time.monotonic() - last_progress < args.answer_stall_timeout:
        await asyncio.sleep(0.25)  # polling step, bounded by both timeouts
        latest = await graph.counts()
        if latest["recipients"] > counts["recipients"]:
            last_progress = time.monotonic()
        counts = latest
    return counts, time.monotonic() - started


# -- rounds ----------------------------------------------------------------------------------------------
def median_run(runs: Sequence[AnsweredRun]) -> AnsweredRun:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def median_ratio(values: Sequence[float | None]) -> float | None:
    """The median of each round's own ratio (None where a round had no reference)."""
    known = sorted(v for v in values if v is not None)
    return known[len(known) // 2] if known else None


def per_round(rounds: Sequence[dict[str, AnsweredRun]], key: str, value: Callable[[AnsweredRun], float],
              reference: Callable[[dict[str, AnsweredRun]], float | None]) -> list[float | None]:
    """For each round: ``value(run of key) / reference(that round)``, None when either is missing."""
    out: list[float | None] = []
    for runs in rounds:
        ref = reference(runs)
        run = runs.get(key)
        out.append(value(run) / ref if run is not None and ref else None)
    return out


def rounds_note(label: str, runs: Sequence[AnsweredRun]) -> str:
    shown = " / ".join(f"{r.acked_per_s:,.0f}" + (f" → {r.answered_per_s:,.0f}" if r.answers else "") for r in runs)
    return f"- {label}, rounds (acked/s → answered/s): {shown}"


def run_note(run: AnsweredRun) -> str:
    parts = [f"RSS {run.rss_mb:,.0f} MB", f"non-2xx {run.wrk.status_errors}",
             f"socket errors {run.wrk.socket_errors}", f"bodies file wrapped {run.wrk.wrapped}x"]
    if run.answers:
        parts.insert(0, f"acked {run.acked_total:,} (warm-up included), answered {run.answered_total:,} after "
                        f"{run.drain_seconds:.1f} s of drain, {run.duplicates} duplicate replies")
    if run.batches:
        parts.append(f"{run.batched_calls:,} of {run.calls:,} Send API calls in {run.batches:,} batch requests "
                     f"(mean {run.batched_calls / run.batches:.1f} calls)")
    return f"- {run.target} (median run): " + "; ".join(parts)
