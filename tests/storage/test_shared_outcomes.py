"""Completions and sent marks ready at the same moment share a transaction (GroupCommitOutcomes): both backends.

A batch mixing both kinds still never shares a failure: a poison completion and a poison sent
mark each fail alone, the rest of the batch is recorded once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from botpress_py.storage import Completion, GroupCommitOutcomes, SentMark, SQLiteStorage, Storage

from .backend_kit import incoming, outgoing, pending_ids


async def test_a_poison_completion_and_a_poison_sent_mark_in_one_batch_each_fail_alone(storage: Storage) -> None:
    events = [incoming(f"user-{i}", f"mid.{i}") for i in range(20)]
    await storage.inbox_add(events)
    replies = [outgoing(f"user-{i}", f"earlier {i}") for i in range(10)]
    await storage.outbox_add(replies)
    poison_history = incoming("user-7", created=10**30)  # too big for a 64-bit column
    odd = replies[3].copy()
    odd.flags["receipt"] = {1, 2}  # not JSON: its history entry cannot be written
    completions = [Completion(e.id, "done", None, [outgoing(f"user-{i}", f"r{i}")],
                              message=poison_history if i == 7 else e) for i, e in enumerate(events)]
    marks = [SentMark(r, 1, f"m{i}", odd if i == 3 else r) for i, r in enumerate(replies)]
    outcomes = GroupCommitOutcomes(storage)
    # Interleaved, as conversations finish processing and delivery at the same moment.
    items: list[Completion | SentMark] = [x for pair in zip(completions[:10], marks, strict=True) for x in pair]
    items += completions[10:]
    results = await asyncio.gather(*(outcomes.add([item]) for item in items), return_exceptions=True)
    by_item = dict(zip(map(id, items), results, strict=True))

    assert isinstance(by_item[id(completions[7])], Exception)
    assert isinstance(by_item[id(marks[3])], TypeError)
    for i, completion in enumerate(completions):
        if i != 7:
            [seqs] = by_item[id(completion)]
            assert len(seqs) == 1, (i, seqs)
    assert all(by_item[id(m)] == [None] for i, m in enumerate(marks) if i != 3)
    assert await pending_ids(storage) == [events[7].id]  # still pending: the pipeline retries it
    pending = {r.event.payload["text"] for r in await storage.outbox_pending()}
    assert pending == {f"r{i}" for i in range(20) if i != 7} | {"earlier 3"}  # each reply stored once
    history = await storage.messages_for("bot-a", "messenger", "user-5")
    sent_history = [m for m in history if m["direction"] == "outgoing"]
    assert [m["channelMessageId"] for m in sent_history] == ["m5"]
    await outcomes.close()


async def test_a_batch_of_only_one_kind_is_recorded_like_the_separate_calls(storage: Storage) -> None:
    replies = [outgoing(f"user-{i}", f"r{i}") for i in range(4)]
    await storage.outbox_add(replies)
    outcomes = GroupCommitOutcomes(storage)
    results = await asyncio.gather(*(outcomes.add([SentMark(r, 1, f"m{i}", r)]) for i, r in enumerate(replies)))
    assert results == [[None]] * 4
    assert await storage.outbox_pending() == []
    await outcomes.close()


class CountingWrites(SQLiteStorage):
    """The real SQLite backend, counting its write transactions (not a mock)."""

    writes = 0

    async def _write(self, body: Any, priority: int = 1) -> Any:
        self.writes += 1
        return await super()._write(body, priority)


async def test_sqlite_records_completions_and_sent_marks_ready_together_in_one_transaction(tmp_path: Path) -> None:
    storage = CountingWrites(tmp_path / "core.sqlite")
    await storage.open()
    try:
        user_message = incoming("user-1", "mid.2", text="second question")
        await storage.inbox_add([user_message])
        [reply_seq] = await storage.outbox_add([reply := outgoing("user-1", "first answer")])
        outcomes = GroupCommitOutcomes(storage)
        storage.writes = 0
        # The reply to the first message is delivered while the second message finishes processing.
        done, sent = await asyncio.gather(
            outcomes.add([Completion(user_message.id, "done", None, [outgoing("user-1", "second answer")],
                                     message=user_message)]),
            outcomes.add([SentMark(reply, 1, "m.1", reply)]))
        assert storage.writes == 1
        assert sent == [None] and len(done[0]) == 1 and done[0][0] > reply_seq
        # The delivered reply comes first in history, then the message that was processed meanwhile.
        history = await storage.messages_for("bot-a", "messenger", "user-1")
        assert [m["preview"] for m in history] == ["first answer", "second question"]
        await outcomes.close()
    finally:
        await storage.close()
