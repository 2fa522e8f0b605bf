"""Scenario 2, end to end: webhook POST -> reply at the Graph emulator, under open-loop load.

    python -m bench.run e2e [--fractions 0.25 0.5 0.9] [--max-rate R] [--no-sustainable]

Two tables: latency at fractions of the rate the bot answered at saturation (closed loop,
like scenario 1), and the *sustainable* answering rate searched with short open-loop runs
(bench/sustainable.py), with the p99 at half of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import ForeignLoad, machine_lines
from bench.ingest import quick_max_rate
from bench.open_loop import E2ERow, measure_open_loop
from bench.sustainable import sustainable_table
from bench.tables import fmt, percentile, print_table
from bench.targets import start_emulator


async def measure_e2e(work: Path, graph_url: str, fraction: float, max_rate: float, psid_base: int,
                      args: argparse.Namespace) -> E2ERow:
    """One row of the fractions table: ``fraction`` of ``max_rate`` for ``--duration`` seconds."""
    print(f"e2e: {fraction:.0%} of {max_rate:,.0f}/s = {fraction * max_rate:,.0f} events/s for {args.duration:g} s...",
          flush=True)
    return await measure_open_loop(work, graph_url, fraction * max_rate, args.duration, psid_base, args,
                                   name=f"e2e-{int(fraction * 100)}", fraction=fraction,
                                   drain_timeout=args.drain_timeout, stall_timeout=args.stall_timeout)


async def scenario_e2e(args: argparse.Namespace, work: Path, max_rate: float | None = None) -> str:
    """The fractions table, then (``--sustainable``, the default) the sustainable-rate table."""
    table, max_rate = await fractions_table(args, work, max_rate)
    if not args.sustainable:
        return table
    return table + "\n\n" + await sustainable_table(args, work, max_rate)


async def fractions_table(args: argparse.Namespace, work: Path, max_rate: float | None) -> tuple[str, float]:
    """Latency at fractions of the saturation answering rate; (table, that rate)."""
    machine, load = machine_lines(), ForeignLoad()
    emulator, graph_url = await start_emulator(work, pages=1)
    rows: list[E2ERow] = []
    try:
        if not max_rate:
            max_rate = args.max_rate or await quick_max_rate(work, graph_url, args)
            print(f"e2e: max ingest rate {max_rate:,.0f} events/s", flush=True)
        for n, fraction in enumerate(args.fractions):
            rows.append(await measure_e2e(work, graph_url, fraction, max_rate, 5 * 10**15 + n * 10**9, args))
    finally:
        await emulator.stop()
    headers = ["load", "events/s", "sent", "acked", "replied", "lost", "e2e p50 ms", "e2e p99 ms", "e2e max ms",
               "ack p99 ms", "send lag p99 ms", "server CPU", "driver CPU", "drain after load s"]
    table_rows = [[
        f"{r.fraction:.0%}", fmt(r.rate, 0), str(r.sent), str(r.acked), str(r.replied), str(r.acked - r.replied),
        fmt(percentile(r.latencies, 50), 1), fmt(percentile(r.latencies, 99), 1),
        fmt(r.latencies[-1] if r.latencies else float("nan"), 1), fmt(percentile(r.ack_latencies, 99), 1),
        fmt(percentile(r.send_lag, 99), 1), fmt(r.server_cpu * 100, 0) + "%", fmt(r.driver_cpu * 100, 0) + "%",
        fmt(r.drain_seconds, 1),
    ] for r in rows]
    notes = [
        f"Max rate (scenario 1, one event per POST; the rate the bot answered, which can be below the "
        f"acknowledged rate): {max_rate:,.0f} events/s. Open-loop load from "
        f"bench/loadgen.py (one event per POST, a new user per event, up to {args.max_connections} connections), "
        "latency from the scheduled send time to the reply's arrival at the Graph emulator.",
        f"Bot: qna answers one text; typingIndicators false, messageDelay 0, mark_seen "
        f"{'off' if args.no_mark_seen else 'on (one extra Graph call per reply)'}; graphBatching "
        f"{'off' if getattr(args, 'no_graph_batching', False) else 'on'}.",
        "lost = acked - replied after the drain (bounded: "
        f"{args.drain_timeout:g} s, or {args.stall_timeout:g} s without progress).",
    ]
    notes += [f"SQLite at {r.fraction:.0%}: {r.sql}" for r in rows if r.sql]
    return print_table(f"End to end: webhook → reply at the Graph emulator, {args.duration:g} s per load",
                       headers, table_rows, notes, machine=machine, load=load), max_rate
