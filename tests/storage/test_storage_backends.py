"""The storage contract (botpress_py/storage/base.py), run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from botpress_py.events import IOEvent
from botpress_py.storage import (
    STORED_AS_FAILED,
    Completion,
    GroupCommitCompletions,
    GroupCommitInbox,
    PostgresStorage,
    SentMark,
    SQLiteStorage,
    Storage,
    open_storage,
)
from botpress_py.storage.migrations import LATEST_VERSION, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Migration
from botpress_py.testing import wait_for

if TYPE_CHECKING:
    from conftest import Backend  # the fixture's type; conftest is not importable at run time


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


# -- migrations ---------------------------------------------------------------------------------


async def test_migrates_an_empty_database_to_the_latest_version(backend: Backend) -> None:
    assert "inbox" not in await backend.tables()
    storage = await backend.open()

    assert await storage.schema_version() == LATEST_VERSION
    assert {"schema_migrations", "kv", "users", "conversations", "messages", "inbox", "outbox"} <= (
        await backend.tables()
    )
    versions = [row[0] for row in await backend.query("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, LATEST_VERSION + 1))

    # Opening again (a restart) applies nothing and keeps the data.
    await storage.kv_set("ns", "k", {"v": 1})
    await storage.close()
    again = await backend.open()
    assert await again.schema_version() == LATEST_VERSION
    assert await again.kv_get("ns", "k") == {"v": 1}
    assert len(await backend.query("SELECT version FROM schema_migrations")) == LATEST_VERSION


def test_both_dialects_carry_the_same_migration_versions() -> None:
    assert [m.version for m in SQLITE_MIGRATIONS] == [m.version for m in POSTGRES_MIGRATIONS]
    assert [m.version for m in SQLITE_MIGRATIONS] == list(range(1, LATEST_VERSION + 1))


async def test_a_failed_migration_is_rolled_back_and_a_later_one_is_applied(backend: Backend) -> None:
    await (await backend.open()).close()
    base = backend.storage_class
    broken = Migration(
        LATEST_VERSION + 1,
        "creates a table, then fails",
        ("CREATE TABLE extra (x INTEGER)", "CREATE TABLE kv (oops INTEGER)"),
    )
    working = Migration(LATEST_VERSION + 1, "adds a table", ("CREATE TABLE extra (x INTEGER)",))
    Broken = type("Broken", (base,), {"migrations": (*base.migrations, broken)})
    Working = type("Working", (base,), {"migrations": (*base.migrations, working)})

    with pytest.raises(Exception, match="kv"):
        await backend.open(Broken)
    assert "extra" not in await backend.tables()  # the migration's first statement was undone too
    assert len(await backend.query("SELECT version FROM schema_migrations")) == LATEST_VERSION

    upgraded = await backend.open(Working)
    assert await upgraded.schema_version() == LATEST_VERSION + 1
    assert "extra" in await backend.tables()
    await upgraded.close()

    # Older code must refuse a database a newer version already migrated.
    with pytest.raises(RuntimeError, match=f"version {LATEST_VERSION + 1}"):
        await backend.open()


async def test_calls_before_open_fail_clearly_and_close_is_idempotent(backend: Backend) -> None:
    storage = backend.make()
    with pytest.raises(RuntimeError, match="not open"):
        await storage.kv_get("ns", "k")
    await storage.open()
    await storage.close()
    await storage.close()
    with pytest.raises(RuntimeError, match="not open"):
        await storage.inbox_pending()


async def test_a_write_cancelled_at_any_point_leaves_the_storage_usable(storage: Storage) -> None:
    # Cancelling between any two steps must neither leave a transaction open on the connection
    # nor half-apply the write (a webhook handler can be cancelled at any moment).
    for steps in range(10):
        events = [incoming(f"user-{steps}-{i}", f"mid.{steps}.{i}") for i in range(150)]
        task = asyncio.create_task(storage.inbox_add(events))
        for _ in range(steps):
            await asyncio.sleep(0)  # let the write run a few steps before cancelling it
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        await storage.kv_set("ns", "after", steps)
        assert await storage.kv_get("ns", "after") == steps
        stored = await storage.inbox_add(events)
        assert stored in ([True] * 150, [False] * 150), "half of a cancelled batch was stored"


# -- key-value ----------------------------------------------------------------------------------


async def test_kv_roundtrip_overwrite_delete_and_missing(backend: Backend, storage: Storage) -> None:
    assert await storage.kv_get("mod:bot:a", "missing") is None

    value = {"pageId": "123", "greeting": "héllo 👋", "nul": "a\x00b", "list": [1, 2.5, None, True]}
    await storage.kv_set("mod:bot:a", "profile", value)
    await storage.kv_set("mod:bot:b", "profile", ["other"])
    assert await storage.kv_get("mod:bot:a", "profile") == value
    assert await storage.kv_get("mod:bot:b", "profile") == ["other"]

    await storage.kv_set("mod:bot:a", "profile", "replaced")
    assert await storage.kv_get("mod:bot:a", "profile") == "replaced"

    await storage.kv_delete("mod:bot:a", "profile")
    await storage.kv_delete("mod:bot:a", "never-set")  # deleting nothing is not an error
    assert await storage.kv_get("mod:bot:a", "profile") is None
    assert await storage.kv_get("mod:bot:b", "profile") == ["other"]

    await storage.close()
    reopened = await backend.open()
    assert await reopened.kv_get("mod:bot:b", "profile") == ["other"]


async def test_kv_refuses_values_that_are_not_json(storage: Storage) -> None:
    with pytest.raises(TypeError):
        await storage.kv_set("ns", "k", {"when": object()})
    assert await storage.kv_get("ns", "k") is None


async def test_kv_set_many_writes_every_key_or_none(storage: Storage) -> None:
    await storage.kv_set("ns", "a", "old")
    await storage.kv_set_many("ns", {"a": 1, "b": [2], "c": {"d": 3}})
    assert [await storage.kv_get("ns", k) for k in "abc"] == [1, [2], {"d": 3}]
    assert await storage.kv_get("other", "a") is None  # only its own namespace

    # One value that is not JSON: nothing of the call is written, the old values stay.
    with pytest.raises(TypeError):
        await storage.kv_set_many("ns", {"a": "new", "e": object()})
    assert await storage.kv_get("ns", "a") == 1
    assert await storage.kv_get("ns", "e") is None
    await storage.kv_set_many("ns", {})  # nothing to do is not an error


# -- inbox --------------------------------------------------------------------------------------


async def test_inbox_dedupes_across_calls_and_within_one_call(storage: Storage) -> None:
    first = [incoming(dedupe="mid.1"), incoming(dedupe="mid.2"), incoming(dedupe=None)]
    assert await storage.inbox_add(first) == [True, True, True]

    again = [
        incoming(dedupe="mid.1"),  # redelivered
        incoming(dedupe="mid.3"),
        incoming(dedupe="mid.3"),  # twin within the call: first one wins
        incoming(dedupe=None),  # no key: never a duplicate
        incoming(dedupe="mid.1", bot="bot-b"),  # same key, other bot
        incoming(dedupe="mid.1", channel="web"),  # same key, other channel
        first[1],  # the very same event (same id) again
    ]
    assert await storage.inbox_add(again) == [False, True, False, True, True, True, False]
    assert await storage.inbox_add([]) == []

    stored = [e.id for e in [*first, again[1], again[3], again[4], again[5]]]
    assert await pending_ids(storage) == stored


async def test_inbox_pending_is_in_arrival_order_and_pages(storage: Storage) -> None:
    events = [incoming(f"user-{i % 3}", f"mid.{i}", text=f"m{i}") for i in range(250)]
    await storage.inbox_add(events[:120])
    await storage.inbox_add(events[120:])

    pending = await storage.inbox_pending()
    assert [e.id for _, e in pending] == [e.id for e in events]
    assert [seq for seq, _ in pending] == sorted(seq for seq, _ in pending)
    assert pending[7][1] == events[7]  # the whole event survives the roundtrip

    page1 = await storage.inbox_pending(limit=100)
    page2 = await storage.inbox_pending(limit=100, after_seq=page1[-1][0])
    assert [e.id for _, e in page1 + page2] == [e.id for e in events[:200]]


async def test_inbox_pending_of_one_bot_pages_in_order_and_counts_per_bot(storage: Storage) -> None:
    events = [incoming(f"user-{i % 2}", f"mid.b{i}", bot=("bot-a", "bot-b", "bot-c")[i % 3]) for i in range(30)]
    await storage.inbox_add(events)
    await storage.inbox_done([events[2].id])  # one of bot-c's is processed
    assert await storage.inbox_pending_counts() == {"bot-a": 10, "bot-b": 10, "bot-c": 9}

    first = await storage.inbox_pending(limit=4, bot_id="bot-b")
    rest = await storage.inbox_pending(limit=100, after_seq=first[-1][0], bot_id="bot-b")
    assert [e.id for _, e in first + rest] == [e.id for e in events if e.botId == "bot-b"]
    assert [e.id for _, e in await storage.inbox_pending(bot_id="bot-c")] == [
        e.id for e in events if e.botId == "bot-c" and e.id != events[2].id]
    assert await storage.inbox_pending(bot_id="nobody") == []
    await storage.inbox_done([e.id for e in events])
    assert await storage.inbox_pending_counts() == {}


async def test_inbox_done_removes_from_pending_and_keeps_status_and_dedupe(backend: Backend, storage: Storage) -> None:
    events = [incoming(dedupe=f"mid.{i}") for i in range(5)]
    await storage.inbox_add(events)

    await storage.inbox_done([events[0].id, events[1].id])
    await storage.inbox_done([events[2].id], status="dropped")
    await storage.inbox_done([events[3].id], status="error", error="bot crashed: KeyError")
    assert await pending_ids(storage) == [events[4].id]

    rows = await backend.query("SELECT event_id, status, error, processed_at FROM inbox ORDER BY seq")
    assert [(r[1], r[2]) for r in rows] == [
        ("done", None),
        ("done", None),
        ("dropped", None),
        ("error", "bot crashed: KeyError"),
        ("pending", None),
    ]
    assert all(r[3] is not None for r in rows[:4]) and rows[4][3] is None

    # A processed event is still a duplicate when redelivered.
    assert await storage.inbox_add([incoming(dedupe="mid.0")]) == [False]

    with pytest.raises(ValueError, match="status"):
        await storage.inbox_done([events[4].id], status="pending")
    assert await pending_ids(storage) == [events[4].id]


async def test_inbox_add_is_all_or_nothing(storage: Storage) -> None:
    # 150 events span several INSERT statements; the bad last one must undo the first ones too.
    events = [incoming(dedupe=f"mid.{i}") for i in range(150)]
    events[-1].botId = None  # type: ignore[assignment]
    with pytest.raises(Exception, match=r"(?i)null"):
        await storage.inbox_add(events)
    assert await storage.inbox_pending() == []
    # Nothing was stored, so nothing counts as a duplicate now.
    assert await storage.inbox_add(events[:3]) == [True, True, True]


async def test_seq_numbers_are_never_reused(storage: Storage) -> None:
    await storage.inbox_add([incoming("gone")])
    ((old_seq, _),) = await storage.inbox_pending()
    await storage.erase_user("bot-a", "messenger", "gone")  # deletes the newest row
    await storage.inbox_add([incoming("next")])
    ((new_seq, _),) = await storage.inbox_pending()
    assert new_seq > old_seq


# -- outbox -------------------------------------------------------------------------------------


async def test_outbox_add_pending_update_and_get(backend: Backend, storage: Storage) -> None:
    events = [outgoing(text=f"reply {i}") for i in range(3)]
    seqs = await storage.outbox_add(events)
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert await storage.outbox_add([]) == []

    pending = await storage.outbox_pending()
    assert [(r.seq, r.event) for r in pending] == list(zip(seqs, events, strict=True))
    assert all((r.status, r.attempts, r.next_attempt_at, r.error) == ("pending", 0, 0, None) for r in pending)

    # A transient failure: still pending, with its backoff.
    await storage.outbox_update(events[0].id, status="pending", attempts=1, next_attempt_at=5_000, error="HTTP 500")
    row = await storage.outbox_get(events[0].id)
    assert row is not None
    assert (row.status, row.attempts, row.next_attempt_at, row.error) == ("pending", 1, 5_000, "HTTP 500")
    assert (await storage.outbox_pending())[0].next_attempt_at == 5_000

    await storage.outbox_update(events[0].id, status="sent", attempts=2, channel_message_id="m_abc")
    await storage.outbox_update(events[1].id, status="failed", attempts=1, error="user unavailable (551)")
    assert [r.event.id for r in await storage.outbox_pending()] == [events[2].id]
    sent = await storage.outbox_get(events[0].id)
    failed = await storage.outbox_get(events[1].id)
    assert sent is not None and (sent.status, sent.attempts, sent.error) == ("sent", 2, None)
    assert failed is not None and (failed.status, failed.error) == ("failed", "user unavailable (551)")
    assert await backend.query(f"SELECT channel_message_id FROM outbox WHERE event_id = '{events[0].id}'") == [
        ("m_abc",)
    ]

    assert await storage.outbox_get("no-such-event") is None
    with pytest.raises(ValueError, match="status"):
        await storage.outbox_update(events[2].id, status="delivered", attempts=1)  # type: ignore[arg-type]
    # Updating an erased event is quietly nothing (the dispatcher may race an erase).
    await storage.outbox_update("no-such-event", status="sent", attempts=1)


async def test_outbox_sent_many_marks_sent_keeps_masked_forms_and_records_history(
        backend: Backend, storage: Storage) -> None:
    events = [outgoing(text=f"reply {i}", created=1_000 + i) for i in range(3)]
    await storage.outbox_add(events)
    masked = IOEvent.from_dict({**events[1].to_dict(), "payload": {"type": "text", "text": "***"}, "preview": "***"})
    await storage.outbox_sent_many([SentMark(events[0], 1, "m.0", events[0]), SentMark(events[1], 2, None, masked)])
    assert [r.event.id for r in await storage.outbox_pending()] == [events[2].id]
    first, second = await storage.outbox_get(events[0].id), await storage.outbox_get(events[1].id)
    assert first is not None and (first.status, first.attempts, first.event) == ("sent", 1, events[0])
    assert second is not None and second.status == "sent" and second.event.payload["text"] == "***"
    history = await storage.messages_for("bot-a", "messenger", "user-1")
    assert [(m["id"], m["channelMessageId"], m["payload"]["text"]) for m in history] == [
        (events[0].id, "m.0", "reply 0"), (events[1].id, None, "***")]
    assert await storage.conversation_last_event("bot-a", "messenger", "page-1", "user-1") == 1_001
    assert await storage.outbox_sent_many([]) == []

    # One mark that cannot be stored: none of the call is (the event stays pending, to be sent again).
    broken = IOEvent.from_dict({**events[2].to_dict(), "payload": {"type": "text", "text": object()}})
    with pytest.raises(TypeError):
        await storage.outbox_sent_many([SentMark(events[2], 1, "m.2", events[2]), SentMark(events[2], 1, None, broken)])
    assert [r.event.id for r in await storage.outbox_pending()] == [events[2].id]
    assert len(await storage.messages_for("bot-a", "messenger", "user-1")) == 2


async def test_incoming_context_reads_conversation_user_and_contact_at_once(storage: Storage) -> None:
    empty = await storage.incoming_context("bot-a", "messenger", "page-1", "u1")
    assert (empty.last_event_at, empty.user, empty.contact) == (None, None, (None, []))
    await storage.message_record(incoming("u1", created=7_000))
    await storage.user_upsert("bot-a", "messenger", "u1", {"first_name": "Ada"})
    contact = await storage.contact_link([("bot-a", "messenger", "u1"), ("bot-b", "messenger", "u9")])
    known = await storage.incoming_context("bot-a", "messenger", "page-1", "u1")
    assert known.last_event_at == 7_000
    assert known.user == await storage.user_get("bot-a", "messenger", "u1")
    assert known.user is not None and known.user["profile"] == {"first_name": "Ada"}
    assert known.contact == await storage.contact_of("bot-a", "messenger", "u1")
    assert known.contact[0] == contact
    # another thread of the same user is another conversation
    assert (await storage.incoming_context("bot-a", "messenger", "page-2", "u1")).last_event_at is None


async def test_outbox_seq_follows_the_order_given(storage: Storage) -> None:
    events = [outgoing(text=f"part {i}") for i in range(230)]
    seqs = await storage.outbox_add(events)
    assert seqs == sorted(seqs)
    assert [r.event.id for r in await storage.outbox_pending()] == [e.id for e in events]


# -- users, conversations, messages -----------------------------------------------------------------


async def test_user_upsert_and_get(backend: Backend) -> None:
    clock = Clock(1_000)
    storage = await backend.open(clock=clock)
    assert await storage.user_get("bot-a", "messenger", "u1") is None

    await storage.user_upsert("bot-a", "messenger", "u1", None)
    assert await storage.user_get("bot-a", "messenger", "u1") == {
        "id": "u1",
        "channel": "messenger",
        "botId": "bot-a",
        "profile": None,
        "createdOn": 1_000,
        "updatedOn": 1_000,
    }

    clock.now = 2_000
    await storage.user_upsert("bot-a", "messenger", "u1", {"first_name": "Ada", "locale": "fr_FR"})
    clock.now = 3_000
    await storage.user_upsert("bot-a", "messenger", "u1", None)  # None keeps the profile
    user = await storage.user_get("bot-a", "messenger", "u1")
    assert user is not None
    assert user["profile"] == {"first_name": "Ada", "locale": "fr_FR"}
    assert (user["createdOn"], user["updatedOn"]) == (1_000, 3_000)

    assert await storage.user_get("bot-a", "web", "u1") is None
    assert await storage.user_get("bot-b", "messenger", "u1") is None


async def test_messages_are_recorded_in_order_with_conversations(backend: Backend, storage: Storage) -> None:
    history = [
        incoming(text="hi", created=10),
        outgoing(text="hello!", created=11),
        incoming(text="odd \x00 text \ud800", created=12),  # NUL and a lone surrogate, as json.loads gives
        outgoing(text="bye", created=13),
    ]
    for event in history:
        await storage.message_record(event, channel_message_id="m_out" if event.direction == "outgoing" else None)
    await storage.message_record(incoming("someone-else", created=14))

    messages = await storage.messages_for("bot-a", "messenger", "user-1")
    assert [m["id"] for m in messages] == [e.id for e in history]
    assert [m["channelMessageId"] for m in messages] == [None, "m_out", None, "m_out"]
    assert messages[2]["payload"] == {"type": "text", "text": "odd \x00 text \ud800"}

    # limit gives the newest messages, still oldest first.
    assert [m["id"] for m in await storage.messages_for("bot-a", "messenger", "user-1", limit=2)] == [
        history[2].id,
        history[3].id,
    ]

    # Recording an event again (a replay) adds nothing but may fill in the channel's message id.
    await storage.message_record(history[0], channel_message_id="m_in")
    again = await storage.messages_for("bot-a", "messenger", "user-1")
    assert len(again) == 4 and again[0]["channelMessageId"] == "m_in"

    conversations = await backend.query(
        "SELECT user_id, thread_id, created_at, last_event_at FROM conversations ORDER BY user_id"
    )
    assert conversations == [("someone-else", "page-1", 14, 14), ("user-1", "page-1", 10, 13)]


async def test_erase_user_removes_that_user_only(backend: Backend, storage: Storage,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite scans its queues in slices of seq (no per-user index there): make them tiny, so the
    # rows of one user spread over many slices.
    monkeypatch.setattr("botpress_py.storage.sqlite_maintenance._ERASE_SLICE", 2)

    async def populate(user: str, bot: str = "bot-a") -> None:
        await storage.user_upsert(bot, "messenger", user, {"name": user})
        received = [incoming(user, bot=bot, dedupe=f"{bot}.{user}.{i}") for i in range(3)]
        await storage.inbox_add(received)
        await storage.inbox_done([received[0].id])
        await storage.outbox_add([outgoing(user, bot=bot), outgoing(user, bot=bot)])
        for event in received:
            await storage.message_record(event)
        await storage.message_record(outgoing(user, bot=bot))

    await populate("erase-me")
    await populate("keep-me")
    await populate("erase-me", bot="bot-b")  # same user id under another bot: not the same person

    counts = await storage.erase_user("bot-a", "messenger", "erase-me")
    assert counts == {"users": 1, "conversations": 1, "messages": 4, "inbox": 3, "outbox": 2, "contacts": 0,
                      "media": 0}

    assert await storage.user_get("bot-a", "messenger", "erase-me") is None
    assert await storage.messages_for("bot-a", "messenger", "erase-me") == []
    remaining = {(e.botId, e.target) for _, e in await storage.inbox_pending()}
    assert remaining == {("bot-a", "keep-me"), ("bot-b", "erase-me")}
    assert {(r.event.botId, r.event.target) for r in await storage.outbox_pending()} == remaining
    assert len(await storage.messages_for("bot-a", "messenger", "keep-me")) == 4
    assert await storage.user_get("bot-b", "messenger", "erase-me") is not None
    assert await backend.query("SELECT count(*) FROM conversations") == [(2,)]

    # Erasing again finds nothing.
    assert set((await storage.erase_user("bot-a", "messenger", "erase-me")).values()) == {0}


async def test_purge_deletes_old_finished_rows_and_keeps_recent_and_pending(backend: Backend) -> None:
    clock = Clock(1_000)
    storage = await backend.open(clock=clock)
    old_done, old_pending, new_done = incoming(dedupe="a"), incoming(dedupe="b"), incoming(dedupe="c")
    old_sent, old_waiting, new_failed = outgoing(), outgoing(), outgoing()
    await storage.inbox_add([old_done, old_pending, new_done])
    await storage.outbox_add([old_sent, old_waiting, new_failed])
    await storage.inbox_done([old_done.id])
    await storage.outbox_update(old_sent.id, status="sent", attempts=1)
    await storage.message_record(incoming(text="old", created=500))
    await storage.message_record(incoming(text="new", created=5_000))

    clock.now = 9_000  # these finish after the cut-off
    await storage.inbox_done([new_done.id], status="error", error="x")
    await storage.outbox_update(new_failed.id, status="failed", attempts=3, error="gave up")

    counts = await storage.purge(processed_before=5_000, messages_before=1_000)
    assert counts == {"inbox": 1, "outbox": 1, "messages": 1}

    assert [r[0] for r in await backend.query("SELECT event_id FROM inbox ORDER BY seq")] == [
        old_pending.id,
        new_done.id,
    ]
    assert await pending_ids(storage) == [old_pending.id]
    assert [r.event.id for r in await storage.outbox_pending()] == [old_waiting.id]
    assert await storage.outbox_get(old_sent.id) is None
    assert await storage.outbox_get(new_failed.id) is not None
    assert [m["preview"] for m in await storage.messages_for("bot-a", "messenger", "user-1")] == ["new"]
    # The kept processed row still dedupes; the purged one's key is free again.
    assert await storage.inbox_add([incoming(dedupe="c"), incoming(dedupe="a")]) == [False, True]


# -- the event loop stays free ------------------------------------------------------------------------


async def test_a_slow_query_does_not_block_the_event_loop(backend: Backend, storage: Storage) -> None:
    # Reaches into the backend's own query helper: the point is that *its* path runs off the loop.
    if isinstance(storage, SQLiteStorage):
        slow = storage._fetchall(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) SELECT count(*) FROM c"
        )
    else:
        assert isinstance(storage, PostgresStorage)
        slow = storage._fetch("SELECT pg_sleep(0.3)")
    started = time.monotonic()
    query = asyncio.create_task(slow)
    ticks = 0
    while not query.done():
        ticks += 1
        await asyncio.sleep(0.001)
    await query
    elapsed = time.monotonic() - started
    assert elapsed > 0.05, "the query was too fast to tell anything"
    # A blocked loop would get at most one tick in before the query finished.
    assert ticks >= 10


# -- group commit ---------------------------------------------------------------------------------------


async def test_group_commit_merges_concurrent_adds_into_one_transaction(backend: Backend) -> None:
    storage = await backend.open(counting(backend.storage_class))
    assert await storage.inbox_add([incoming(dedupe="k3")]) == [True]
    storage.add_calls.clear()
    inbox = GroupCommitInbox(storage, window_ms=1.0)

    # Callers 25..49 repeat the keys of callers 0..24; k3 was stored before.
    batches = [[incoming(f"user-{i}", f"k{i % 25}"), incoming(f"user-{i}")] for i in range(50)]
    results = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches)), 10)

    assert storage.add_calls == [100]
    assert results == [[i < 25 and i != 3, True] for i in range(50)]
    assert len(await storage.inbox_pending()) == 1 + 24 + 50
    await inbox.close()


async def test_group_commit_respects_max_batch(backend: Backend) -> None:
    storage = await backend.open(counting(backend.storage_class))
    inbox = GroupCommitInbox(storage, window_ms=1.0, max_batch=10)

    results = await asyncio.wait_for(asyncio.gather(*(inbox.add([incoming(f"u{i}")]) for i in range(50))), 10)
    assert results == [[True]] * 50
    assert storage.add_calls == [10] * 5

    # One caller bigger than max_batch still goes in one piece.
    storage.add_calls.clear()
    assert await inbox.add([incoming(f"v{i}") for i in range(25)]) == [True] * 25
    assert storage.add_calls == [25]
    await inbox.close()
    with pytest.raises(ValueError):
        GroupCommitInbox(storage, max_batch=0)


async def test_group_commit_retries_a_failed_transaction_in_halves(backend: Backend) -> None:
    storage = await backend.open(refusing_once(backend.storage_class))
    inbox = GroupCommitInbox(storage, window_ms=1.0)
    batches = [[incoming(f"user-{i}", f"mid.{i}")] for i in range(20)]

    # The shared transaction fails once, for a reason that might be one of its events: its
    # halves are committed instead, and they go in.
    results = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches)), 10)
    assert results == [[True]] * 20
    assert storage.add_calls == [20, 10, 10]
    assert len(await storage.inbox_pending()) == 20
    await inbox.close()


async def test_group_commit_gives_a_storage_failure_to_every_waiter_at_once(backend: Backend) -> None:
    storage = await backend.open(failing_while_broken(backend.storage_class))
    inbox = GroupCommitInbox(storage, window_ms=1.0)
    batches = [[incoming(f"user-{i}", f"mid.{i}")] for i in range(20)]

    results = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches), return_exceptions=True), 10)
    assert all(isinstance(r, InjectedFault) for r in results), results
    # A broken disk says nothing about the events: not split (that would fail 39 times), not kept.
    assert storage.add_calls == [20]
    assert await storage.inbox_pending() == []
    assert await backend.query("SELECT count(*) FROM inbox") == [(0,)]  # not even as failed events

    # The committer carries on: once the disk is back, the redelivery is stored, and as new events.
    storage.broken = False
    retried = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches)), 10)
    assert retried == [[True]] * 20
    assert len(await storage.inbox_pending()) == 20
    await inbox.close()


async def test_group_commit_fails_only_the_event_the_database_refuses(backend: Backend, storage: Storage) -> None:
    inbox = GroupCommitInbox(storage, window_ms=1.0)
    poison = incoming("bad", "mid.bad")
    poison.target = None  # type: ignore[assignment]  # violates NOT NULL inside the transaction
    batches = [[incoming(f"user-{i}", f"mid.{i}")] for i in range(5)] + [[poison]]

    results = await asyncio.wait_for(asyncio.gather(*(inbox.add(b) for b in batches), return_exceptions=True), 10)
    # The others are stored; the poison, sanitised, is kept as a failed event for an operator.
    assert results == [[True]] * 5 + [[STORED_AS_FAILED]]
    assert len(await storage.inbox_pending()) == 5
    [failed] = await storage.failed_events("incoming")
    assert failed.event.id == poison.id and failed.event.target == "unknown"
    assert failed.error is not None and failed.error.startswith("could not be stored as received")
    # Its redelivery is recognised (same dedupe key) and not stored twice.
    again = incoming("bad", "mid.bad")
    again.target = None  # type: ignore[assignment]
    assert await inbox.add([again]) == [False]
    assert await backend.query("SELECT count(*) FROM inbox WHERE status = 'failed'") == [(1,)]
    await inbox.close()


async def test_group_commit_close_flushes_waiting_callers(storage: Storage) -> None:
    inbox = GroupCommitInbox(storage, window_ms=60_000)  # only close() can make this commit in time
    adds = [asyncio.create_task(inbox.add([incoming(f"user-{i}")])) for i in range(5)]
    await asyncio.sleep(0)  # let the tasks queue their events
    await asyncio.wait_for(inbox.close(), 5)

    assert [task.result() for task in adds] == [[True]] * 5
    assert len(await storage.inbox_pending()) == 5
    with pytest.raises(RuntimeError, match="closed"):
        await inbox.add([incoming()])


async def test_inbox_complete_marks_and_stores_replies_in_one_transaction(backend: Backend, storage: Storage) -> None:
    events = [incoming(dedupe=f"mid.{i}") for i in range(3)]
    await storage.inbox_add(events)
    replies = [outgoing(text="a"), outgoing(text="b")]
    seqs = await storage.inbox_complete([
        Completion(events[0].id, "done", None, replies),
        Completion(events[1].id, "error", "bot crashed", []),
    ])
    assert [len(s) for s in seqs] == [2, 0] and seqs[0][0] < seqs[0][1]
    assert await pending_ids(storage) == [events[2].id]
    assert [r.event.payload["text"] for r in await storage.outbox_pending()] == ["a", "b"]
    rows = await backend.query("SELECT status, error FROM inbox ORDER BY seq")
    assert [tuple(r) for r in rows] == [("done", None), ("error", "bot crashed"), ("pending", None)]


async def test_inbox_complete_is_all_or_nothing(storage: Storage) -> None:
    event = incoming(dedupe="mid.x")
    await storage.inbox_add([event])
    first = outgoing(text="first")
    await storage.outbox_add([first])
    clash = outgoing(text="same id as an existing outbox row")
    clash.id = first.id  # the unique event_id makes the insert fail inside the transaction
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own integrity error
        await storage.inbox_complete([Completion(event.id, "done", None, [outgoing(text="ok"), clash])])
    assert await pending_ids(storage) == [event.id]  # not marked: it will replay
    assert [r.event.payload["text"] for r in await storage.outbox_pending()] == ["first"]
    with pytest.raises(ValueError, match="status"):
        await storage.inbox_complete([Completion(event.id, "pending")])


async def test_group_commit_completions_merge_concurrent_workers(backend: Backend) -> None:
    storage = await backend.open(counting(backend.storage_class))
    events = [incoming(dedupe=f"mid.{i}") for i in range(30)]
    await storage.inbox_add(events)
    committer = GroupCommitCompletions(storage, window_ms=1.0)
    results = await asyncio.gather(*(
        committer.add([Completion(e.id, "done", None, [outgoing(text=f"r{i}")])]) for i, e in enumerate(events)))
    assert all(len(r) == 1 and len(r[0]) == 1 for r in results)
    assert len(storage.complete_calls) < 10  # 30 workers, a handful of transactions
    assert await pending_ids(storage) == []
    await committer.close()


async def test_error_reasons_quoting_user_text_are_stored(backend: Backend, storage: Storage) -> None:
    received, sent = incoming(), outgoing()
    await storage.inbox_add([received])
    await storage.outbox_add([sent])
    reason = "could not parse 'a\x00b \ud800'"
    await storage.inbox_done([received.id], status="error", error=reason)
    await storage.outbox_update(sent.id, status="failed", attempts=1, error=reason)

    assert await storage.inbox_pending() == []
    (stored_reason,) = await backend.query("SELECT error FROM inbox")
    assert stored_reason[0].startswith("could not parse 'ab ")
    row = await storage.outbox_get(sent.id)
    assert row is not None and row.status == "failed" and row.error == stored_reason[0]


async def test_group_commit_stores_the_events_of_a_caller_that_gave_up(storage: Storage) -> None:
    inbox = GroupCommitInbox(storage, window_ms=60_000)
    adds = [asyncio.create_task(inbox.add([incoming(f"user-{i}", f"mid.{i}")])) for i in range(3)]
    await asyncio.sleep(0)  # let the tasks queue their events
    adds[1].cancel()
    await inbox.close()

    assert adds[0].result() == [True] and adds[2].result() == [True]
    assert adds[1].cancelled()
    # Already stored: the channel's redelivery of the abandoned request is a duplicate.
    assert len(await storage.inbox_pending()) == 3
    assert await storage.inbox_add([incoming("user-1", "mid.1")]) == [False]


# -- choosing a backend -------------------------------------------------------------------------------


def test_open_storage_defaults_to_sqlite_under_data(tmp_path: Path) -> None:
    for env in ({}, {"DATABASE_URL": ""}, {"DATABASE_URL": "  "}):
        storage = open_storage(tmp_path / "data", env)
        assert isinstance(storage, SQLiteStorage)
        assert storage.path == tmp_path / "data" / "storage" / "core.sqlite"
        assert storage.path.parent.is_dir()


def test_open_storage_picks_postgres_from_database_url(tmp_path: Path) -> None:
    for url in ("postgres://bp:secret@db/bp", "postgresql://bp:secret@db/bp", "PostgreSQL://db/bp"):
        storage = open_storage(tmp_path, {"DATABASE_URL": url})
        assert isinstance(storage, PostgresStorage) and storage.schema is None
        assert "secret" not in repr(storage)
    storage = open_storage(tmp_path, {"DATABASE_URL": "postgresql://db/bp", "BP_DATABASE_SCHEMA": "tenant_1"})
    assert isinstance(storage, PostgresStorage) and storage.schema == "tenant_1"
    assert not (tmp_path / "storage").exists()


@pytest.mark.parametrize(
    "url",
    ["mysql://bp:hunter2@db/bp", "sqlite:///tmp/hunter2.db", "hunter2@db:5432/bp", "postgresql+asyncpg://hunter2@db"],
)
def test_open_storage_refuses_other_urls_without_echoing_them(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="postgresql://") as raised:
        open_storage(tmp_path, {"DATABASE_URL": url})
    assert "hunter2" not in str(raised.value)
    assert "not supported" in str(raised.value)


async def test_contacts_link_merge_lookup_and_erase(backend: Backend) -> None:
    # A hand-moved clock: "older" is by created_at, and two links in the same millisecond tie.
    clock = Clock()
    storage = await backend.open(clock=clock)
    assert await storage.contact_of("bot-a", "messenger", "psid-1") == (None, [])
    first = await storage.contact_link([("bot-a", "messenger", "psid-1"), ("bot-b", "messenger", "psid-9")])
    contact, members = await storage.contact_of("bot-b", "messenger", "psid-9")
    assert contact == first and set(members) == {("bot-a", "messenger", "psid-1"), ("bot-b", "messenger", "psid-9")}
    clock.now += 1
    other = await storage.contact_link([("bot-c", "messenger", "psid-5")])
    assert other != first
    # linking a member of each merges the two contacts into the older one
    merged = await storage.contact_link([("bot-c", "messenger", "psid-5"), ("bot-a", "messenger", "psid-1")])
    assert merged == first
    assert len((await storage.contact_of("bot-c", "messenger", "psid-5"))[1]) == 3
    counts = await storage.erase_user("bot-a", "messenger", "psid-1")
    assert counts["contacts"] == 1
    assert len((await storage.contact_of("bot-b", "messenger", "psid-9"))[1]) == 2
    with pytest.raises(ValueError):
        await storage.contact_link([])


async def test_conversation_last_event_and_redaction(backend: Backend, storage: Storage) -> None:
    event = incoming(dedupe="mid.r", text="my card number is 4111", created=5_000)
    assert await storage.conversation_last_event("bot-a", "messenger", event.threadId, "user-1") is None
    await storage.inbox_add([event])
    await storage.message_record(event)
    assert await storage.conversation_last_event("bot-a", "messenger", event.threadId, "user-1") == 5_000
    masked = IOEvent.from_dict({**event.to_dict(), "payload": {"text": "***"}, "preview": "***"})
    await storage.inbox_complete([Completion(event.id, "done", None, [], redacted=masked)])
    reply = outgoing(text="your card 4111 is noted")
    await storage.outbox_add([reply])
    await storage.outbox_redact(IOEvent.from_dict({**reply.to_dict(), "payload": {"type": "text", "text": "***"},
                                                   "preview": "***"}))
    for table in ("inbox", "outbox"):
        rows = await backend.query(f"SELECT event FROM {table}")
        assert all("4111" not in r[0] for r in rows), table


def test_sqlite_writer_runs_urgent_work_before_queued_work() -> None:
    """Inbox commits (acks) overtake queued processing writes on the SQLite writer thread."""
    import threading

    from botpress_py.storage.sqlite_threads import NORMAL, URGENT, DatabaseThread

    writer = DatabaseThread("test-writer")
    gate = threading.Event()
    order: list[str] = []
    try:
        first = writer.submit(NORMAL, lambda: gate.wait(5))  # occupies the thread
        queued = [writer.submit(NORMAL, lambda i=i: order.append(f"normal {i}")) for i in range(3)]
        urgent = writer.submit(URGENT, lambda: order.append("urgent"))
        gate.set()
        for future in [first, *queued, urgent]:
            future.result(timeout=5)
        assert order == ["urgent", "normal 0", "normal 1", "normal 2"]
        cancelled = writer.submit(NORMAL, lambda: order.append("never"))
        assert cancelled.cancel() or cancelled.done()
    finally:
        writer.shutdown()


async def test_sqlite_thread_call_settles_the_loops_future_and_skips_work_given_up_before_it_started() -> None:
    """The hot path's hand-off (``call``): results and errors reach the awaiting coroutine; a call
    cancelled while it waits in the queue never runs (nothing written), one already running finishes."""
    import threading

    from botpress_py.storage.sqlite_threads import NORMAL, URGENT, DatabaseThread

    thread = DatabaseThread("test-thread")
    gate = threading.Event()
    ran: list[str] = []
    try:
        busy = thread.call(NORMAL, lambda: gate.wait(5))  # occupies the thread
        given_up = thread.call(NORMAL, lambda: ran.append("given up"))
        urgent = thread.call(URGENT, lambda: ran.append("urgent") or 42)
        given_up.cancel()
        gate.set()
        assert await busy is True and await urgent == 42

        def fails() -> None:
            raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await thread.call(NORMAL, fails)
        results = await asyncio.gather(*(thread.call(NORMAL, lambda i=i: i * 2) for i in range(50)))
        assert results == [i * 2 for i in range(50)]
        assert ran == ["urgent"]
    finally:
        await asyncio.get_running_loop().run_in_executor(None, thread.shutdown)


async def test_sqlite_write_never_hands_a_cursor_to_the_event_loop(tmp_path: Path) -> None:
    """A cursor dropped on the loop's thread resets its cached statement while the writer thread may be
    running that same statement: SQLite then fails the write with "bad parameter or other API misuse"
    (seen under load as a failed on_bot_mount). Write bodies that return a cursor get None, closed."""
    storage = SQLiteStorage(tmp_path / "core.sqlite")
    await storage.open()
    try:
        handed = await storage._write(lambda db: db.execute("INSERT INTO kv VALUES ('ns', 'k', '1', 0)"))
        assert handed is None
        # the same cached statement, many times over, with the loop collecting garbage meanwhile
        await asyncio.gather(*(storage.kv_set("ns", f"k{i}", i) for i in range(200)))
        assert [await storage.kv_get("ns", f"k{i}") for i in (0, 199)] == [0, 199]
    finally:
        await storage.close()


async def test_sqlite_never_runs_a_statement_on_the_event_loops_thread(tmp_path: Path) -> None:
    """A stalled disk stalls whichever thread is inside SQLite: never the loop's (the hot path included)."""
    import threading

    storage = SQLiteStorage(tmp_path / "core.sqlite")
    await storage.open()
    threads: set[int] = set()
    try:
        for db in (storage._writer_db, storage._reader_db):
            assert db is not None
            db.set_trace_callback(lambda _sql: threads.add(threading.get_ident()))
        event = incoming(dedupe="m.1")
        await storage.inbox_add([event])
        await storage.incoming_context("bot-a", "messenger", "page-1", "user-1")
        await storage.inbox_complete([Completion(event.id, "done", None, [outgoing()], message=event)])
        [row] = await storage.outbox_pending()
        await storage.outbox_sent_many([SentMark(row.event, 1, "m.2", row.event)])
        await storage.kv_set("ns", "k", {"v": 1})
        assert await storage.kv_get("ns", "k") == {"v": 1}
        await storage.user_upsert("bot-a", "messenger", "user-1", {"first_name": "Ann"})
        await storage.erase_user("bot-a", "messenger", "user-1")
        assert threads, "the trace callbacks saw the statements"
        assert threading.get_ident() not in threads
    finally:
        await storage.close()


