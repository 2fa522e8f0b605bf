"""The webhook's bounded wait for its commit: one timer for every wait (AckDeadlines), and
GroupCommit.submit, the task-free way the pipeline hands a webhook's events to the group commit."""

from __future__ import annotations

import asyncio

from botpress_py.storage import GroupCommit, StorageUnavailable
from botpress_py.storage.bounded import AckDeadlines
from botpress_py.testing import wait_for

BOUND = 0.05  # seconds: short, so that the waits left pending expire within the test


async def test_waits_past_the_bound_fail_with_storage_unavailable_and_the_others_keep_their_result() -> None:
    deadlines = AckDeadlines()
    loop = asyncio.get_running_loop()
    acks = [loop.create_future() for _ in range(300)]
    for ack in acks:
        deadlines.bound(ack, BOUND)
    landed = [i for i in range(300) if i % 3]  # every third commit stalls
    for i in landed:
        acks[i].set_result(i)
    deadlines.landed()

    await wait_for(lambda: all(ack.done() for ack in acks), 10)
    for i, ack in enumerate(acks):
        if i % 3:
            assert ack.result() == i
        else:
            error = ack.exception()
            assert isinstance(error, StorageUnavailable) and "storage.ackTimeout" in str(error), (i, error)
    await wait_for(lambda: len(deadlines) == 0, 10)  # nothing kept once every wait is over
    deadlines.close()


async def test_waits_over_are_forgotten_as_their_commits_land_so_only_those_in_flight_are_kept() -> None:
    deadlines = AckDeadlines()
    loop = asyncio.get_running_loop()
    for round_ in range(20):
        acks = [loop.create_future() for _ in range(100)]
        for ack in acks:
            deadlines.bound(ack, 3600)  # never expires during the test: only landing can drop them
        for ack in acks[:60]:
            ack.set_result(round_)
            deadlines.landed()
        assert len(deadlines) == 40  # the 40 still in flight; the 60 over are gone already
        for ack in acks[60:]:
            ack.set_result(round_)
        deadlines.landed()
        assert len(deadlines) == 0
    deadlines.close()


async def test_a_wait_whose_caller_went_away_is_left_alone_and_later_waits_are_still_bounded() -> None:
    deadlines = AckDeadlines()
    loop = asyncio.get_running_loop()
    gone, later = loop.create_future(), loop.create_future()
    deadlines.bound(gone, BOUND)
    gone.cancel()  # the client closed the connection: its task was cancelled
    deadlines.bound(later, BOUND)
    await wait_for(later.done, 10)
    assert gone.cancelled()
    assert isinstance(later.exception(), StorageUnavailable)
    deadlines.close()


async def test_submitted_callers_share_a_commit_and_a_poison_fails_only_its_own_caller() -> None:
    """Many callers hand their items over in one turn of the loop (no task each); one item is refused.
    Each future gets its own results; the poison's caller alone gets the error."""
    committed: list[list[int]] = []

    async def commit(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if any(item < 0 for item in items):
            raise ValueError(f"refused {min(items)}")
        committed.append(items)
        return [item * 10 for item in items]

    group: GroupCommit[int, int] = GroupCommit(commit, name="test")
    callers = [[i] for i in range(100)]
    callers[42] = [42, -42]  # the poison shares its caller with a good item (stored anyway)
    futures = [group.submit(items) for items in callers]
    futures[7].cancel()  # a caller that gave up: its item is still committed with the others
    await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)

    for i, future in enumerate(futures):
        if i == 7:
            assert future.cancelled()
        elif i == 42:
            assert isinstance(future.exception(), ValueError) and "refused -42" in str(future.exception())
        else:
            assert future.result() == [i * 10]
    stored = sorted(item for items in committed for item in items)
    assert stored == sorted([*range(100)])  # 7 included, 42's good item included, -42 not
    assert group.submit([]).result() == []
    await group.close()
