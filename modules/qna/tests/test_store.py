"""Checking qna.json: schema errors with JSON pointers, uniqueness, syntax errors, the sample bot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botpress_qna.store import QNA_SCHEMA, QnaFileMissing, QnaIndex, check_document, load_document
from jsonschema import Draft202012Validator

MODULE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = MODULE_DIR.parents[1]
SAMPLE_QNA = REPO_ROOT / "data" / "bots" / "welcome-bot" / "qna.json"


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def doc(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"entries": list(entries), **extra}


def entry(
    entry_id: str,
    *,
    questions: list[str] | None = None,
    payloads: list[str] | None = None,
    answers: list[Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": entry_id, "answers": answers if answers is not None else [text(entry_id)]}
    if questions is not None:
        out["questions"] = questions
    if payloads is not None:
        out["payloads"] = payloads
    return out


def pointers(data: Any) -> list[str]:
    return [p.pointer for p in check_document(data, "qna.json")]


# --- the schemas themselves ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["qna.schema.json", "config.schema.json"])
def test_shipped_schemas_are_valid_draft_2020_12(name: str) -> None:
    schema = json.loads((MODULE_DIR / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False


def test_config_schema_gives_every_option_a_default_and_description() -> None:
    schema = json.loads((MODULE_DIR / "config.schema.json").read_text(encoding="utf-8"))
    assert set(schema["properties"]) == {"enabled", "file", "answerPayloads"}
    for name, prop in schema["properties"].items():
        assert "default" in prop, name
        assert prop.get("description"), name
        Draft202012Validator(prop).validate(prop["default"])


@pytest.mark.parametrize("bad", ["../other-bot/qna.json", "/etc/passwd.json", "sub/qna.json", "qna.yaml"])
def test_config_file_option_must_stay_inside_the_bot_folder(bad: str) -> None:
    schema = json.loads((MODULE_DIR / "config.schema.json").read_text(encoding="utf-8"))
    assert not Draft202012Validator(schema).is_valid({"file": bad})
    assert Draft202012Validator(schema).is_valid({"file": "faq-en.json"})


def test_module_manifest() -> None:
    manifest = json.loads((MODULE_DIR / "module.json").read_text(encoding="utf-8"))
    assert manifest["name"] == "qna"
    assert manifest["entry"] == "botpress_qna"
    assert manifest["kind"] == "logic"


# --- the sample bot ----------------------------------------------------------------------


def test_sample_bot_qna_validates() -> None:
    data, problems = load_document(SAMPLE_QNA)
    assert problems == []
    assert data is not None


def test_sample_bot_answers_what_it_promises() -> None:
    data, _ = load_document(SAMPLE_QNA)
    assert data is not None
    index = QnaIndex.build(data)
    for greeting in ("hello", "Hi!", "hey"):
        assert index.match_text(greeting) is not None, greeting
    assert index.match_text("help")["answers"][0]["type"] == "single-choice"
    assert index.match_payload("GET_STARTED") is not None
    assert any(a["type"] == "carousel" for e in data["entries"] for a in e["answers"])
    assert index.fallback
    # Every button and quick reply the bot offers leads somewhere: no dead ends.
    offered = set()
    for payloads in [e["answers"] for e in data["entries"]] + [data["fallback"]]:
        for answer in payloads:
            offered |= {c["value"] for c in answer.get("choices", [])}
            cards = answer.get("items", []) + ([answer] if answer["type"] == "card" else [])
            offered |= {a["payload"] for c in cards for a in c.get("actions", []) if a["action"] == "Postback"}
            said = {a["text"] for c in cards for a in c.get("actions", []) if a["action"] == "Say something"}
            assert all(index.match_text(s) for s in said), said
    assert offered
    assert all(index.match_payload(p) for p in offered), offered - set(index.by_payload)


# --- schema errors point at the right place -------------------------------------------------


def test_minimal_document_is_valid() -> None:
    assert check_document(doc(entry("greet", questions=["hi"])), "qna.json") == []


def test_every_standard_payload_type_is_accepted() -> None:
    card = {
        "type": "card",
        "title": "T",
        "subtitle": "s",
        "image": "https://x/i.png",
        "actions": [
            {"action": "Open URL", "title": "Open", "url": "https://example.com"},
            {"action": "Postback", "title": "Go", "payload": "GO"},
            {"action": "Say something", "title": "Say", "text": "hello"},
        ],
    }
    answers = [
        text("hi"),
        {"type": "image", "image": "/assets/a.png", "title": "A"},
        {"type": "file", "url": "https://x/f.pdf"},
        {"type": "video", "url": "https://x/v.mp4", "title": "V"},
        {"type": "audio", "url": "https://x/a.mp3"},
        card,
        {"type": "carousel", "items": [{k: v for k, v in card.items() if k != "type"}, card]},
        {"type": "single-choice", "text": "Pick", "choices": [{"title": "A", "value": "A"}]},
        {"type": "typing", "value": 1000},
        {"type": "custom", "messenger": {"attachment": {"type": "template"}}},
    ]
    data = doc(entry("all", questions=["all"], answers=answers), fallback=[text("?")], welcomeBack=[text("wb")])
    assert check_document(data, "qna.json") == []


def test_bad_answer_type_points_at_the_type() -> None:
    data = doc(entry("greet", questions=["hi"], answers=[text("ok"), {"type": "txt", "text": "oops"}]))
    problems = check_document(data, "data/bots/b/qna.json")
    assert len(problems) == 1
    assert problems[0].pointer == "/entries/0/answers/1/type"
    assert problems[0].file == "data/bots/b/qna.json"
    assert "'txt'" in problems[0].message
    assert str(problems[0]).startswith("data/bots/b/qna.json#/entries/0/answers/1/type: ")


@pytest.mark.parametrize(
    ("answer", "pointer", "words"),
    [
        ({"type": "text"}, "/entries/0/answers/0", "'text' is a required property"),
        ({"type": "text", "text": ""}, "/entries/0/answers/0/text", "non-empty"),
        ({"type": "text", "text": "x", "txet": "y"}, "/entries/0/answers/0/txet", "unknown key"),
        ({"type": "image", "title": "x"}, "/entries/0/answers/0", "'image' is a required property"),
        ({"type": "video"}, "/entries/0/answers/0", "'url' is a required property"),
        (
            {"type": "card", "title": "t", "actions": [{"action": "Postback", "title": "x"}]},
            "/entries/0/answers/0/actions/0",
            "'payload' is a required property",
        ),
        (
            {"type": "card", "title": "t", "actions": [{"action": "Call", "title": "x"}]},
            "/entries/0/answers/0/actions/0/action",
            "'Call' is not one of",
        ),
        (
            {
                "type": "card",
                "title": "t",
                "actions": [{"action": "Open URL", "title": "x", "url": "u", "p": 1}],
            },
            "/entries/0/answers/0/actions/0/p",
            "unknown key",
        ),
        ({"type": "carousel", "items": []}, "/entries/0/answers/0/items", "non-empty"),
        (
            {"type": "carousel", "items": [{"subtitle": "no title"}]},
            "/entries/0/answers/0/items/0",
            "'title' is a required property",
        ),
        (
            {"type": "single-choice", "text": "t", "choices": [{"title": "A"}]},
            "/entries/0/answers/0/choices/0",
            "'value' is a required property",
        ),
        ({"type": "typing", "value": "1s"}, "/entries/0/answers/0/value", "not of type 'integer'"),
        ({"type": "custom"}, "/entries/0/answers/0", "custom payload needs"),
        ({"text": "no type"}, "/entries/0/answers/0", "'type' is a required property"),
        ("just a string", "/entries/0/answers/0", "not of type 'object'"),
    ],
)
def test_answer_problems_point_at_the_offending_value(answer: Any, pointer: str, words: str) -> None:
    problems = check_document(doc(entry("e", questions=["q"], answers=[answer])), "qna.json")
    assert [p.pointer for p in problems] == [pointer], problems
    assert words in problems[0].message


def test_structure_problems() -> None:
    assert pointers([]) == ["/"]
    assert pointers({}) == ["/"]  # entries is required
    assert pointers(doc(entry("e", questions=["q"]), extra=1)) == ["/extra"]
    assert pointers(doc(entry("e", questions=["q"], answers=[]))) == ["/entries/0/answers"]
    assert pointers(doc(entry("e", questions=["q"]), fallback={"type": "text"})) == ["/fallback"]
    assert pointers(doc(entry("e", questions=["q"]), fallback=[{"type": "nope"}])) == ["/fallback/0/type"]
    assert pointers(doc(entry("e", questions="hello"))) == ["/entries/0", "/entries/0/questions"]


def test_duplicate_id_names_the_second_one() -> None:
    data = doc(entry("greet", questions=["hi"]), entry("other", questions=["x"]), entry("greet", questions=["yo"]))
    problems = check_document(data, "qna.json")
    assert [p.pointer for p in problems] == ["/entries/2/id"]
    assert "duplicate entry id 'greet'" in problems[0].message
    assert "/entries/0" in problems[0].message


def test_question_that_normalises_alike_in_two_entries_is_ambiguous() -> None:
    data = doc(entry("a", questions=["hello", "Hi!"]), entry("b", questions=["bye", "  hí  "]))
    problems = check_document(data, "qna.json")
    assert [p.pointer for p in problems] == ["/entries/1/questions/1"]
    assert "ambiguous" in problems[0].message
    assert "/entries/0/questions/1" in problems[0].message


def test_the_same_question_twice_in_one_entry_is_harmless() -> None:
    assert pointers(doc(entry("a", questions=["hello", "Hello!"]))) == []


def test_payload_in_two_entries_is_ambiguous() -> None:
    data = doc(entry("a", payloads=["GO"]), entry("b", payloads=["STOP", "GO"]))
    assert pointers(data) == ["/entries/1/payloads/1"]


def test_payloads_are_case_sensitive_so_these_do_not_clash() -> None:
    assert pointers(doc(entry("a", payloads=["go"]), entry("b", payloads=["GO"]))) == []


def test_entry_nobody_can_reach_is_a_problem() -> None:
    assert pointers(doc(entry("a", questions=["q"]), entry("b"))) == ["/entries/1"]
    assert pointers(doc(entry("a", questions=[], payloads=[]))) == ["/entries/0"]


def test_question_made_only_of_punctuation_is_a_problem() -> None:
    assert pointers(doc(entry("a", questions=["hello", "?!"]))) == ["/entries/0/questions/1"]


def test_problems_come_in_document_order() -> None:
    bad = {"type": "bad"}
    data = doc(*[entry(f"e{i}", questions=[f"q{i}"]) for i in range(11)], fallback=[bad])
    data["entries"][10]["answers"] = [bad]
    data["entries"][2]["answers"] = [bad]
    data["entries"][9]["id"] = "e2"
    assert pointers(data) == [
        "/entries/2/answers/0/type",
        "/entries/9/id",
        "/entries/10/answers/0/type",
        "/fallback/0/type",
    ]


# --- reading files ---------------------------------------------------------------------------


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "qna.json"
    path.write_text('{\n  "entries": [\n    {"id": "a",}\n  ]\n}\n', encoding="utf-8")
    data, problems = load_document(path)
    assert data is None
    assert len(problems) == 1
    assert problems[0].file == str(path)
    assert "line 3, column" in problems[0].message


def test_empty_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "qna.json"
    path.write_text("  \n", encoding="utf-8")
    data, problems = load_document(path)
    assert data is None
    assert "empty" in problems[0].message


def test_missing_file_is_reported_separately(tmp_path: Path) -> None:
    with pytest.raises(QnaFileMissing):
        load_document(tmp_path / "qna.json")


def test_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "qna.json"
    path.write_text(json.dumps(doc(entry("a", questions=["Héllo"]))), encoding="utf-8")
    data, problems = load_document(path)
    assert problems == []
    assert data is not None
    assert QnaIndex.build(data).match_text("HELLO!")["id"] == "a"


def test_schema_forbids_unknown_top_level_keys_but_allows_dollar_schema() -> None:
    assert "$schema" in QNA_SCHEMA["properties"]
    assert pointers(doc(entry("a", questions=["q"]), **{"$schema": "./qna.schema.json"})) == []


def test_a_text_far_longer_than_every_question_is_not_normalised_at_all() -> None:
    question = "what are your opening hours"
    index = QnaIndex.build({"entries": [{"id": "hours", "questions": [question], "answers": [text("9 to 5")]}]})
    assert index.longest_text == 1000, "never below the floor, whatever the questions"
    padded = "  " + question.upper() + "?!" + " " * 900
    assert index.match_text(padded)["id"] == "hours", "within the bound, spaces and punctuation still fold away"
    assert index.match_text(question + " " * 1000) is None, "past the bound: not compared"
    huge = "a" * 5_000_000
    assert index.match_text(huge) is None

    long_question = "x" * 400
    index = QnaIndex.build({"entries": [{"id": "long", "questions": [long_question], "answers": [text("ok")]}]})
    assert index.longest_text == 1600, "four times the longest question"
    assert index.match_text(long_question + " " * 1100)["id"] == "long"
