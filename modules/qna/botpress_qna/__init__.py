"""The built-in qna module: answers a bot's users from data/bots/<bot>/qna.json.

Each mounted bot gets an index (normalised question → entry, payload → entry) built when
the bot mounts; a remount rebuilds it, so edits to qna.json take effect on reload. The
indexes live on the module instance the server gets from ``create_module()``, so two servers
in one process never share them.

qna runs after the other bot logic (``trylast``): its welcome back and its fallback are said
only when no other module answered the event (``event.handled``), so a custom module and qna
never both reply to one message. Entries that match are answered either way: the operator
wrote them for that text.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

from botpress_py.sdk import BotContext, ConfigProblem, IOEvent, hookimpl

from .matching import normalise
from .store import QnaFileMissing, QnaIndex, check_document, load_document

__all__ = ["QnaIndex", "QnaModule", "check_document", "create_module", "find_entry", "normalise"]

# Only these user actions deserve an answer (a fallback included); images, stickers,
# reactions and the like are left alone rather than met with "Sorry, I did not get that".
ANSWERED_TYPES = frozenset({"text", "quick_reply", "postback"})


def qna_path(bot: BotContext) -> Path:
    return Path(bot.data_dir) / str(bot.config.get("file") or "qna.json")


def _summary(problems: list[ConfigProblem]) -> str:
    more = len(problems) - 1
    return str(problems[0]) + (f" (+{more} more)" if more else "")


def _load_index(path: Path) -> tuple[QnaIndex | None, list[ConfigProblem]]:
    data, problems = load_document(path)
    return (QnaIndex.build(data) if data is not None else None), problems


class QnaModule:
    """One server's qna: the index of each of its mounted bots (none for a bot whose file is broken)."""

    def __init__(self) -> None:
        self.indexes: dict[str, QnaIndex] = {}

    @hookimpl
    async def on_bot_mount(self, bot: BotContext) -> None:
        self.indexes.pop(bot.id, None)
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
        self.indexes[bot.id] = index
        questions, payloads = len(index.by_question), len(index.by_payload)
        bot.logger.info("qna: %d question%s, %d payload%s from %s", questions, "" if questions == 1 else "s",
                        payloads, "" if payloads == 1 else "s", path)
        bot.set_status("on")

    @hookimpl
    def on_bot_unmount(self, bot: BotContext) -> None:
        self.indexes.pop(bot.id, None)

    @hookimpl(trylast=True)
    async def on_incoming(self, event: IOEvent, bot: BotContext) -> None:
        index = self.indexes.get(bot.id)
        if index is None or event.silent or event.direction != "incoming" or event.type not in ANSWERED_TYPES:
            return
        answered_elsewhere = event.handled_by  # qna runs last: any earlier answer was another module's
        session = event.flags.get("session") or {}
        if session.get("expired") and index.welcome_back and answered_elsewhere is None:
            await bot.reply(event, copy.deepcopy(index.welcome_back))
        entry = find_entry(index, event, answer_payloads=bool(bot.config.get("answerPayloads", True)))
        if entry is not None:
            bot.logger.debug("qna: event %s answered by entry %r", event.id, entry["id"])
            # Copies: an outgoing middleware may edit a payload in place, the index must not change.
            await bot.reply(event, copy.deepcopy(entry["answers"]))
            return
        if answered_elsewhere is not None:
            bot.logger.debug("qna: event %s was answered by %s: no fallback", event.id, answered_elsewhere)
            return
        if event.type == "postback" and not bot.config.get("answerPayloads", True):
            return  # payloads belong to another module: a fallback would talk over it
        if index.fallback:
            await bot.reply(event, copy.deepcopy(index.fallback))

    @hookimpl
    def check_bot(self, bot: BotContext) -> list[ConfigProblem]:
        if not bot.config.get("enabled", True):
            return []
        try:
            return load_document(qna_path(bot))[1]
        except QnaFileMissing:
            # A bot may well do without qna (another logic module answers it).
            return []


def create_module() -> QnaModule:
    return QnaModule()


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
