"""How user text is folded before it is compared with a question."""

from __future__ import annotations

import pytest
from botpress_qna.matching import normalise


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", "hello"),
        ("Héllo!!", "hello"),
        ("HELLO", "hello"),
        ("  hello  ", "hello"),
        ("¿Qué tal?", "que tal"),
        ("...hello, world!?", "hello, world"),
        ("what   can\tyou\n do", "what can you do"),
        ("Straße", "strasse"),
        ("ÇA VA", "ca va"),
        ("hi 👋", "hi"),
        ("hi 👋🏽", "hi"),
        ("\u200bhey\u00a0", "hey"),
        ("ﬁne", "fine"),  # compatibility ligature
        ("(help)", "help"),
        ("«menu»", "menu"),
    ],
)
def test_normalise_folds_case_accents_punctuation_and_spaces(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_inner_punctuation_is_kept_so_different_questions_stay_different() -> None:
    assert normalise("what's up?") == "what's up"
    assert normalise("whats up") != normalise("what's up")


def test_math_and_currency_signs_are_kept_at_the_edges() -> None:
    assert normalise("$") == "$"
    assert normalise("1+1=") == "1+1="


@pytest.mark.parametrize("text", ["", "   ", "?!...", "👋", "\n\t"])
def test_text_without_words_normalises_to_empty(text: str) -> None:
    assert normalise(text) == ""
