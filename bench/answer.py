"""Answering side by side: botpress-py against Bottender and opsdroid, same run.

    python -m bench.peers setup                # once: the peers, into bench/.peers/
    python -m bench.run answer [--repeat 3] [--answer-targets ...]

Every target runs alone on core 0 in a fresh process, once per round (rounds interleave the
targets, so every ratio compares runs minutes apart); wrk (32 connections) and the local
Graph API (bench/peers/graph_ok.py) run on core 1. Each server answers every "hello" with
one text through that Graph API, where the answers are counted (bench/answering.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

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
from bench.common import SERVER_CORE, ForeignLoad, machine_lines
from bench.peers import PeerProcess, missing_reason, start_bottender, start_opsdroid
from bench.processes import ManagedProcess
from bench.tables import fmt, print_table
from bench.targets import BENCH_BOT, GraphOk, admin, bench_data, start_baseline, start_botpress
from bench.wrk import wrk_argv


@dataclass(frozen=True)
class Target:
    label: str
    notes: str
    answers: bool
    peer: bool = False


TARGETS: dict[str, Target] = {
    "ceiling": Target("bare aiohttp (verify + parse, the ceiling)", "nothing stored", answers=False),
    "ingest": Target("botpress-py, bot disabled (verify, parse, store)", "durable inbox, SHA-256", answers=False),
    "answer": Target("botpress-py, qna answering (mark_seen off)", "durable inbox/outbox, SHA-256", answers=True),
    "answer-nobatch": Target("botpress-py, qna answering, graphBatching off", "as answer, one HTTP request per "
                             "Send API call", answers=True),
    "answer-seen": Target("botpress-py, qna answering (mark_seen on)", "as above + a mark_seen call per reply",
                          answers=True),
    "bottender": Target("Bottender 1.5.5, echo", "no durability, SHA-1 only", answers=True, peer=True),
    "opsdroid": Target("opsdroid 0.31, echo", "no signature check, no durability", answers=True, peer=True),
}


async def _start(key: str, work: Path, graph: GraphOk, round_no: int) -> tuple[ManagedProcess, str]:
    """The target's process (on core 0) and the webhook URL to load."""
    if key == "ceiling":
        running = await start_baseline(work, "asyncio")
        return running.process, running.url + running.webhook_path
    if key in ("bottender", "opsdroid"):
        starter: Callable[..., Awaitable[PeerProcess]] = start_bottender if key == "bottender" else start_opsdroid
        peer = await starter(work, graph.port, SERVER_CORE)
        return peer.process, peer.url + peer.webhook_path
    data_dir = bench_data(work, f"answer-{key}-{round_no}", graph.url, mark_seen=key == "answer-seen",
                          graph_batching=key != "answer-nobatch")
    running, _, _ = await start_botpress(data_dir, data_dir.parent / "server.log")
    if key == "ingest":
        # A disabled bot's Page stays known: deliveries are verified, mapped and stored, not processed.
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                await admin(http, running, BENCH_BOT, "disable")
        except BaseException:
            await running.process.stop()
            raise
    return running.process, running.url + running.webhook_path


async def run_target(key: str, work: Path, graph: GraphOk, bodies: Bodies, args: argparse.Namespace,
                     round_no: int) -> AnsweredRun:
    target = TARGETS[key]
    process, url = await _start(key, work, graph, round_no)
    try:
        print(f"answer: {target.label}, round {round_no + 1}/{args.repeat}, {args.duration:g} s...", flush=True)
        return await measure_answered(target.label, process, url, graph, bodies, args, answers=target.answers)
    finally:
        await process.stop()


def _share(value: float | None) -> str:
    return fmt(value * 100, 0) + "%" if value is not None else "n/a"


def _best_peer(runs: dict[str, AnsweredRun]) -> float | None:
    peers = [run.answered_per_s for key, run in runs.items() if TARGETS[key].peer]
    return max(peers) if peers else None


def _ceiling(runs: dict[str, AnsweredRun]) -> float | None:
    return runs["ceiling"].acked_per_s if "ceiling" in runs else None


async def scenario_answer(args: argparse.Namespace, work: Path) -> str:
    machine, load = machine_lines(), ForeignLoad()
    keys = list(args.answer_targets)
    skipped = {key: reason for key in keys if TARGETS[key].peer and (reason := missing_reason(key))}
    for key, reason in skipped.items():
        print(f"answer: skipping {TARGETS[key].label}: {reason}", flush=True)
    bodies = write_answer_bodies(work, args, "answer")
    graph = await GraphOk.start(work, graph_lifetime(args, len(keys) * args.repeat))
    rounds: list[dict[str, AnsweredRun]] = []
    try:
        for round_no in range(args.repeat):
            runs: dict[str, AnsweredRun] = {}
            for key in keys:
                if key not in skipped:
                    runs[key] = await run_target(key, work, graph, bodies, args, round_no)
            rounds.append(runs)
    finally:
        await graph.stop()
    return answer_table(args, rounds, keys, skipped, machine, load)


