"""Durable storage: SQLite under ``data/storage/`` by default, PostgreSQL when ``DATABASE_URL`` says so."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from .base import Completion, FailedEvent, IncomingContext, OutboxRow, PendingEvent, SentMark, Storage
from .group_commit import STORED_AS_FAILED, GroupCommit, GroupCommitCompletions, GroupCommitInbox, GroupCommitSent
from .postgres import PostgresStorage
from .sqlite import SQLiteStorage

__all__ = [
    "STORED_AS_FAILED",
    "Completion",
    "FailedEvent",
    "GroupCommit",
    "GroupCommitCompletions",
    "GroupCommitInbox",
    "GroupCommitSent",
    "IncomingContext",
    "OutboxRow",
    "PendingEvent",
    "PostgresStorage",
    "SQLiteStorage",
    "SentMark",
    "Storage",
    "open_storage",
]

POSTGRES_SCHEMES = ("postgres", "postgresql")


def open_storage(data_dir: Path, env: Mapping[str, str]) -> Storage:
    """The storage the environment asks for, not yet opened (call ``await storage.open()``).

    ``DATABASE_URL=postgres://...`` or ``postgresql://...`` selects PostgreSQL (with
    ``BP_DATABASE_SCHEMA`` naming a schema to create and use); unset or empty selects the
    embedded SQLite file ``<data_dir>/storage/core.sqlite``.
    """
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        path = Path(data_dir) / "storage" / "core.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteStorage(path)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        scheme = ""
    if scheme in POSTGRES_SCHEMES:
        return PostgresStorage(url, schema=env.get("BP_DATABASE_SCHEMA", "").strip() or None)
    # Never echo the URL: it usually carries a password.
    shown = f"scheme {scheme!r}" if scheme else "a value without a scheme"
    raise ValueError(
        f"DATABASE_URL has {shown}, which is not supported: use postgres://... or postgresql://... for "
        "PostgreSQL, or leave DATABASE_URL unset or empty for the embedded SQLite file "
        "data/storage/core.sqlite"
    )
