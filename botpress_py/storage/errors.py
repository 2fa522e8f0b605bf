"""What storage errors mean to an operator: the ones that say "not now" become StorageUnavailable,
with the cause and what to check, per backend (never a URL: it may hold a password)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from .base import StorageUnavailable


def sqlite_unavailable(exc: sqlite3.OperationalError, path: Path, bound: float) -> StorageUnavailable | None:
    """StorageUnavailable naming the cause and the fix, for the errors that mean "not now"; else None."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        reason = (f"another process has held the write lock of {path} for more than "
                  f"{bound:g}s (storage.queryTimeout): close the program that holds it, e.g. a "
                  "sqlite3 shell left inside a transaction")
    elif "readonly" in text or "read-only" in text:
        reason = (f"{path} cannot be written ({text}): check that this user may write the file, its "
                  f"-wal and -shm files and the folder {path.parent}, and that the disk is not mounted "
                  "read-only")
    elif "full" in text:
        reason = f"the disk holding {path} is full ({text}): free space on it"
    elif "disk I/O" in text or "unable to open" in text:
        reason = f"{path} cannot be read or written ({text}): check the disk and the file's folder"
    else:
        return None
    return StorageUnavailable(f"SQLite storage unavailable: {reason}")


# Errors that mean "the database cannot do it now" rather than a bug or a bad value.
POSTGRES_NOT_NOW = (
    TimeoutError, OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError, asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.InsufficientPrivilegeError, asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,
)


def postgres_unavailable(exc: BaseException, bound: float) -> StorageUnavailable:
    """The cause and the fix of a "not now" error, in words an operator can act on (never the URL)."""
    if isinstance(exc, TimeoutError):
        reason = (f"PostgreSQL did not answer within {bound:g}s (storage.queryTimeout): check that it is running, "
                  "reachable and not overloaded, and that DATABASE_URL points at it")
    elif isinstance(exc, asyncpg.exceptions.LockNotAvailableError):
        reason = (f"a lock was held elsewhere for more than {bound:g}s (storage.queryTimeout): look for a "
                  "long transaction in pg_stat_activity")
    elif isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        reason = (f"a statement ran, or waited for a lock held elsewhere, for more than {bound:g}s "
                  "(storage.queryTimeout) and was cancelled: look for a long transaction in pg_stat_activity")
    elif isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        reason = ("the database refuses writes (a read-only standby, or default_transaction_read_only): point "
                  "DATABASE_URL at the primary")
    elif isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError | asyncpg.exceptions.InvalidCatalogNameError
                    | asyncpg.exceptions.InvalidAuthorizationSpecificationError):
        reason = (f"{type(exc).__name__}: {exc}: check the database and the role in DATABASE_URL, and that the role "
                  "may read and write the tables")
    else:
        reason = (f"{type(exc).__name__}: {exc}: check that PostgreSQL is running and reachable at the host and "
                  "port of DATABASE_URL")
    return StorageUnavailable(f"PostgreSQL storage unavailable: {reason}")