def answer_table(args: argparse.Namespace, rounds: list[dict[str, AnsweredRun]], keys: list[str],
                 skipped: dict[str, str], machine: list[str], load: ForeignLoad) -> str:
    headers = ["server (alone on core 0)", "acked/s", "answered/s", "ack p99 ms", "acked vs ceiling",
               "answered vs best peer", "unanswered", "duplicates", "server CPU", "others on core 0", "wrk CPU",
               "Graph API CPU", "notes"]
    table_rows: list[list[str]] = []
    notes: list[str] = []
    shares: dict[str, float | None] = {}
    for key in keys:
        target = TARGETS[key]
        runs = [r[key] for r in rounds if key in r]
        if not runs:
            table_rows.append([target.label, *["n/a"] * 11, skipped.get(key, "not run")])
            continue
        run = median_run(runs)
        share = median_ratio(per_round(rounds, key, lambda r: r.acked_per_s, _ceiling))
        vs_peer = median_ratio(per_round(rounds, key, lambda r: r.answered_per_s, _best_peer)) \
            if target.answers else None
        shares[key] = vs_peer if target.answers else share
        table_rows.append([
            target.label, fmt(run.acked_per_s, 0), fmt(run.answered_per_s, 0) if target.answers else "-",
            fmt(run.wrk.p99_ms, 1), f"{share:.0%}" if share is not None else "n/a",
            f"{vs_peer:.2f}x" if vs_peer is not None else ("-" if not target.answers else "n/a"),
            str(run.unanswered) if target.answers else "-", str(run.duplicates) if target.answers else "-",
            fmt(run.server_cpu * 100, 0) + "%", _share(run.core_others), fmt(run.wrk.cpu_share * 100, 0) + "%",
            fmt(run.graph_cpu * 100, 0) + "%", target.notes,
        ])
        if len(runs) > 1:
            notes.append(rounds_note(target.label, runs))
        notes.append(run_note(run))
    summary = []
    for key, what in (("answer", "mark_seen off"), ("answer-seen", "mark_seen on")):
        if shares.get(key) is not None:
            summary.append(f"- botpress-py answering ({what}): **{shares[key]:.2f}x** the best peer's answered/s "
                           "(target ≥ 2x)")
    if shares.get("ingest") is not None:
        summary.append(f"- ingest path (bot disabled): **{shares['ingest']:.0%}** of the ceiling (target ≥ 80%)")
    command = " ".join(wrk_argv("http://127.0.0.1:PORT/WEBHOOK", Path("BODIES"), args.connections, args.duration))
    notes = [
        *summary,
        f"- Load: `{command.replace(str(Path(__file__).parent) + '/', 'bench/')}` after a {args.warmup:g} s "
        "warm-up; each POST one \"hello\" from a new user, signed with both X-Hub-Signature-256 and the SHA-1 "
        "X-Hub-Signature (as Meta sends them). Rounds: "
        f"{args.repeat}, every target once per round in a fresh process; a row shows the median run and the "
        "median of each round's own ratios.",
        "- acked/s: wrk's 2xx answers per second; answered/s: replies that reached the local Graph API during the "
        "same window (sends carrying a message; mark_seen calls not counted). unanswered: acknowledged events "
        f"(warm-up included) with no reply after the drain (at most {args.drain_timeout:g} s, "
        f"{args.answer_stall_timeout:g} s without progress); duplicates: replies beyond the first to one user. "
        "Requests in flight when wrk stops are answered without being counted as acknowledged, so answered can "
        "exceed acked by up to the connections of each wrk run.",
        "- CPU: share of one core over the measured window; server = the process and its children on core 0; "
        "others on core 0 = what else kept core 0 busy meanwhile (/proc/stat; steal included): above a few per "
        "cent the row is noise; wrk and the Graph API (bench/peers/graph_ok.py) share core 1 with the bench driver.",
        "- botpress-py: the bench bot (qna answers one text; typingIndicators false, messageDelay 0, pageId set) on "
        "SQLite, deliveries to the any-bot webhook. Bottender: bench/peers/bottender (what `bottender start` "
        "runs, memory sessions). opsdroid: bench/peers/opsdroid (Facebook connector, one regex skill).",
        *[f"- {TARGETS[k].label}: not measured: {reason}" for k, reason in skipped.items()],
        *notes,
    ]
    return print_table(f"Answering side by side: acked and answered events/s, {args.connections} connections, "
                       f"{args.duration:g} s per run", headers, table_rows, notes, machine=machine, load=load)