async def test_sqlite_write_waits_for_another_process_on_the_writer_thread(tmp_path: Path) -> None:
    """Another process holding the write lock: the write waits on the writer thread, while the event
    loop keeps running, and goes through once the lock is released."""
    import sqlite3

    storage = SQLiteStorage(tmp_path / "core.sqlite")
    await storage.open()
    other = sqlite3.connect(tmp_path / "core.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell in a write transaction
        started = asyncio.get_running_loop().time()
        write = asyncio.create_task(storage.inbox_add([incoming(dedupe="while.locked")]))
        for _ in range(3):
            await asyncio.sleep(0)  # the loop turns: the write did not block it
        assert not write.done()
        assert asyncio.get_running_loop().time() - started < 0.5
        other.execute("COMMIT")
        assert await asyncio.wait_for(write, 10) == [True]
        assert [e.dedupeKey for _, e in await storage.inbox_pending()] == ["while.locked"]
    finally:
        other.close()
        await storage.close()


async def test_sqlite_checkpoints_copy_the_wal_into_the_database_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "core.sqlite"
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        size_before = path.stat().st_size
        for batch in range(20):  # ~2 MB of events, in small transactions
            await storage.inbox_add([incoming(dedupe=f"c.{batch}.{i}", text="x" * 1000) for i in range(90)])
        # automatic checkpoints are off: the data sits in the WAL until the checkpoint thread runs
        await wait_for(lambda: path.stat().st_size > size_before + 1_000_000, 10)
    finally:
        await storage.close()
