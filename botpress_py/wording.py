"""Counts as people read them, in what the CLI prints and the logs say."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 problem``, ``2 problems``, ``0 problems``: a count and its noun, agreeing."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
