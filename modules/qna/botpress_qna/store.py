"""Loading and checking a bot's qna.json, and the lookup index built from a valid one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botpress_py.sdk import ConfigFileError, ConfigProblem, load_json_file, validate_instance

from .matching import normalise

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "qna.schema.json"


def _load_schema() -> dict[str, Any]:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    schema.pop("$schema", None)
    return schema


QNA_SCHEMA = _load_schema()

# A message is matched only when it is at most TEXT_LIMIT_FACTOR times as long as the longest
# question (and never cut below MIN_TEXT_LIMIT): room for the spaces, punctuation and emoji that
# normalising strips, while a text thousands of characters long is not compared at all.
TEXT_LIMIT_FACTOR = 4
MIN_TEXT_LIMIT = 1000


@dataclass(slots=True)
class QnaIndex:
    """What one bot answers: entries by normalised question and by payload, plus the fallback."""

    by_question: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_payload: dict[str, dict[str, Any]] = field(default_factory=dict)
    fallback: list[dict[str, Any]] = field(default_factory=list)
    # Said first when a user comes back after the session expired (sessionTimeout of inactivity).
    welcome_back: list[dict[str, Any]] = field(default_factory=list)
    # Texts longer than this are not normalised: they cannot be one of the questions (see match_text).
    longest_text: int = MIN_TEXT_LIMIT

    @classmethod
    def build(cls, data: dict[str, Any]) -> QnaIndex:
        """Index a qna document that passed ``check_document`` (first entry wins on conflicts)."""
        index = cls(fallback=list(data.get("fallback") or []), welcome_back=list(data.get("welcomeBack") or []))
        longest = 0
        for entry in data["entries"]:
            for question in entry.get("questions") or []:
                index.by_question.setdefault(normalise(question), entry)
                longest = max(longest, len(question))
            for payload in entry.get("payloads") or []:
                index.by_payload.setdefault(payload, entry)
        index.longest_text = max(MIN_TEXT_LIMIT, TEXT_LIMIT_FACTOR * longest)
        return index

    def match_text(self, text: str) -> dict[str, Any] | None:
        """The entry whose question reads as ``text``; None for a text far longer than every question.

        Normalising costs about half a microsecond a character on the event loop: a multi-megabyte
        message would hold every other conversation for seconds, and it is no question anyway.
        """
        if len(text) > self.longest_text:
            return None
        key = normalise(text)
        return self.by_question.get(key) if key else None

    def match_payload(self, payload: str) -> dict[str, Any] | None:
        return self.by_payload.get(payload)


class QnaFileMissing(Exception):
    """The bot has no qna file: qna has nothing to answer with, which is not a config error."""


def load_document(path: Path) -> tuple[dict[str, Any] | None, list[ConfigProblem]]:
    """Read and check a qna file: (document, []) when usable, else (None, problems).

    Raises QnaFileMissing when the file does not exist.
    """
    if not path.exists():
        raise QnaFileMissing(str(path))
    file = str(path)
    try:
        data = load_json_file(path, file)
    except ConfigFileError as exc:
        return None, list(exc.problems)
    problems = check_document(data, file)
    return (None, problems) if problems else (data, [])


def check_document(data: Any, file: str) -> list[ConfigProblem]:
    """Schema problems plus what a schema cannot say: unique ids, no question or payload in two entries."""
    problems = [_clarify(p) for p in validate_instance(data, QNA_SCHEMA, file)]
    problems.extend(_uniqueness_problems(data, file))
    # Document order (numeric indexes), so the first problem shown is the first in the file.
    problems.sort(
        key=lambda p: [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in p.pointer.split("/")]
    )
    return problems


def _clarify(problem: ConfigProblem) -> ConfigProblem:
    # jsonschema's wording for minProperties says nothing useful about a custom payload.
    if problem.message.endswith("does not have enough properties"):
        return ConfigProblem(
            problem.file,
            problem.pointer,
            "a custom payload needs the channel-native payload under the channel's name",
            'e.g. {"type": "custom", "messenger": {"attachment": ...}}',
        )
    return problem


def _uniqueness_problems(data: Any, file: str) -> list[ConfigProblem]:
    # Written defensively: it also runs on documents the schema rejected, so a file with
    # several kinds of mistakes reports them all in one `botpress-py check`.
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        return []
    problems: list[ConfigProblem] = []
    ids: dict[str, int] = {}
    questions: dict[str, tuple[int, str, str]] = {}
    payloads: dict[str, int] = {}
    for i, entry in enumerate(data["entries"]):
        if not isinstance(entry, dict):
            continue
        entry_id = entry.get("id")
        label = repr(entry_id) if isinstance(entry_id, str) else f"#{i}"
        if isinstance(entry_id, str):
            if entry_id in ids:
                problems.append(
                    ConfigProblem(
                        file,
                        f"/entries/{i}/id",
                        f"duplicate entry id {entry_id!r} (already used by /entries/{ids[entry_id]})",
                        "give every entry its own id",
                    )
                )
            else:
                ids[entry_id] = i
        entry_questions = _strings(entry.get("questions"))
        entry_payloads = _strings(entry.get("payloads"))
        if not entry_questions and not entry_payloads:
            problems.append(
                ConfigProblem(
                    file,
                    f"/entries/{i}",
                    f"entry {label} has no questions and no payloads, so it can never be answered",
                    "add a question or a payload, or remove the entry",
                )
            )
        for j, question in entry_questions:
            key = normalise(question)
            pointer = f"/entries/{i}/questions/{j}"
            if not key:
                problems.append(
                    ConfigProblem(
                        file,
                        pointer,
                        f"question {question!r} is only punctuation or spaces, so no message can match it",
                        "write the words the user would type",
                    )
                )
                continue
            seen = questions.get(key)
            if seen is None:
                questions[key] = (i, pointer, label)
            elif seen[0] != i:
                problems.append(
                    ConfigProblem(
                        file,
                        pointer,
                        f"question {question!r} is ambiguous: it reads as {key!r}, "
                        f"as does {seen[1]} of entry {seen[2]}",
                        "keep the question in one entry only",
                    )
                )
        for j, payload in entry_payloads:
            first = payloads.setdefault(payload, i)
            if first != i:
                problems.append(
                    ConfigProblem(
                        file,
                        f"/entries/{i}/payloads/{j}",
                        f"payload {payload!r} is ambiguous: /entries/{first} lists it too",
                        "keep the payload in one entry only",
                    )
                )
    return problems


def _strings(value: Any) -> list[tuple[int, str]]:
    if not isinstance(value, list):
        return []
    return [(j, item) for j, item in enumerate(value) if isinstance(item, str)]
