"""Send API bodies as a terminal shows them: texts, numbered choices, cards, attachment URLs.

Used by ``botpress-py messenger simulate`` and ``chat``. What a person could tap in Messenger
(quick replies, postback buttons) gets a number, so a terminal user picks it by typing the
number; links are shown with their URL. Numbers run through one bot turn, in the order the
Messenger app would show the choices.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from typing import Any

TYPING = "…"


@dataclass(frozen=True)
class Choice:
    """Something the user can pick: a quick reply (sent as a message) or a postback button."""

    number: int
    kind: str  # "quick_reply" | "postback"
    title: str
    payload: str


class TurnPrinter:
    """Turns the Send API calls of a bot turn into lines; collects the numbered choices."""

    def __init__(self, name: str, *, show_payloads: bool = False, width: int | None = None) -> None:
        self.name = name
        self.show_payloads = show_payloads
        self.width = width  # wrap texts to this many columns (a terminal's width), None: never
        self.choices: list[Choice] = []

    def new_turn(self) -> None:
        """Choices are renumbered from 1 with each bot turn (Messenger drops old quick replies too)."""
        self.choices = []

    @property
    def indent(self) -> str:
        return " " * (len(self.name) + 2)

    def _say(self, first: str, more: list[str] | None = None) -> list[str]:
        """The bot's name before the first line, the rest aligned under it."""
        head, *tail = self._wrap(first)
        lines = [f"{self.name}: {head}"] + [self.indent + t for t in tail]
        return [line.rstrip() for line in lines + [self.indent + line for line in more or []]]

    def _wrap(self, text: str) -> list[str]:
        lines = text.split("\n")
        room = (self.width or 0) - len(self.indent)
        if self.width is None or room < 20:
            return lines
        return [part for line in lines for part in (textwrap.wrap(line, room) or [""])]

    def add_choice(self, kind: str, title: str, payload: str) -> str:
        number = len(self.choices) + 1
        self.choices.append(Choice(number, kind, title, payload))
        hint = f"  ({'quick reply' if kind == 'quick_reply' else 'postback'} {payload})" if self.show_payloads else ""
        return f"[{number}] {title}{hint}"

    def lines_for(self, call: dict[str, Any]) -> list[str]:
        """The lines of one recorded Send API call (empty for calls nobody would see)."""
        body = call.get("json") or {}
        if not call.get("accepted"):
            if call.get("fault"):
                return []  # a planned fault: the channel retries, the reply shows when it gets through
            error = call.get("error") or {}
            what = "message" if "message" in body else str(body.get("sender_action", "call"))
            return [f"  ⚠ the emulator refused a {what} as Meta would: {error.get('message', 'error')}"
                    f" (code {error.get('code')})"]
        action = body.get("sender_action")
        if action == "typing_on":
            return [f"{self.name}: {TYPING}"]
        if action in ("react", "unreact"):
            emoji = (body.get("payload") or {}).get("reaction", "")
            return [f"{self.name} reacted {emoji} to your message" if action == "react"
                    else f"{self.name} took back its reaction"]
        if action is not None:
            return []  # typing_off and mark_seen show nothing worth a line
        message = body.get("message")
        if not isinstance(message, dict):
            return []
        return self.message_lines(message)

    def message_lines(self, message: dict[str, Any]) -> list[str]:
        lines: list[str] = []
        if isinstance(message.get("text"), str):
            lines = self._say(message["text"])
        attachment = message.get("attachment")
        if isinstance(attachment, dict):
            lines += self._attachment(attachment)
        for reply in message.get("quick_replies") or []:
            if not isinstance(reply, dict):
                continue
            kind = reply.get("content_type")
            if kind == "text":
                lines.append(self.indent + self.add_choice("quick_reply", str(reply.get("title", "")),
                                                        str(reply.get("payload", ""))))
            elif kind in ("user_phone_number", "user_email"):
                sample = "+15555550100" if kind == "user_phone_number" else "test.user@example.com"
                lines.append(self.indent + self.add_choice("quick_reply", sample, sample))
        return lines

    def _attachment(self, attachment: dict[str, Any]) -> list[str]:
        kind, payload = attachment.get("type"), attachment.get("payload") or {}
        if kind in ("image", "audio", "video", "file"):
            where = payload.get("url") or f"attachment_id {payload.get('attachment_id')}"
            return self._say(f"[{kind}] {where}")
        if kind == "template" and payload.get("template_type") == "generic":
            return self._cards(payload.get("elements") or [])
        if kind == "template" and payload.get("template_type") == "button":
            return self._say(str(payload.get("text", "")), self._buttons(payload.get("buttons") or [], prefix=""))
        return self._say(f"[{kind} {payload.get('template_type', '')}]".replace(" ]", "]"),
                         [json.dumps(payload, ensure_ascii=False)])

    def _cards(self, elements: list[Any]) -> list[str]:
        body: list[str] = []
        count = len(elements)
        for index, element in enumerate(elements, 1):
            if not isinstance(element, dict):
                continue
            number = f"{index}/{count} ─ " if count > 1 else ""
            body.append(f"{'┌' if index == 1 else '├'}─ {number}{element.get('title', '')}")
            if element.get("subtitle"):
                body.append(f"│ {element['subtitle']}")
            if element.get("image_url"):
                body.append(f"│ [image] {element['image_url']}")
            body += self._buttons(element.get("buttons") or [], prefix="│ ")
        body.append("└─")
        first, *rest = body
        return self._say(first, rest)

    def _buttons(self, buttons: list[Any], prefix: str) -> list[str]:
        lines = []
        for button in buttons:
            if not isinstance(button, dict):
                continue
            kind, title = button.get("type"), str(button.get("title", ""))
            if kind == "postback":
                lines.append(prefix + self.add_choice("postback", title, str(button.get("payload", ""))))
            elif kind == "web_url":
                lines.append(f"{prefix}[↗] {title}  {button.get('url', '')}")
            elif kind == "phone_number":
                lines.append(f"{prefix}[☎] {title}  {button.get('payload', '')}")
            else:
                lines.append(f"{prefix}[ ] {title} ({kind})")
        return lines
