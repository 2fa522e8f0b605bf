"""Module state on top of the storage backend: ``bot.state`` / ``server.state`` and ``bot.users``."""

from __future__ import annotations

from typing import Any

from .storage import Storage

HISTORY_MAX_LIMIT = 500


def linked_users(members: list[tuple[str, str, str]], bot_id: str, channel: str, user_id: str) -> list[dict[str, str]]:
    """The other ids of a contact, as ``event.user["linked"]`` and ``UserStore.get`` show them."""
    return [{"botId": b, "channel": c, "id": u} for b, c, u in members if (b, c, u) != (bot_id, channel, user_id)]


class StorageKeyValue:
    def __init__(self, storage: Storage, namespace: str) -> None:
        self._storage = storage
        self._namespace = namespace

    async def get(self, key: str, default: Any = None) -> Any:
        value = await self._storage.kv_get(self._namespace, key)
        return default if value is None else value

    async def set(self, key: str, value: Any) -> None:
        await self._storage.kv_set(self._namespace, key, value)

    async def set_many(self, items: dict[str, Any]) -> None:
        await self._storage.kv_set_many(self._namespace, items)

    async def delete(self, key: str) -> None:
        await self._storage.kv_delete(self._namespace, key)


class StorageUserStore:
    def __init__(self, storage: Storage, bot_id: str) -> None:
        self._storage = storage
        self._bot_id = bot_id

    async def get(self, user_id: str, channel: str) -> dict[str, Any] | None:
        user = await self._storage.user_get(self._bot_id, channel, user_id)
        if user is None:
            return None
        contact, members = await self._storage.contact_of(self._bot_id, channel, user_id)
        user["contactId"] = contact
        user["linked"] = linked_users(members, self._bot_id, channel, user_id)
        return user

    async def save(self, user_id: str, channel: str, profile: dict[str, Any] | None) -> None:
        await self._storage.user_upsert(self._bot_id, channel, user_id, profile)

    async def link(self, user_id: str, channel: str, others: list[tuple[str, str, str]]) -> str:
        members = [(self._bot_id, channel, user_id), *others]
        for bot_id, member_channel, member_id in members:
            # A contact is read through its users: make sure each member has one (profile kept).
            await self._storage.user_upsert(bot_id, member_channel, member_id, None)
        return await self._storage.contact_link(members)

    async def erase(self, user_id: str, channel: str) -> dict[str, int]:
        return await self._storage.erase_user(self._bot_id, channel, user_id)

    async def history(self, user_id: str, channel: str, *, thread_id: str | None = None, after: int | None = None,
                      before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise ValueError(f"history limit {limit} is not between 1 and {HISTORY_MAX_LIMIT}")
        return await self._storage.messages_for(self._bot_id, channel, user_id, limit, thread_id=thread_id,
                                                after_seq=after, before_seq=before)
