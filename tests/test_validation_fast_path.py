"""Config validation: the compiled fast check (jsonschema-rs) only ever says "valid"; whenever it
does not, jsonschema decides and explains, so problems and verdicts are what they always were."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from botpress_py.bots import BOT_CONFIG_SCHEMA
from botpress_py.jsonfiles import _validators_for, schema_defaults, validate_instance

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 5},
        "count": {"type": "integer", "maximum": 10},
        "token": {"type": "string", "minLength": 8},
        "tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
        "nested": {"type": "object", "properties": {"on": {"type": "boolean", "default": True}}},
    },
}


@pytest.mark.parametrize("instance", [
    {},
    {"name": "ok", "count": 3, "tags": ["x"], "nested": {"on": False}},
    {"name": "too long"},
    {"count": 2**70},  # past 64 bits: the fast check cannot take it, jsonschema can
    {"count": True},  # a boolean is not an integer
    {"token": 123456789},
    {"extra": 1, "tags": [1]},
    ["not", "an", "object"],
])
def test_the_verdict_and_the_problems_are_jsonschemas(instance: Any) -> None:
    problems = validate_instance(instance, SCHEMA, "f.json")
    expected = sorted(Draft202012Validator(SCHEMA).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert bool(problems) == bool(expected)
    if isinstance(instance, dict) and "token" in instance:
        assert "123456789" not in " ".join(map(str, problems))  # a secret's value is never quoted


def test_a_pattern_the_fast_check_reads_differently_is_decided_by_jsonschema() -> None:
    # Python's "$" also matches before a final newline; other regex engines' does not.
    schema = {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[a-z]+$"}}}
    assert validate_instance({"id": "abc\n"}, schema, "f.json") == []
    assert validate_instance({"id": "ab-c"}, schema, "f.json") != []


def test_a_schema_the_fast_check_cannot_compile_is_still_validated() -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string", "pattern": "(?P<word>[a-z]+)\\Z"}}}
    assert validate_instance({"id": "abc"}, schema, "f.json") == []
    assert [p.pointer for p in validate_instance({"id": "ABC"}, schema, "f.json")] == ["/id"]


def test_the_bot_config_schema_has_a_fast_check() -> None:
    assert _validators_for(BOT_CONFIG_SCHEMA).fast is not None  # else every mount would pay jsonschema's price
    assert validate_instance({"id": "bot-1", "disabled": False}, BOT_CONFIG_SCHEMA, "b.json") == []
    assert [p.pointer for p in validate_instance({"id": "Bad Id"}, BOT_CONFIG_SCHEMA, "b.json")] == ["/id"]


def test_defaults_are_fresh_for_each_caller() -> None:
    first = schema_defaults(SCHEMA)
    assert first == {"tags": ["a"], "nested": {"on": True}}
    first["tags"].append("changed")
    first["nested"]["on"] = False
    assert schema_defaults(SCHEMA) == {"tags": ["a"], "nested": {"on": True}}
