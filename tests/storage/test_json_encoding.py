"""Stored JSON is written by orjson when the value is plain JSON, else by the standard library: the
same text (up to escaping beyond ASCII) and the same refusals either way (storage/common.py)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid
from typing import Any

import pytest

from botpress_py.storage.common import event_json, to_json


class Text(str):
    pass


class Number(enum.IntEnum):
    ONE = 1


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int = 1


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


STDLIB = json.JSONEncoder(separators=(",", ":"))


@pytest.mark.parametrize("value", [
    {"type": "text", "text": "héllo \U0001f600", "n": 1, "f": 2.5, "t": True, "none": None, "list": [1, (2, 3)]},
    float("nan"), {"a": [float("inf"), None]}, [[[float("-inf")]]],  # orjson would write null
    {1: "int key"}, "lone \ud800 surrogate", 10**30, -(2**63), 2**64 - 1, "nul \x00 and \u2028",
    Text("subclass"), Number.ONE, {"d": {"e": Number.ONE}}, (1.0, 2e300, 1e-7, 0.1), deep(300),
])
def test_what_the_standard_library_writes_is_written_the_same(value: Any) -> None:
    written = to_json(value)
    expected = STDLIB.encode(value)
    if written != expected:  # orjson's text: characters beyond ASCII unescaped, exponents unpadded
        assert json.loads(written) == json.loads(expected)
        assert "NaN" not in expected and "Infinity" not in expected


@pytest.mark.parametrize("value", [
    {1, 2}, {"payload": {"when": datetime.datetime(2026, 1, 1)}}, Point(), Colour.RED, {"id": uuid.UUID(int=7)},
    object(), deep(5000),
])
def test_what_the_standard_library_refuses_is_refused_the_same(value: Any) -> None:
    with pytest.raises(Exception) as expected:
        STDLIB.encode(value)
    with pytest.raises(type(expected.value)) as refused:
        to_json(value)
    assert str(refused.value) == str(expected.value)


def test_a_reference_to_itself_is_refused_as_before() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        to_json(loop)


def test_an_event_reads_back_as_written() -> None:
    from botpress_py.events import IOEvent
    from botpress_py.storage.common import event_from_json

    event = IOEvent(type="text", channel="messenger", direction="incoming", botId="b", target="u", threadId="p",
                    payload={"type": "text", "text": "ça va? \U0001f600"}, flags={"receivedAt": 1, "n": 0.5},
                    user={"id": "u", "linked": []})
    assert event_from_json(event_json(event)) == event
