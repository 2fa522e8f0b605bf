"""Durable storage: SQLite under ``data/storage/`` by default, PostgreSQL when ``DATABASE_URL`` says so."""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import NoReturn

from .base import (
    Completion,
    FailedEvent,
    IncomingContext,
    OutboxRow,
    PendingEvent,
    SentMark,
    Storage,
    StorageUnavailable,
)
from .crypto import EventCipher, StorageKeyError, load_cipher
from .group_commit import (
    STORED_AS_FAILED,
    GroupCommit,
    GroupCommitCompletions,
    GroupCommitInbox,
    GroupCommitOutcomes,
    GroupCommitSent,
)
from .postgres import PostgresStorage
from .sqlite import SQLiteStorage

__all__ = [
    "STORED_AS_FAILED",
    "Completion",
    "EventCipher",
    "FailedEvent",
    "GroupCommit",
    "GroupCommitCompletions",
    "GroupCommitInbox",
    "GroupCommitOutcomes",
    "GroupCommitSent",
    "IncomingContext",
    "OutboxRow",
    "PendingEvent",
    "PostgresStorage",
    "SQLiteStorage",
    "SentMark",
    "Storage",
    "StorageKeyError",
    "StorageUnavailable",
    "open_storage",
]

POSTGRES_SCHEMES = ("postgres", "postgresql")


def open_storage(data_dir: Path, env: Mapping[str, str], *, query_timeout: float = 30.0) -> Storage:
    """The storage the environment asks for, not yet opened (call ``await storage.open()``).

    ``DATABASE_URL=postgres://...`` or ``postgresql://...`` selects PostgreSQL (with
    ``BP_DATABASE_SCHEMA`` naming a schema to create and use); unset or empty selects the
    embedded SQLite file ``<data_dir>/storage/core.sqlite``. Masked events are encrypted with the
    key of env ``BP_STORAGE_KEY`` or ``<data_dir>/secrets/storage.key`` (crypto.py), whichever the
    backend; a key that cannot be used raises StorageKeyError. ``query_timeout``: see
    ``storage.queryTimeout`` in docs/configuration.md.
    """
    url = env.get("DATABASE_URL", "").strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if url and scheme not in POSTGRES_SCHEMES:
        _refuse_url(scheme)
    cipher = load_cipher(Path(data_dir), env)
    if not url:
        path = Path(data_dir) / "storage" / "core.sqlite"
        with suppress(OSError):  # open() tries again, and says what to check when it fails
            path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteStorage(path, cipher=cipher, query_timeout=query_timeout)
    return PostgresStorage(url, schema=env.get("BP_DATABASE_SCHEMA", "").strip() or None, cipher=cipher,
                           query_timeout=query_timeout)


def _refuse_url(scheme: str) -> NoReturn:
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        scheme = ""
    # Never echo the URL: it usually carries a password.
    shown = f"scheme {scheme!r}" if scheme else "a value without a scheme"
    raise ValueError(
        f"DATABASE_URL has {shown}, which is not supported: use postgres://... or postgresql://... for "
        "PostgreSQL, or leave DATABASE_URL unset or empty for the embedded SQLite file "
        "data/storage/core.sqlite"
    )
