"""The rules a webhook value must meet before it becomes part of an event (validation.py)."""

from __future__ import annotations

import pytest
from channel_messenger.validation import (
    DROPPED,
    DROPPED_KEY,
    EARLIEST_MS,
    MAX_AHEAD_MS,
    Malformed,
    a_mid,
    a_payload,
    an_id,
    clean_text,
    event_time,
    kept,
    optional_number,
)


@pytest.mark.parametrize("value, expected", [("1001", "1001"), (1001, "1001"), ("user-1", "user-1"),
                                             (2**63 - 1, str(2**63 - 1)), ("a.b_c", "a.b_c")])
def test_ids_that_are_accepted(value: object, expected: str) -> None:
    assert an_id(value, "sender.id") == expected


@pytest.mark.parametrize("value", [1.5, True, [1], {"id": 1}, 2**63, -1, "", "x" * 65, "a/b", "a b", "١٢٣",
                                   "\x00", None])
def test_ids_that_are_refused_say_where_and_what_never_the_value(value: object) -> None:
    with pytest.raises(Malformed) as caught:
        an_id(value, "sender.id")
    assert caught.value.field == "sender.id" and "expected an id" in caught.value.reason
    assert not (isinstance(value, str) and value and value in str(caught.value))


def test_mids_and_payloads() -> None:
    assert a_mid("m_AbC-123.$x", "mid") == "m_AbC-123.$x" and a_mid(7, "mid") == "7"
    for bad in (["m"], 10**30, "a b", "é", "x" * 513, 0.5):
        with pytest.raises(Malformed):
            a_mid(bad, "mid")
    assert a_payload("GET_STARTED", "p") == "GET_STARTED" and a_payload(42, "p") == "42"
    assert a_payload("a\x00", "p") == "a\ufffd"
    for bad in ("p" * 1001, {"a": 1}, [1], 1.5, 10**30):
        with pytest.raises(Malformed):
            a_payload(bad, "p")


def test_text_loses_nul_and_lone_surrogates_and_keeps_pairs() -> None:
    assert clean_text("a\x00b\ud800c\udfff\ud83d\ude00😀") == "a\ufffdb\ufffdc\ufffd😀😀"
    assert clean_text("plain") == "plain"
    clean_text("a\ud800" * 10).encode("utf-8")  # storable


def test_timestamps_within_range_or_none() -> None:
    now = 1_767_225_600_000
    assert event_time(now, now) == now and event_time(EARLIEST_MS, now) == EARLIEST_MS
    assert event_time(now + MAX_AHEAD_MS, now) == now + MAX_AHEAD_MS
    for bad in (now + MAX_AHEAD_MS + 1, EARLIEST_MS - 1, 10**30, 2**63, -1, 0, 1.7e12, "1767225600000", True, None):
        assert event_time(bad, now) is None, bad


def test_coordinates_only_as_finite_numbers_in_range() -> None:
    assert optional_number(48.8, -90, 90) == 48.8
    for bad in ("48.8", float("nan"), float("inf"), 91, True, None):
        assert optional_number(bad, -90, 90) is None


def test_kept_values_are_storable_and_bounded() -> None:
    value: object = "x"
    for _ in range(900):
        value = {"k": [value]}
    copied = kept(value)
    depth = 0
    while isinstance(copied, dict | list):
        copied = copied["k"] if isinstance(copied, dict) else copied[0]
        depth += 1
    assert copied == DROPPED and depth == 16
    assert kept({"n": 10**40, "f": float("nan"), "s": "\ud800", "t": (1, 2)}) == \
        {"n": str(10**40), "f": None, "s": "\ufffd", "t": None}
    wide = kept(list(range(50_000)))
    assert len(wide) == 10_000 and wide[-1] == DROPPED
    assert DROPPED_KEY in kept({str(i): i for i in range(20_000)})
