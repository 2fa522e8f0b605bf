"""Key-value reads that arrive together share one hand-off to the reader thread.

Mounting 10,000 bots reads two or three keys per bot (a channel's Page, its pushed profile):
one thread hand-off each cost more of the event loop than the reads themselves. Reads asked
while a batch is on the reader thread wait for it to finish and then go together, as commits
do in group_commit.py; a lone read goes at once. Each read is its own statement: one that
fails fails only its caller.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

Key = tuple[str, str]  # namespace, key
# Runs on the reader thread: for each key its value (None when absent) or the exception it raised.
ReadMany = Callable[[list[Key]], Awaitable[list[Any]]]


class KvReadBatcher:
    def __init__(self, read_many: ReadMany) -> None:
        self._read_many = read_many
        self._waiting: dict[Key, list[asyncio.Future[Any]]] = {}
        self._running = False

    async def get(self, namespace: str, key: str) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((namespace, key), []).append(future)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().call_soon(self._start)  # reads asked in this same turn join
        return await future

    def _start(self) -> None:
        asyncio.get_running_loop().create_task(self._drain(), name="kv-reads")

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                keys = list(batch)
                try:
                    results = await self._read_many(keys)
                except Exception as exc:  # the hand-off itself failed (storage closed): every caller hears it
                    results = [exc] * len(keys)
                except BaseException:  # cancelled (the loop is closing): so are the callers
                    for futures in batch.values():
                        for future in futures:
                            future.cancel()
                    raise
                _settle(batch, keys, results)
        finally:
            self._running = False


def _settle(batch: dict[Key, list[asyncio.Future[Any]]], keys: list[Key], results: list[Any]) -> None:
    for key, result in zip(keys, results, strict=True):
        for future in batch[key]:
            if future.done():  # its caller was cancelled
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def read_keys(reader: sqlite3.Connection, keys: list[Key],
              unavailable: Callable[[sqlite3.OperationalError], Exception | None]) -> list[Any]:
    """On SQLite's reader thread: each key's value, None when absent, or the exception its read raised
    (``unavailable`` turns a locked or missing database into the storage's own error, as for any read)."""
    out: list[Any] = []
    for namespace, key in keys:
        try:
            rows = reader.execute("SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)).fetchall()
            out.append(json.loads(rows[0][0]) if rows else None)
        except sqlite3.OperationalError as exc:
            translated = unavailable(exc)
            if translated is not None:
                translated.__cause__ = exc
            out.append(translated or exc)
        except Exception as exc:  # this key's failure is its caller's alone
            out.append(exc)
    return out
