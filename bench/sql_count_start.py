"""``botpress-py`` that counts the SQL statements it runs, on SQLite or PostgreSQL (diagnostic only).

    taskset -c 0 python -m bench.sql_count_start COUNTS_FILE start --data DIR --port N

Every SQLite connection the server opens gets a trace callback (``sqlite3.connect`` is wrapped
before the server imports its storage), so every statement is counted by its shape, BEGIN
and COMMIT included, whichever thread runs it. With DATABASE_URL set, every pooled asyncpg
connection gets a query logger instead (``asyncpg.create_pool`` is wrapped): on PostgreSQL each
statement is a network round trip, so the count is the round trips per event. The counts are
written to COUNTS_FILE at exit.
"""

from __future__ import annotations

import atexit
import re
import sqlite3
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

_counts: Counter[str] = Counter()
_lock = threading.Lock()
_connect = sqlite3.connect


def _shape(statement: str) -> str:
    text = re.sub(r"\s+", " ", statement).strip()
    text = re.sub(r"'[^']*'|\b\d+\b", "?", text)  # trace callbacks see bound values expanded
    text = re.sub(r"\((\?|NULL)(, (\?|NULL))*\)(, \((\?|NULL)(, (\?|NULL))*\))*", "(?…)", text)
    return text[:90]


def _trace(statement: str) -> None:
    with _lock:
        _counts[_shape(statement)] += 1


def _counting_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    conn = _connect(*args, **kwargs)
    conn.set_trace_callback(_trace)
    return conn


def _count_asyncpg() -> None:
    import asyncpg

    create_pool = asyncpg.create_pool

    def logged(query: Any) -> None:
        _trace(query.query)

    async def init(conn: Any) -> None:
        conn.add_query_logger(logged)

    def counting_pool(*args: Any, **kwargs: Any) -> Any:
        return create_pool(*args, **kwargs, init=init)

    asyncpg.create_pool = counting_pool


def _dump(path: Path) -> None:
    path.write_text("".join(f"{n}\t{shape}\n" for shape, n in _counts.most_common()), encoding="utf-8")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    sqlite3.connect = _counting_connect
    _count_asyncpg()
    atexit.register(_dump, out)
    from botpress_py.cli import main

    sys.argv = [sys.argv[0], *sys.argv[2:]]
    sys.exit(main())
