"""A bot's conversations listed most recent first, page by page, on both backends."""

from __future__ import annotations

from typing import Any

from botpress_py.events import IOEvent, masked_copy
from botpress_py.storage import Storage


def message(text: str, *, bot: str = "bot-a", channel: str = "web", user: str = "u1", thread: str | None = None,
            at: int = 1_000, direction: str = "incoming", mask: bool = False) -> IOEvent:
    event = IOEvent(type="text", channel=channel, direction=direction, botId=bot, target=user,  # type: ignore[arg-type]
                    threadId=thread, payload={"type": "text", "text": text}, preview=text, createdOn=at,
                    flags={"mask": True} if mask else {})
    return masked_copy(event) if mask else event


def cursor(row: dict[str, Any]) -> tuple[int, str, str, str]:
    return row["lastEventAt"], row["channel"], row["userId"], row["threadId"] or ""


async def test_conversations_come_most_recent_first_with_their_last_message(storage: Storage) -> None:
    await storage.message_record(message("old", user="u1", at=1_000))
    await storage.message_record(message("newest", user="u2", at=3_000, direction="outgoing"))
    await storage.message_record(message("middle", user="u3", channel="messenger", thread="page-1", at=2_000))
    await storage.message_record(message("u1 again", user="u1", at=1_500))
    await storage.message_record(message("another bot", bot="bot-b", user="u1", at=9_000))

    rows = await storage.conversations("bot-a")
    assert [(r["userId"], r["lastPreview"]) for r in rows] == [("u2", "newest"), ("u3", "middle"), ("u1", "u1 again")]
    assert rows[0] == {"botId": "bot-a", "channel": "web", "userId": "u2", "threadId": None, "createdOn": 3_000,
                       "lastEventAt": 3_000, "lastPreview": "newest", "lastDirection": "outgoing"}
    assert rows[1]["threadId"] == "page-1" and rows[1]["channel"] == "messenger"
    assert [r["userId"] for r in await storage.conversations("bot-a", channel="web")] == ["u2", "u1"]
    assert [r["userId"] for r in await storage.conversations("bot-a", channel="messenger")] == ["u3"]
    assert await storage.conversations("bot-a", channel="instagram") == []
    assert await storage.conversations("no-such-bot") == []


async def test_pages_cover_every_conversation_once_even_with_equal_times(storage: Storage) -> None:
    # Ties on the time are ordered by channel, user and thread: a page never ends mid-tie with a loss.
    for i in range(23):
        await storage.message_record(message(f"m{i}", user=f"user-{i:02d}", thread="t" if i % 3 else None,
                                             at=5_000 if i % 2 else 4_000 + i))
    seen: list[tuple[str, str | None]] = []
    after = None
    while True:
        page = await storage.conversations("bot-a", limit=5, after=after)
        if not page:
            break
        assert len(page) <= 5
        seen += [(r["userId"], r["threadId"]) for r in page]
        after = cursor(page[-1])
    assert len(seen) == 23 and len(set(seen)) == 23
    everything = await storage.conversations("bot-a", limit=100)
    assert [(r["userId"], r["threadId"]) for r in everything] == seen
    times = [r["lastEventAt"] for r in everything]
    assert times == sorted(times, reverse=True)


async def test_a_masked_conversation_lists_what_storage_holds(storage: Storage) -> None:
    await storage.message_record(message("my card number is 4242", user="u9", mask=True))
    [row] = await storage.conversations("bot-a")
    assert row["lastPreview"] == "***"
    history = await storage.messages_for("bot-a", "web", "u9")
    assert "4242" not in repr(history)


async def test_hostile_ids_are_plain_values(storage: Storage) -> None:
    hostile = "x' OR '1'='1"
    await storage.message_record(message("hi", user=hostile, channel="web"))
    assert [r["userId"] for r in await storage.conversations("bot-a")] == [hostile]
    assert await storage.conversations(hostile) == []
    assert await storage.conversations("bot-a", channel=hostile) == []
