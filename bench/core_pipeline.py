"""The core pipeline alone: CPU per answered event without HTTP or a Graph API (for docs/benchmarks.md).

    taskset -c 0 python -m bench.core_pipeline [--events 6000] [--width 32]

A real server in this process (SQLite in a temporary data folder) with only the echo test
module (tests/fixtures/modules/echo): its channel's ``on_outgoing`` records the reply, its bot
logic answers every message. Events (a new user each) go straight into ``pipeline.receive``,
``--width`` at a time as concurrent webhooks would bring them, at most 1,000 unanswered, and
the process's CPU (every thread: the loop's and SQLite's) is divided by the events answered.
What is measured is what lies between a webhook's handler and the channel's send: the inbox and
outcome commits, the context read, bot logic's hooks, the outbox, the workers; with aiohttp and
the Graph calls out of the way, the spread between runs is a few per cent instead of ±15%.
Alternate it with another checkout's run (A, B, A, B…) to compare two versions.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

from botpress_py.events import IOEvent
from botpress_py.testing import make_bot, run_server, wait_for

REPO = Path(__file__).resolve().parent.parent
FIXTURE_MODULES = REPO / "tests" / "fixtures" / "modules"
MAX_UNANSWERED = 1000  # below the pipeline's in-memory bound: no event is parked in storage


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(events: int, width: int) -> tuple[float, float]:
    """(CPU µs per answered event, answered events/s) of one fresh server."""
    sys.path.insert(0, str(FIXTURE_MODULES / "echo"))
    import echo_module

    with tempfile.TemporaryDirectory(prefix="bp-core-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        make_bot(data, "alpha")
        async with run_server(data, {"BP_MODULES_PATH": str(FIXTURE_MODULES)}, modules=["echo"],
                              watch={"enabled": False}) as server:
            pipeline = server.pipeline

            def event(n: int) -> IOEvent:
                return IOEvent(type="text", channel="test", direction="incoming", botId="alpha", target=f"u{n}",
                               threadId="page", payload={"type": "text", "text": f"hi {n}"}, preview=f"hi {n}")

            async def answer(first: int, count: int) -> None:
                answered_before = len(echo_module.SENT)

                def unanswered(sent: int) -> int:
                    return sent - (len(echo_module.SENT) - answered_before)

                for n in range(first, first + count, width):
                    await wait_for(lambda n=n: unanswered(n - first) <= MAX_UNANSWERED, timeout=120, interval=0.001)
                    batch = [event(k) for k in range(n, min(n + width, first + count))]
                    await asyncio.gather(*(pipeline.receive([one]) for one in batch))
                await wait_for(lambda: unanswered(count) == 0, timeout=120, interval=0.001)

            await answer(0, 1000)  # warm-up
            cpu0, started = cpu_seconds(), time.monotonic()
            await answer(10**6, events)
            cpu1, ended = cpu_seconds(), time.monotonic()
    return (cpu1 - cpu0) / events * 1e6, events / (ended - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6000, help="events measured (after 1,000 of warm-up)")
    parser.add_argument("--width", type=int, default=32, help="receive calls in flight at once")
    args = parser.parse_args()
    cpu, rate = asyncio.run(measure(args.events, args.width))
    print(f"core pipeline: {cpu:.0f} µs of CPU per answered event ({rate:,.0f} events/s, {args.events} events, "
          f"{args.width} at a time)", flush=True)


if __name__ == "__main__":
    main()
