"""Standard outgoing payloads (docs/modules.md, Outgoing payloads) → Messenger Send API request bodies.

Pure functions: no I/O, so every body can be asserted exactly. A payload renders to a list
of steps, each a Send API body (a message or a sender action) or a ``Pause``.

Messenger's limits are met by degrading, never by sending something Graph would refuse:
- text longer than 2000 characters is split on paragraph, sentence, then word boundaries;
- titles longer than a limit are cut and end with "…";
- more than 13 choices cannot be quick replies: the text is sent alone, then the choices
  follow as postback buttons (3 per card, 10 cards per message, several messages if needed),
  which stay clickable and carry the same values;
- a card with more than 3 actions continues on extra cards with the same title;
- a carousel of more than 10 cards becomes several carousel messages;
- a "Say something" button is a postback whose payload is ``say::<text>``; the incoming
  mapping turns that postback back into a text event, as if the user had typed the text.
Lengths are counted in UTF-16 code units, the stricter of the ways Meta may count them
(an emoji counts 2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT = 2000
MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_TITLE = 20
MAX_PAYLOAD = 1000
MAX_ELEMENTS = 10
MAX_BUTTONS = 3
MAX_ELEMENT_TITLE = 80
MAX_ELEMENT_SUBTITLE = 80
MAX_BUTTON_TITLE = 20
SAY_PREFIX = "say::"
DEFAULT_TYPING_MS = 1000
MAX_TYPING_MS = 20000  # Messenger drops the indicator after 20 s anyway
ELLIPSIS = "…"

Step = dict[str, Any]


class RenderError(ValueError):
    """A payload this channel cannot render at all (resending it will not help)."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait this long before the next step (typing indicator or pacing)."""

    ms: int


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What rendering needs from the bot's config."""

    external_url: str = ""
    typing_indicators: bool = True
    disabled_actions: frozenset[str] = frozenset()


@dataclass(slots=True)
class Rendering:
    """The steps of one outgoing payload plus notes on every limit that forced a degradation."""

    steps: list[Step | Pause] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bodies(self) -> list[Step]:
        return [s for s in self.steps if not isinstance(s, Pause)]


# -- lengths and text ---------------------------------------------------------------------


def fb_len(text: str) -> int:
    """Length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> str:
    """The longest prefix of whole code points whose UTF-16 length is at most ``limit``."""
    if fb_len(text) <= limit:
        return text
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


def truncate(text: str, limit: int) -> str:
    """``text`` unchanged when it fits, else cut to ``limit`` units ending with "…"."""
    if fb_len(text) <= limit:
        return text
    return _prefix_within(text, limit - 1).rstrip() + ELLIPSIS


# Each boundary cuts where its "ws" group starts: closing quotes stay with their sentence.
_PARAGRAPH = re.compile(r"(?P<ws>\n\s*\n)")
_LINE = re.compile(r"(?P<ws>\n)")
_SENTENCE = re.compile("(?<=[.!?…。\uff01\uff1f])" r"[\"'»”)\]]*(?P<ws>\s+)")
_WORD = re.compile(r"(?P<ws>\s+)")


def _last_boundary(window: str, pattern: re.Pattern[str], floor: int) -> int | None:
    """Offset of the last boundary in ``window`` that keeps at least ``floor`` characters before it."""
    best = None
    for match in pattern.finditer(window):
        if match.start("ws") >= floor:
            best = match.start("ws")
    return best


def split_text(text: str, limit: int = MAX_TEXT, *, measure: Callable[[str], int] = fb_len,
               prefix: Callable[[str, int], str] = _prefix_within) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` UTF-16 units, at the most natural boundary.

    Preference: paragraph break, line break, sentence end, whitespace, and only then a hard
    cut. A boundary is used only if it keeps at least half a chunk, so no chunk is tiny.
    ``measure`` and ``prefix`` count otherwise (Instagram counts UTF-8 bytes).
    """
    chunks: list[str] = []
    rest = text.strip()
    while rest:
        if measure(rest) <= limit:
            chunks.append(rest)
            break
        window = prefix(rest, limit)
        # The boundary may sit right after the window (e.g. the space after a full-length sentence).
        lookahead = rest[: len(window) + 1]
        floor = len(window) // 2
        cut = None
        for pattern in (_PARAGRAPH, _LINE, _SENTENCE, _WORD):
            cut = _last_boundary(lookahead, pattern, floor)
            if cut is not None:
                break
        if cut is None or cut == 0:
            cut = len(window)
        chunk, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if chunk:
            chunks.append(chunk)
    return chunks


