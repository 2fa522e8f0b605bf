"""Text normalisation: what makes "Héllo!!" and "hello" the same question."""

from __future__ import annotations

import unicodedata

# Stripped from both ends of a text: punctuation (P*), separators (Z*), control and
# format characters (zero-width joiners), and symbols (emoji, ™, their skin-tone
# modifiers), so "hi 👋" and "Hi!" both ask "hi". Math and currency signs (Sm, Sc) are
# kept: "$" or "+" can be the whole point of a question.
_EDGE_CATEGORIES = ("P", "Z", "Cc", "Cf", "So", "Sk")


def _is_edge(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith(_EDGE_CATEGORIES)


def normalise(text: str) -> str:
    """Fold case and accents, strip surrounding punctuation and whitespace, collapse inner whitespace."""
    # casefold first: it can itself produce combining marks ("İ" → "i̇") that NFKD then separates.
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    start, end = 0, len(bare)
    while start < end and _is_edge(bare[start]):
        start += 1
    while end > start and _is_edge(bare[end - 1]):
        end -= 1
    return " ".join(bare[start:end].split())
