"""The storage contract (botpress_py/storage/base.py), run against SQLite and PostgreSQL alike: migrations, key-value,
inbox, outbox, users, conversations and messages."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest

from botpress_py.events import IOEvent
from botpress_py.storage import (
    SentMark,
    Storage,
)
from botpress_py.storage.migrations import LATEST_VERSION, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Migration

from .backend_kit import Clock, incoming, outgoing, pending_ids

if TYPE_CHECKING:
    from conftest import Backend  # the fixture's type; conftest is not importable at run time


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
