"""Module key-value state on top of the storage backend (``bot.state`` / ``server.state``)."""

from __future__ import annotations

from typing import Any

from .storage import Storage


class StorageKeyValue:
    def __init__(self, storage: Storage, namespace: str) -> None:
        self._storage = storage
        self._namespace = namespace

    async def get(self, key: str, default: Any = None) -> Any:
        value = await self._storage.kv_get(self._namespace, key)
        return default if value is None else value

    async def set(self, key: str, value: Any) -> None:
        await self._storage.kv_set(self._namespace, key, value)

    async def delete(self, key: str) -> None:
        await self._storage.kv_delete(self._namespace, key)
