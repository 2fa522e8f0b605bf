"""Message history read in pages: since a position (catching up), before one (paging back), per thread."""

from __future__ import annotations

import pytest

from botpress_py.events import IOEvent
from botpress_py.state import StorageUserStore
from botpress_py.storage import Storage


def message(text: str, *, thread: str = "t1", user: str = "u1", direction: str = "incoming") -> IOEvent:
    return IOEvent(type="text", channel="web", direction=direction, botId="bot-a", target=user,  # type: ignore[arg-type]
                   threadId=thread, payload={"type": "text", "text": text}, preview=text)


async def test_history_pages_forward_and_back_with_growing_positions(storage: Storage) -> None:
    events = [message(f"m{i}", direction="incoming" if i % 2 else "outgoing") for i in range(7)]
    for event in events:
        await storage.message_record(event)
    await storage.message_record(message("other user", user="u2"))

    everything = await storage.messages_for("bot-a", "web", "u1")
    assert [m["preview"] for m in everything] == [f"m{i}" for i in range(7)]
    seqs = [m["seq"] for m in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == 7

    # catching up: the oldest `limit` after a position, oldest first
    after = await storage.messages_for("bot-a", "web", "u1", 2, after_seq=seqs[2])
    assert [m["preview"] for m in after] == ["m3", "m4"]
    assert await storage.messages_for("bot-a", "web", "u1", after_seq=seqs[-1]) == []
    # paging back: the newest `limit` before a position, oldest first
    before = await storage.messages_for("bot-a", "web", "u1", 2, before_seq=seqs[5])
    assert [m["preview"] for m in before] == ["m3", "m4"]
    assert await storage.messages_for("bot-a", "web", "u1", before_seq=seqs[0]) == []
    # both: a window
    window = await storage.messages_for("bot-a", "web", "u1", 10, after_seq=seqs[1], before_seq=seqs[4])
    assert [m["preview"] for m in window] == ["m2", "m3"]


async def test_history_of_one_thread(storage: Storage) -> None:
    for text, thread in (("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")):
        await storage.message_record(message(text, thread=thread))
    assert [m["preview"] for m in await storage.messages_for("bot-a", "web", "u1", thread_id="a")] == ["a1", "a2"]
    assert [m["preview"] for m in await storage.messages_for("bot-a", "web", "u1", thread_id="b")] == ["b1", "b2"]
    assert await storage.messages_for("bot-a", "web", "u1", thread_id="c") == []
    assert len(await storage.messages_for("bot-a", "web", "u1")) == 4


async def test_user_store_history_checks_its_limit(storage: Storage) -> None:
    users = StorageUserStore(storage, "bot-a")
    for i in range(3):
        await storage.message_record(message(f"m{i}"))
    page = await users.history("u1", "web", limit=2)
    assert [m["preview"] for m in page] == ["m1", "m2"]
    assert [m["preview"] for m in await users.history("u1", "web", before=page[0]["seq"])] == ["m0"]
    assert [m["preview"] for m in await users.history("u1", "web", thread_id="t1", after=page[0]["seq"])] == ["m2"]
    for bad in (0, -1, 501):
        with pytest.raises(ValueError, match="history limit"):
            await users.history("u1", "web", limit=bad)