def absolute_url(url: str, external_url: str) -> str:
    """Relative media URLs (``/assets/x.png``) are served by this server: prefix its external URL."""
    url = url.strip()
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url) or url.startswith("//"):
        return url
    return external_url.rstrip("/") + "/" + url.lstrip("/")


# -- bodies --------------------------------------------------------------------------------


def message_body(recipient: str, message: dict[str, Any], messaging_type: str, tag: str | None = None) -> Step:
    body: Step = {"recipient": {"id": recipient}, "messaging_type": messaging_type, "message": message}
    if tag:
        body["messaging_type"] = "MESSAGE_TAG"
        body["tag"] = tag
    return body


def sender_action_body(recipient: str, action: str) -> Step:
    return {"recipient": {"id": recipient}, "sender_action": action}


def generic_template(elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": elements}}}


# -- payload renderers ---------------------------------------------------------------------


class _Renderer:
    """Messenger's renderer; a subclass renders for another platform of the Send API (instagram_rendering.py)."""

    platform = "Messenger"
    custom_key = "messenger"  # a ``custom`` payload's key holding what to send as is

    def __init__(self, recipient: str, messaging_type: str, tag: str | None, options: RenderOptions) -> None:
        self.recipient = recipient
        self.messaging_type = messaging_type
        self.tag = tag
        self.options = options
        self.out = Rendering()

    def message(self, message: dict[str, Any]) -> None:
        self.out.steps.append(message_body(self.recipient, message, self.messaging_type, self.tag))

    def note(self, text: str) -> None:
        self.out.notes.append(text)

    def title(self, text: Any, limit: int, what: str) -> str:
        value = str(text if text is not None else "").strip()
        cut = truncate(value, limit)
        if cut != value:
            self.note(f"{what} {value[:40]!r} is longer than {limit} characters: cut to {cut!r}")
        return cut

    def payload_value(self, value: str, what: str) -> str:
        if fb_len(value) <= MAX_PAYLOAD:
            return value
        self.note(f"{what} is longer than {MAX_PAYLOAD} characters: cut")
        return _prefix_within(value, MAX_PAYLOAD)

    def split(self, text: str) -> list[str]:
        return split_text(text)

    def texts(self, text: str) -> list[str]:
        chunks = self.split(text)
        if len(chunks) > 1:
            self.note(f"text of {fb_len(text)} characters split into {len(chunks)} messages")
        return chunks

    # text ---------------------------------------------------------------------------------
    def text(self, payload: dict[str, Any]) -> None:
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise RenderError("text payload has no text")
        for chunk in self.texts(text):
            self.message({"text": chunk})

    # single-choice ------------------------------------------------------------------------
    def choices(self, payload: dict[str, Any]) -> list[tuple[str, str]]:
        raw = payload.get("choices")
        if not isinstance(raw, list):
            raise RenderError("single-choice payload needs a 'choices' list")
        out = []
        for choice in raw:
            if not isinstance(choice, dict):
                self.note(f"choice {choice!r} is not an object: left out")
                continue
            title = str(choice.get("title") or choice.get("value") or "").strip()
            value = str(choice.get("value") or choice.get("title") or "").strip()
            if not title:
                self.note("a choice without title and value was left out")
                continue
            out.append((title, value))
        return out

    def single_choice(self, payload: dict[str, Any]) -> None:
        text = payload.get("text")
        text = text.strip() if isinstance(text, str) else ""
        choices = self.choices(payload)
        # Quick replies need a text to hang on; "…" keeps a choice-only payload valid.
        chunks = self.texts(text) if text else [ELLIPSIS]
        if len(choices) <= MAX_QUICK_REPLIES:
            for chunk in chunks[:-1]:
                self.message({"text": chunk})
            last: dict[str, Any] = {"text": chunks[-1]}
            if choices:
                last["quick_replies"] = [
                    {
                        "content_type": "text",
                        "title": self.title(title, MAX_QUICK_REPLY_TITLE, "quick reply title"),
                        "payload": self.payload_value(value, "quick reply payload"),
                    }
                    for title, value in choices
                ]
            self.message(last)
            return
        self.note(
            f"{len(choices)} choices exceed the {MAX_QUICK_REPLIES} quick replies Messenger allows: "
            "sent as postback buttons instead"
        )
        for chunk in chunks:
            self.message({"text": chunk})
        total = len(choices)
        elements = []
        for start in range(0, total, MAX_BUTTONS):
            group = choices[start : start + MAX_BUTTONS]
            elements.append(
                {
                    "title": f"{start + 1}\u2013{start + len(group)} / {total}",
                    "buttons": [
                        {
                            "type": "postback",
                            "title": self.title(title, MAX_BUTTON_TITLE, "button title"),
                            "payload": self.payload_value(value, "button payload"),
                        }
                        for title, value in group
                    ],
                }
            )
        for start in range(0, len(elements), MAX_ELEMENTS):
            self.message(generic_template(elements[start : start + MAX_ELEMENTS]))

    # media --------------------------------------------------------------------------------
    def media(self, payload: dict[str, Any]) -> None:
        kind = payload["type"]
        key = "image" if kind == "image" else "url"
        url = payload.get(key)
        if not isinstance(url, str) or not url.strip():
            raise RenderError(f"{kind} payload has no '{key}'")
        title = payload.get("title")
        if isinstance(title, str) and title.strip():
            for chunk in self.texts(title):
                self.message({"text": chunk})
        self.message(
            {
                "attachment": {
                    "type": kind,
                    "payload": {"url": absolute_url(url, self.options.external_url), "is_reusable": True},
                }
            }
        )

    # cards --------------------------------------------------------------------------------
    def button(self, action: Any) -> dict[str, Any] | None:
        if not isinstance(action, dict):
            self.note(f"card action {action!r} is not an object: left out")
            return None
        kind = action.get("action")
        label = action.get("title")
        if kind == "Open URL":
            url = action.get("url")
            if not isinstance(url, str) or not url.strip():
                self.note("Open URL action without url: left out")
                return None
            return {
                "type": "web_url",
                "url": absolute_url(url, self.options.external_url),
                "title": self.title(label or url, MAX_BUTTON_TITLE, "button title"),
            }
        if kind == "Postback":
            value = action.get("payload")
            if value is None or str(value) == "":
                self.note("Postback action without payload: left out")
                return None
            return {
                "type": "postback",
                "title": self.title(label or value, MAX_BUTTON_TITLE, "button title"),
                "payload": self.payload_value(str(value), "button payload"),
            }
        if kind == "Say something":
            said = action.get("text")
            if said is None or str(said) == "":
                self.note("Say something action without text: left out")
                return None
            return {
                "type": "postback",
                "title": self.title(label or said, MAX_BUTTON_TITLE, "button title"),
                "payload": self.payload_value(SAY_PREFIX + str(said), "Say something text"),
            }
        self.note(f"card action {kind!r} is unknown: left out")
        return None

    def card_elements(self, card: Any) -> list[dict[str, Any]]:
        if not isinstance(card, dict):
            raise RenderError("a card must be an object")
        title = self.title(card.get("title") or ELLIPSIS, MAX_ELEMENT_TITLE, "card title")
        element: dict[str, Any] = {"title": title}
        subtitle = card.get("subtitle")
        if isinstance(subtitle, str) and subtitle.strip():
            element["subtitle"] = self.title(subtitle, MAX_ELEMENT_SUBTITLE, "card subtitle")
        image = card.get("image")
        if isinstance(image, str) and image.strip():
            element["image_url"] = absolute_url(image, self.options.external_url)
        actions = card.get("actions") or []
        if not isinstance(actions, list):
            self.note("card actions is not a list: left out")
            actions = []
        buttons = [b for b in (self.button(a) for a in actions) if b is not None]
        if not buttons:
            return [element]
        groups = [buttons[i : i + MAX_BUTTONS] for i in range(0, len(buttons), MAX_BUTTONS)]
        if len(groups) > 1:
            self.note(f"card {title!r} has {len(buttons)} buttons, over {MAX_BUTTONS}: continued on extra cards")
        element["buttons"] = groups[0]
        return [element] + [{"title": title, "buttons": group} for group in groups[1:]]

    def cards(self, cards: list[Any]) -> None:
        elements = [e for card in cards for e in self.card_elements(card)]
        if len(elements) > MAX_ELEMENTS:
            self.note(f"{len(elements)} cards exceed {MAX_ELEMENTS} per carousel: sent as several carousels")
        for start in range(0, len(elements), MAX_ELEMENTS):
            self.message(generic_template(elements[start : start + MAX_ELEMENTS]))

    def card(self, payload: dict[str, Any]) -> None:
        self.cards([payload])

    def carousel(self, payload: dict[str, Any]) -> None:
        items = payload.get("items")
        if not isinstance(items, list) or not items:
            raise RenderError("carousel payload needs a non-empty 'items' list")
        self.cards(items)

    # typing -------------------------------------------------------------------------------
    def typing(self, payload: dict[str, Any]) -> None:
        value = payload.get("value", True)
        if value is True or value is None:
            ms = DEFAULT_TYPING_MS
        elif value is False:
            ms = 0
        elif isinstance(value, int | float):
            ms = int(value)
        else:
            raise RenderError(f"typing value {value!r} is neither a number of milliseconds nor true")
        ms = max(0, min(ms, MAX_TYPING_MS))
        if ms == 0:
            return
        show = self.options.typing_indicators
        if show and "typing_on" not in self.options.disabled_actions:
            self.out.steps.append(sender_action_body(self.recipient, "typing_on"))
        self.out.steps.append(Pause(ms))
        if show and "typing_off" not in self.options.disabled_actions:
            self.out.steps.append(sender_action_body(self.recipient, "typing_off"))

    # custom -------------------------------------------------------------------------------
    def custom(self, payload: dict[str, Any]) -> None:
        key = self.custom_key
        if key not in payload:
            self.note(f"custom payload has no '{key}' key: nothing to send on {self.platform}")
            return
        raw = payload[key]
        items = raw if isinstance(raw, list) else [raw]
        for item in items:
            if not isinstance(item, dict) or not item:
                raise RenderError(f"custom '{key}' must be a Send API message object (or a list of them)")
            action = item.get("sender_action")
            if isinstance(action, str) and len(item) == 1:
                if action in self.options.disabled_actions:
                    self.note(f"sender action {action} is disabled: skipped")
                    continue
                self.out.steps.append(sender_action_body(self.recipient, action))
                continue
            self.message(dict(item))


def render_payload(
    payload: dict[str, Any],
    recipient: str,
    *,
    messaging_type: str = "RESPONSE",
    tag: str | None = None,
    options: RenderOptions | None = None,
    renderer_class: type[_Renderer] = _Renderer,
) -> Rendering:
    """Render one standard outgoing payload to Send API steps for ``recipient`` (a PSID)."""
    if not isinstance(payload, dict):
        raise RenderError("payload must be an object")
    renderer = renderer_class(recipient, messaging_type, tag, options or RenderOptions())
    kind = payload.get("type")
    handlers = {
        "text": renderer.text,
        "single-choice": renderer.single_choice,
        "image": renderer.media,
        "file": renderer.media,
        "video": renderer.media,
        "audio": renderer.media,
        "card": renderer.card,
        "carousel": renderer.carousel,
        "typing": renderer.typing,
        "custom": renderer.custom,
    }
    handler = handlers.get(str(kind))
    if handler is None:
        raise RenderError(f"payload type {kind!r} cannot be sent on {renderer.platform}")
    handler(payload)
    return renderer.out
