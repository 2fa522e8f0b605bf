"""``botpress-py`` on uvloop, for the "what would uvloop give" row of the ingest table.

    taskset -c 0 python -m bench.uvloop_start start --data DIR --port N

Same CLI and code as ``python -m botpress_py``; only the event loop differs. uvloop is a
bench-only install (``pip install uvloop``), not a dependency of the package.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

from botpress_py.cli import main

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(main())
