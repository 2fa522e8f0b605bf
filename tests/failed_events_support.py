"""What the failed-event tests share: a server's database on either backend, and faults in it.

Faults are injected into the real database (a trigger that refuses one row), never by
replacing our own code: the server sees exactly what a refusing database does.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from botpress_py.metrics import labelled
from botpress_py.testing import postgres_schema

TOKEN = "failed-events-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
# Fast retries for tests: three attempts, 10 ms apart (then 20 ms).
FAST_RETRIES = {"failedEvents": {"maxAttempts": 3, "backoff": "10ms"}}
POISON_CREATED_ON = 10**30  # fits JSON, not a 64-bit integer column

_SQLITE_REFUSE = ("CREATE TRIGGER refuse_history BEFORE INSERT ON messages WHEN NEW.preview = 'refuse me' "
                  "BEGIN SELECT RAISE(ABORT, 'history refused (injected fault)'); END")
_PG_REFUSE = (
    "CREATE OR REPLACE FUNCTION refuse_history() RETURNS trigger AS $$ BEGIN "
    "IF NEW.preview = 'refuse me' THEN RAISE EXCEPTION 'history refused (injected fault)'; END IF; "
    "RETURN NEW; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER refuse_history BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_history()",
)


@dataclass
class Database:
    """The database a test server uses, reached over a connection of its own."""

    kind: str
    env: dict[str, str]
    data_dir: Path

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.data_dir / "storage" / "core.sqlite", timeout=10)) as db:
                rows = db.execute(sql).fetchall()
                db.commit()
                return [tuple(r) for r in rows]
        import asyncpg

        conn = await asyncpg.connect(self.env["DATABASE_URL"],
                                     server_settings={"search_path": f'"{self.env["BP_DATABASE_SCHEMA"]}"'})
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def refuse_history_of(self) -> None:
        """From now on the database refuses the history row of a message whose text is 'refuse me'."""
        for statement in (_SQLITE_REFUSE,) if self.kind == "sqlite" else _PG_REFUSE:
            await self.query(statement)

    async def stop_refusing(self) -> None:
        await self.query("DROP TRIGGER refuse_history" if self.kind == "sqlite"
                         else "DROP TRIGGER refuse_history ON messages")

    async def inbox(self, user: str) -> list[tuple[str, str | None, int]]:
        """(status, error, attempts) of a user's incoming events, in arrival order."""
        return [tuple(r) for r in await self.query(  # type: ignore[misc]
            f"SELECT status, error, attempts FROM inbox WHERE user_id = '{user}' ORDER BY seq")]


@contextlib.asynccontextmanager
async def database_for(kind: str, data_dir: Path) -> AsyncIterator[Database]:
    if kind == "sqlite":
        yield Database("sqlite", {}, data_dir)
        return
    async with postgres_schema("bp_failed") as schema:
        yield Database("postgres", schema.env, data_dir)


async def post_in(s: aiohttp.ClientSession, srv: Any, user: str, text: str, **extra: Any) -> tuple[int, Any]:
    async with s.post(f"{srv.url}/api/v1/bots/alpha/mod/echo/in", json={"user": user, "text": text, **extra}) as r:
        return r.status, await r.json()


async def metrics(s: aiohttp.ClientSession, srv: Any) -> dict[str, float]:
    async with s.get(f"{srv.url}/metrics") as r:
        text = await r.text()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


FAILED_IN = labelled("bp_events_failed_total", direction="incoming")
FAILED_OUT = labelled("bp_events_failed_total", direction="outgoing")
STORED_FAILED_IN = labelled("bp_failed_events", direction="incoming")
STORED_FAILED_OUT = labelled("bp_failed_events", direction="outgoing")
