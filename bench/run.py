"""Benchmarks of botpress-py, one command per scenario (see bench/README.md).

    python -m bench.run ingest    # acknowledged events/s vs the bare-aiohttp ceiling (wrk)
    python -m bench.run e2e       # webhook POST -> reply at the Graph emulator; the sustainable rate
    python -m bench.run answer    # answered events/s side by side with Bottender and opsdroid
    python -m bench.run scale     # 1 / 100 / 1000 (/ 10000) bots: start, RSS, disable+enable under traffic
    python -m bench.run cluster   # 1 worker on SQLite, 1 and 2 workers on PostgreSQL
    python -m bench.run all       # every scenario above, in that order

Servers under test run pinned to core 0 (taskset); the load generators (wrk, bench/loadgen.py
in this process) and the Graph API stand-ins run on core 1. Everything talks to 127.0.0.1
only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import LOAD_CORE, SERVER_CORE, pin_to_load_core, use_uvloop

SCENARIOS = ("ingest", "e2e", "answer", "scale", "cluster")
# wrk connections when --connections is not given: ingest and scale keep the 64 of the first
# measurements; the answering comparisons use 32 (docs/benchmarks.md).
DEFAULT_CONNECTIONS = {"ingest": 64, "e2e": 64, "answer": 32, "scale": 64, "cluster": 32}
ANSWER_TARGETS = ("ceiling", "ingest", "answer", "answer-seen", "bottender", "opsdroid")
# Measured only when named: botpress-py with graphBatching off, to compare with "answer" in the same run.
EXTRA_ANSWER_TARGETS = ("answer-nobatch",)


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only when there is one worth reading (not None, empty or False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, "", False) or isinstance(action, argparse.BooleanOptionalAction):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0],
                                     formatter_class=_HelpWithDefaults)
    parser.add_argument("scenario", nargs="+", choices=[*SCENARIOS, "all"],
                        help="one or more scenarios, run in the order given; all = " + " ".join(SCENARIOS))
    common = parser.add_argument_group("every scenario")
    common.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    common.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up before each wrk run")
    common.add_argument("--repeat", type=int, default=1,
                        help="ingest, answer, cluster: rounds (every target once per round, fresh process each); "
                             "a row shows the median run")
    common.add_argument("--connections", type=int, default=None,
                        help="wrk connections (default: 64 for ingest and scale, 32 for answer and cluster)")
    common.add_argument("--bodies-rate", type=float, default=15000.0,
                        help="requests/s the pre-signed bodies files are sized for (they must not wrap)")
    common.add_argument("--drain-timeout", type=float, default=300.0,
                        help="e2e, answer, cluster: max seconds waiting for replies after the load")
    common.add_argument("--keep", action="store_true", help="keep the work folder (logs, data) for inspection")

    ingest = parser.add_argument_group("ingest")
    ingest.add_argument("--per-post", type=int, nargs="+", default=[1, 10], help="events per POST")
    ingest.add_argument("--decompose", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the ingest path alone (bot disabled: stored, not processed) and "
                             "verify+parse alone (deliveries for an unknown Page: nothing stored) (default on)")
    ingest.add_argument("--uvloop-server", action=argparse.BooleanOptionalAction, default=True,
                        help="also run botpress-py on uvloop (bench/uvloop_start.py), if installed (default on)")
    ingest.add_argument("--py-spy", metavar="DIR", default="",
                        help="sample botpress-py with py-spy during each run; raw profiles go to DIR")

    e2e = parser.add_argument_group("e2e")
    e2e.add_argument("--max-rate", type=float, default=0.0,
                     help="the saturation answering rate (events/s) the fractions and the search start from "
                          "(default: measure it first, like ingest)")
    e2e.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.9],
                     help="loads of the fractions table, as fractions of the saturation answering rate")
    e2e.add_argument("--max-connections", type=int, default=256, help="open-loop driver connection cap")
    e2e.add_argument("--stall-timeout", type=float, default=30.0,
                     help="stop waiting after this many seconds without a new reply")
    e2e.add_argument("--no-mark-seen", action="store_true", help="disable the mark_seen sender action")
    e2e.add_argument("--no-graph-batching", action="store_true",
                     help="graphBatching false: one HTTP request per Send API call (on by default, as for any bot)")
    e2e.add_argument("--sql-count", action="store_true",
                     help="count the server's SQL statements per event (bench/sql_count_start.py)")
    e2e.add_argument("--sustainable", action=argparse.BooleanOptionalAction, default=True,
                     help="search the sustainable answering rate and measure the p99 at half of it (default on)")
    e2e.add_argument("--search-duration", type=float, default=5.0, help="seconds per probe of the search")
    e2e.add_argument("--search-probes", type=int, default=8, help="at most this many probes")
    e2e.add_argument("--search-tolerance", type=float, default=0.05,
                     help="stop when the highest pass and the lowest failure are this close (share of the failure)")
    e2e.add_argument("--p99-limit", type=float, default=100.0, help="ms: a probe's e2e p99 must not exceed it")
    e2e.add_argument("--queue-grace", type=float, default=1.0,
                     help="s: a probe's last reply must arrive within this after the last request was due")

    answer = parser.add_argument_group("answer and cluster")
    answer.add_argument("--answer-targets", nargs="+", choices=ANSWER_TARGETS + EXTRA_ANSWER_TARGETS,
                        default=list(ANSWER_TARGETS),
                        help="answer: the rows to measure (peers not installed are shown as such; "
                             "answer-nobatch: graphBatching off)")
    answer.add_argument("--answer-stall-timeout", type=float, default=5.0,
                        help="stop draining after this many seconds without a new reply")
    answer.add_argument("--database-url", default="",
                        help="cluster: PostgreSQL for the PostgreSQL rows (default: $DATABASE_URL; each run "
                             "gets its own schema, dropped afterwards)")

    scale = parser.add_argument_group("scale")
    scale.add_argument("--bots", type=int, nargs="+", default=[1, 100, 1000], help="bot counts, e.g. 1 100 1000 10000")
    scale.add_argument("--measure-get-me", action=argparse.BooleanOptionalAction, default=True,
                       help="also start without pageId (each bot calls GET /me at mount) (default on)")
    scale.add_argument("--cycles", type=int, default=5, help="disable+enable cycles")
    scale.add_argument("--scale-rate", type=float, default=50.0,
                       help="webhook deliveries/s to the other bots during the cycles")
    scale.add_argument("--idle-seconds", type=float, default=3.0, help="idle window after start (idle CPU)")
    scale.add_argument("--scale-ingest", action=argparse.BooleanOptionalAction, default=True,
                       help="also measure the webhook ack rate with deliveries over every page (default on)")
    scale.add_argument("--scale-ingest-seconds", type=float, default=5.0, help="wrk seconds for the ack rate")
    args = parser.parse_args(argv)
    # Read here, not as the option's default: --help would print it, password included.
    args.database_url = args.database_url or os.environ.get("DATABASE_URL", "")
    args.scenarios = list(SCENARIOS) if "all" in args.scenario else list(dict.fromkeys(args.scenario))
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def for_scenario(args: argparse.Namespace, scenario: str) -> argparse.Namespace:
    """The options as ``scenario`` sees them (its default wrk connections filled in)."""
    scoped = argparse.Namespace(**vars(args))
    scoped.connections = args.connections or DEFAULT_CONNECTIONS[scenario]
    return scoped


async def amain(args: argparse.Namespace) -> int:
    # Imported here so that --help answers without loading every scenario.
    from bench.answer import scenario_answer
    from bench.cluster import scenario_cluster
    from bench.e2e import scenario_e2e
    from bench.ingest import scenario_ingest
    from bench.scale import scenario_scale

    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk (see bench/README.md)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bp-bench-"))
    print(f"work folder: {work}", flush=True)
    tables: list[str] = []
    try:
        max_rate: float | None = None
        for scenario in args.scenarios:
            scoped = for_scenario(args, scenario)
            if scenario == "ingest":
                table, max_rate = await scenario_ingest(scoped, work)
            elif scenario == "e2e":
                table = await scenario_e2e(scoped, work, max_rate)  # reuses ingest's rate when it ran first
            elif scenario == "answer":
                table = await scenario_answer(scoped, work)
            elif scenario == "scale":
                table = await scenario_scale(scoped, work)
            else:
                table = await scenario_cluster(scoped, work)
            tables.append(table)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
    if len(tables) > 1:
        print("\n\n".join(tables))
    return 0


def main() -> None:
    args = parse_args()
    pin_to_load_core()
    loop = use_uvloop()
    print(f"bench driver on core {LOAD_CORE} ({loop}); servers under test on core {SERVER_CORE}", flush=True)
    sys.exit(asyncio.run(amain(args)))


if __name__ == "__main__":
    main()
