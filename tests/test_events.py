"""The IOEvent model: copies are deep, ids are unique across processes."""

from __future__ import annotations

import os
import re

from botpress_py.events import IOEvent, masked_copy, new_event_id


def sample() -> IOEvent:
    return IOEvent(type="text", channel="messenger", direction="incoming", botId="b", target="u", threadId="p",
                   payload={"type": "text", "text": "hi", "items": [{"title": "a"}], "n": 1.5, "ok": True},
                   flags={"session": {"new": True}}, user={"id": "u"})


def test_copy_and_to_dict_are_deep() -> None:
    event = sample()
    twin = event.copy()
    assert twin == event and twin is not event
    twin.payload["items"][0]["title"] = "changed"
    twin.flags["session"]["new"] = False
    twin.user["profile"] = {"first_name": "x"}
    assert event.payload["items"][0]["title"] == "a"
    assert event.flags == {"session": {"new": True}} and event.user == {"id": "u"}
    data = event.to_dict()
    data["payload"]["text"] = "changed"
    assert event.payload["text"] == "hi"
    assert IOEvent.from_dict(event.to_dict()) == event


def test_copy_of_a_value_that_is_not_json_shaped_is_still_deep() -> None:
    event = sample()
    event.payload["pair"] = ({"a": 1},)  # a tuple: copied generically
    twin = event.copy()
    twin.payload["pair"][0]["a"] = 2
    assert event.payload["pair"][0]["a"] == 1


def test_masked_copy_leaves_the_event_alone() -> None:
    event = sample()
    masked = masked_copy(event)
    assert masked.payload["text"] == "***" and masked.payload["items"][0]["title"] == "***"
    assert event.payload["text"] == "hi"


def test_event_ids_are_unique_hex_and_differ_in_a_forked_child() -> None:
    ids = {new_event_id() for _ in range(100_000)}
    assert len(ids) == 100_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in list(ids)[:1000])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report a few ids, then leave without running pytest's teardown
        os.write(write, " ".join(new_event_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as child_out:
        child_ids = set(child_out.read().split())
    parent_ids = {new_event_id() for _ in range(100)}
    assert len(child_ids) == 100 and not child_ids & (ids | parent_ids)
    assert {i[:16] for i in child_ids}.isdisjoint({i[:16] for i in parent_ids})
