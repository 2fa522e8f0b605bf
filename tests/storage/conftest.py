"""Fixtures that run every storage test against both backends.

SQLite lives in the test's tmp_path. PostgreSQL uses ``DATABASE_URL`` with a fresh schema per
test (dropped afterwards), so parallel or repeated runs never see each other's rows.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from botpress_py.storage import PostgresStorage, SQLiteStorage, Storage
from botpress_py.storage.postgres_statements import quote_ident

PG_SKIP_REASON = "DATABASE_URL not set: PostgreSQL backend tests skipped; .ci/run sets it"


@dataclass
class Backend:
    """One database, and ways to reach it: new storage objects on it and a raw reader."""

    name: str
    storage_class: type[Storage]
    _location: Any
    _query: Callable[[str], Awaitable[list[tuple[Any, ...]]]]
    _tables_sql: str
    opened: list[Storage] = field(default_factory=list)

    def make(self, cls: type[Storage] | None = None, **kwargs: Any) -> Storage:
        """A storage object (not yet opened) on this database; ``cls`` may be a subclass."""
        cls = cls or self.storage_class
        assert issubclass(cls, self.storage_class)
        if self.name == "postgres":
            storage = cls(self._location["dsn"], schema=self._location["schema"], **kwargs)
        else:
            storage = cls(self._location, **kwargs)
        self.opened.append(storage)
        return storage

    async def open(self, cls: type[Storage] | None = None, **kwargs: Any) -> Storage:
        storage = self.make(cls, **kwargs)
        await storage.open()
        return storage

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows read over a separate connection: what is really committed, not what the backend says."""
        return await self._query(sql)

    async def tables(self) -> set[str]:
        return {row[0] for row in await self._query(self._tables_sql)}


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "storage" / "core.sqlite"

        async def sqlite_query(sql: str) -> list[tuple[Any, ...]]:
            if not path.exists():
                return []  # no database file yet: nothing stored (and no file created by looking)
            # A separate read-only connection, as an operator's sqlite3 shell would open it.
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                return [tuple(row) for row in db.execute(sql).fetchall()]

        backend = Backend(
            "sqlite", SQLiteStorage, path, sqlite_query, "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
        try:
            yield backend
        finally:
            for storage in backend.opened:
                await storage.close()
        return

    dsn = os.environ.get("DATABASE_URL", "").strip()
    if not dsn:
        pytest.skip(PG_SKIP_REASON)
    schema = f"bp_test_{uuid.uuid4().hex[:16]}"

    async def pg_query(sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": quote_ident(schema)})
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    backend = Backend(
        "postgres",
        PostgresStorage,
        {"dsn": dsn, "schema": schema},
        pg_query,
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
    )
    try:
        yield backend
    finally:
        for storage in backend.opened:
            await storage.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        finally:
            await conn.close()


@pytest.fixture
async def storage(backend: Backend) -> Storage:
    return await backend.open()
