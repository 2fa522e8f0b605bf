"""What the storage tests share: events to store, a settable clock, and storages wrapped to count
their transactions or to fail on purpose (tests/storage/test_storage_*.py)."""

from __future__ import annotations

from typing import Any

from botpress_py.events import IOEvent
from botpress_py.storage import (
    Completion,
    Storage,
)


def incoming(
    target: str = "user-1",
    dedupe: str | None = None,
    *,
    bot: str = "bot-a",
    channel: str = "messenger",
    text: str = "hi",
    created: int | None = None,
) -> IOEvent:
    event = IOEvent(
        type="text",
        channel=channel,
        direction="incoming",
        botId=bot,
        target=target,
        threadId="page-1",
        payload={"type": "text", "text": text},
        preview=text,
        dedupeKey=dedupe,
    )
    if created is not None:
        event.createdOn = created
    return event


def outgoing(target: str = "user-1", text: str = "hello", *, bot: str = "bot-a", created: int | None = None) -> IOEvent:
    event = incoming(target, bot=bot, text=text, created=created)
    event.direction = "outgoing"
    return event


class Clock:
    """A hand-moved clock, so the age-based tests never depend on the wall clock."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def counting(cls: type[Storage]) -> type[Any]:
    """The real backend class, counting the batch sizes it is handed (not a mock)."""

    class Counting(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.add_calls: list[int] = []
            self.complete_calls: list[int] = []

        async def inbox_add(self, events: list[IOEvent]) -> list[bool]:
            self.add_calls.append(len(events))
            return await super().inbox_add(events)

        async def inbox_complete(self, completions: list[Completion]) -> list[list[int]]:
            self.complete_calls.append(len(completions))
            return await super().inbox_complete(completions)

    return Counting


class InjectedFault(OSError):
    pass


def failing_while_broken(cls: type[Storage]) -> type[Any]:
    """The real backend whose every write fails like a broken disk would, until ``broken`` is cleared."""

    class FailingWhileBroken(cls):  # type: ignore[misc, valid-type]
        broken = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.add_calls: list[int] = []

        async def inbox_add(self, events: list[IOEvent]) -> list[bool]:
            self.add_calls.append(len(events))
            if self.broken:
                raise InjectedFault("disk I/O error (injected)")
            return await super().inbox_add(events)

        async def inbox_add_failed(self, event: IOEvent, error: str) -> bool:
            if self.broken:
                raise InjectedFault("disk I/O error (injected)")
            return await super().inbox_add_failed(event, error)

    return FailingWhileBroken


class InjectedRefusal(ValueError):
    pass


def refusing_once(cls: type[Storage]) -> type[Any]:
    """The real backend whose first ``inbox_add`` is refused as if for one of its values."""

    class RefusingOnce(counting(cls)):  # type: ignore[misc]
        refusals = 1

        async def inbox_add(self, events: list[IOEvent]) -> list[bool]:
            if self.refusals:
                self.refusals -= 1
                self.add_calls.append(len(events))
                raise InjectedRefusal("a value was refused (injected)")
            return await super().inbox_add(events)

    return RefusingOnce


async def pending_ids(storage: Storage) -> list[str]:
    return [event.id for _, event in await storage.inbox_pending()]
