"""The built-in qna module: answers a bot's users from data/bots/<bot>/qna.json.

Each mounted bot gets an index (normalised question → entry, payload → entry) built when
the bot mounts; a remount rebuilds it, so edits to qna.json take effect on reload.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

from botpress_py.sdk import BotContext, ConfigProblem, IOEvent, hookimpl

from .matching import normalise
from .store import QnaFileMissing, QnaIndex, check_document, load_document

__all__ = [
    "QnaIndex",
    "check_bot",
    "check_document",
    "normalise",
    "on_bot_mount",
    "on_bot_unmount",
    "on_incoming",
]

# Only these user actions deserve an answer (a fallback included); images, stickers,
# reactions and the like are left alone rather than met with "Sorry, I did not get that".
ANSWERED_TYPES = frozenset({"text", "quick_reply", "postback"})

# Index of each mounted bot; a bot whose qna file is broken has none. Keyed by the bot's
# folder as well as its id: two servers in one process (tests) may host the same bot id.
_indexes: dict[tuple[str, str], QnaIndex] = {}


def _key(bot: BotContext) -> tuple[str, str]:
    return (bot.id, str(bot.data_dir))


def qna_path(bot: BotContext) -> Path:
    return Path(bot.data_dir) / str(bot.config.get("file") or "qna.json")


def _summary(problems: list[ConfigProblem]) -> str:
    more = len(problems) - 1
    return str(problems[0]) + (f" (+{more} more)" if more else "")


@hookimpl
async def on_bot_mount(bot: BotContext) -> None:
    _indexes.pop(_key(bot), None)
    if not bot.config.get("enabled", True):
        bot.set_status("off", "disabled in the qna module config (enabled: false)")
        return
    path = qna_path(bot)
    try:
        # Off the event loop: a big qna.json takes a while to validate and index (every question is
        # normalised), other bots keep talking.
        index, problems = await asyncio.to_thread(_load_index, path)
    except QnaFileMissing:
        bot.set_status("off", f"no {path} (create it to answer messages)")
        return
    if index is None:
        for problem in problems:
            bot.logger.warning("qna: %s", problem)
        bot.set_status("error", _summary(problems))
        return
    _indexes[_key(bot)] = index
    bot.logger.info("qna: %d questions, %d payloads from %s", len(index.by_question), len(index.by_payload), path)
    bot.set_status("on")


def _load_index(path: Path) -> tuple[QnaIndex | None, list[ConfigProblem]]:
    data, problems = load_document(path)
    return (QnaIndex.build(data) if data is not None else None), problems


@hookimpl
def on_bot_unmount(bot: BotContext) -> None:
    _indexes.pop(_key(bot), None)


@hookimpl
async def on_incoming(event: IOEvent, bot: BotContext) -> None:
    index = _indexes.get(_key(bot))
    if index is None or event.silent or event.direction != "incoming" or event.type not in ANSWERED_TYPES:
        return
    session = event.flags.get("session") or {}
    if session.get("expired") and index.welcome_back:
        await bot.reply(event, copy.deepcopy(index.welcome_back))
    entry = find_entry(index, event, answer_payloads=bool(bot.config.get("answerPayloads", True)))
    if entry is not None:
        bot.logger.debug("qna: event %s answered by entry %r", event.id, entry["id"])
        # Copies: an outgoing middleware may edit a payload in place, the index must not change.
        await bot.reply(event, copy.deepcopy(entry["answers"]))
        return
    if event.type == "postback" and not bot.config.get("answerPayloads", True):
        return  # payloads belong to another module: a fallback would talk over it
    if index.fallback:
        await bot.reply(event, copy.deepcopy(index.fallback))


def find_entry(index: QnaIndex, event: IOEvent, *, answer_payloads: bool = True) -> dict[str, Any] | None:
    """The entry answering ``event``, or None."""
    payload = event.payload or {}
    if event.type == "text":
        text = payload.get("text")
        return index.match_text(text) if isinstance(text, str) else None
    if answer_payloads and isinstance(payload.get("payload"), str):
        entry = index.match_payload(payload["payload"])
        if entry is not None:
            return entry
    if event.type == "quick_reply" and isinstance(payload.get("text"), str):
        # A quick reply is also what the user "said": its title can match a question.
        return index.match_text(payload["text"])
    return None


@hookimpl
def check_bot(bot: BotContext) -> list[ConfigProblem]:
    if not bot.config.get("enabled", True):
        return []
    try:
        return load_document(qna_path(bot))[1]
    except QnaFileMissing:
        # A bot may well do without qna (another logic module answers it).
        return []
