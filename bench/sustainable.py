"""The sustainable answering rate, searched with short open-loop runs, and the p99 at half of it.

A *probe* loads a fresh botpress-py at a fixed rate R (open loop: one event per POST, a new
user each, requests due at ``start + i / R`` whatever the server does) for
``--search-duration`` seconds. It passes when all of these hold:

- every request was acknowledged (HTTP 200);
- nothing is queued after the run: every acknowledged event was answered, and the last reply
  reached the Graph emulator at most ``--queue-grace`` seconds (default 1) after the last
  request was due, so no backlog was left to drain;
- the end-to-end p99 (from the scheduled send to the reply's arrival) is at most
  ``--p99-limit`` ms (default 100).

The sustainable rate is the highest rate that passed. Search: the first probe is at the rate
the bot answered at saturation (closed loop); while probes pass the rate grows by half, while
none has passed it halves; then bisection between the highest pass and the lowest failure
until they are within ``--search-tolerance`` (default 5%), at most ``--search-probes`` probes
in all. A final run of ``--duration`` seconds at 50% of the sustainable rate gives its p99.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.common import ForeignLoad, machine_lines
from bench.open_loop import E2ERow, measure_open_loop
from bench.tables import fmt, percentile, print_table
from bench.targets import start_emulator

PSID_BASE = 6 * 10**15  # probes' users (e2e's fractions use 5e15, scale 7e15 and 8e15)
MIN_RATE = 2.0  # events/s: below this the search gives up looking lower


@dataclass
class Probe:
    label: str
    row: E2ERow
    verdict: str  # "pass", or the first reason it failed

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def judge(row: E2ERow, args: argparse.Namespace) -> str:
    if row.non_200:
        return f"fail: {row.non_200} not acknowledged"
    if row.lost:
        return f"fail: {row.lost} unanswered"
    if not row.last_reply_after_load_ms <= args.queue_grace * 1000:
        return f"fail: queued (last reply {fmt(row.last_reply_after_load_ms, 0)} ms after the load)"
    p99 = percentile(row.latencies, 99)
    if not p99 <= args.p99_limit:
        return f"fail: p99 {fmt(p99, 1)} ms > {args.p99_limit:g}"
    return "pass"


async def search_sustainable(work: Path, graph_url: str, start_rate: float, args: argparse.Namespace
                             ) -> tuple[list[Probe], float]:
    """(the probes in the order they ran, the highest passing rate or 0 when none passed)."""
    probes: list[Probe] = []
    highest_pass, lowest_fail = 0.0, float("inf")
    rate = max(start_rate, MIN_RATE)
    while len(probes) < args.search_probes:  # bounded: at most --search-probes runs
        n = len(probes)
        print(f"e2e search: probe {n + 1}/{args.search_probes} at {rate:,.0f} events/s for "
              f"{args.search_duration:g} s...", flush=True)
        row = await measure_open_loop(
            work, graph_url, rate, args.search_duration, PSID_BASE + n * 10**9, args, name=f"search-{n}",
            fraction=rate / start_rate if start_rate else 0.0,
            drain_timeout=min(args.drain_timeout, 60.0), stall_timeout=min(args.stall_timeout, 10.0))
        probe = Probe(f"probe {n + 1}", row, judge(row, args))
        probes.append(probe)
        print(f"e2e search: {rate:,.0f} events/s: {probe.verdict}", flush=True)
        if probe.passed:
            highest_pass = max(highest_pass, rate)
        else:
            lowest_fail = min(lowest_fail, rate)
        if lowest_fail == float("inf"):
            rate *= 1.5  # nothing failed yet: look higher
        elif highest_pass == 0.0:
            rate /= 2  # nothing passed yet: look lower
            if rate < MIN_RATE:
                break
        elif lowest_fail <= highest_pass or lowest_fail - highest_pass <= args.search_tolerance * lowest_fail:
            break  # bracketed closely enough (or a noisy pass above a failure: keep the highest pass)
        else:
            rate = (highest_pass + lowest_fail) / 2
    return probes, highest_pass


async def sustainable_table(args: argparse.Namespace, work: Path, start_rate: float) -> str:
    machine, load = machine_lines(), ForeignLoad()
    emulator, graph_url = await start_emulator(work, pages=1)
    half: Probe | None = None
    try:
        probes, sustainable = await search_sustainable(work, graph_url, start_rate, args)
        if sustainable:
            print(f"e2e: sustainable {sustainable:,.0f} events/s; 50% of it for {args.duration:g} s...", flush=True)
            row = await measure_open_loop(work, graph_url, sustainable / 2, args.duration, PSID_BASE + 99 * 10**9,
                                          args, name="search-half",
                                          fraction=sustainable / 2 / start_rate if start_rate else 0.0,
                                          drain_timeout=args.drain_timeout, stall_timeout=args.stall_timeout)
            half = Probe("50% of sustainable", row, judge(row, args))
    finally:
        await emulator.stop()
    headers = ["run", "events/s", "s", "acked", "replied", "lost", "e2e p50 ms", "e2e p99 ms", "e2e max ms",
               "last reply after load ms", "server CPU", "driver CPU", "verdict"]
    table_rows = []
    for probe in [*probes, *([half] if half else [])]:
        r = probe.row
        table_rows.append([
            probe.label, fmt(r.rate, 0), fmt(r.send_seconds, 1), str(r.acked), str(r.replied), str(r.lost),
            fmt(percentile(r.latencies, 50), 1), fmt(percentile(r.latencies, 99), 1),
            fmt(r.latencies[-1] if r.latencies else float("nan"), 1), fmt(r.last_reply_after_load_ms, 0),
            fmt(r.server_cpu * 100, 0) + "%", fmt(r.driver_cpu * 100, 0) + "%",
            probe.verdict if probe is not half else "",
        ])
    if sustainable and half is not None:
        latencies = half.row.latencies
        result = (f"**Sustainable answering rate: {sustainable:,.0f} events/s**; at 50% of it "
                  f"({sustainable / 2:,.0f} events/s, {args.duration:g} s): e2e p99 "
                  f"**{fmt(percentile(latencies, 99), 1)} ms** (p50 {fmt(percentile(latencies, 50), 1)} ms), "
                  f"{half.row.lost} unanswered.")
    else:
        result = (f"**No sustainable rate found**: no probe down to {MIN_RATE:g} events/s passed "
                  f"(in {len(probes)} probes).")
    notes = [
        result,
        f"Sustainable = the highest open-loop rate at which every request is acknowledged, every event answered "
        f"with the last reply at most {args.queue_grace:g} s after the last request was due (nothing queued), "
        f"and the e2e p99 ≤ {args.p99_limit:g} ms. Searched from the saturation answering rate "
        f"({start_rate:,.0f} events/s): up by half while passing, halved until a pass, then bisection to within "
        f"{args.search_tolerance:.0%}, at most {args.search_probes} probes of {args.search_duration:g} s, each on "
        "a fresh server and data folder.",
        f"Bot: qna answers one text; typingIndicators false, messageDelay 0, mark_seen "
        f"{'off' if args.no_mark_seen else 'on (one extra Graph call per reply)'}; graphBatching "
        f"{'off' if getattr(args, 'no_graph_batching', False) else 'on'}; one event per POST, a new user "
        f"per event, up to {args.max_connections} connections (bench/loadgen.py).",
    ]
    return print_table("End to end: the sustainable answering rate, and the p99 at half of it", headers, table_rows,
                       notes, machine=machine, load=load)
