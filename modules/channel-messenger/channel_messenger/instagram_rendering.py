"""Standard outgoing payloads → Send API bodies for Instagram, within Instagram's own limits.

Instagram Messaging takes the Send API bodies Messenger takes, with these differences (Meta's
Instagram Messaging pages, 2025-2026 editions), met by degrading as Messenger rendering does:

- text is at most 1000 bytes of UTF-8 (Messenger: 2000 characters): a longer text is split at
  paragraph, sentence or word ends so that every part fits in 1000 bytes;
- quick replies: at most 13, titles of 20 characters, text only — as on Messenger;
- templates: the generic template (cards, carousels of up to 10, titles and subtitles of 80
  characters, up to 3 ``web_url`` or ``postback`` buttons) and the button template exist, so cards
  and carousels render as on Messenger (Instagram's web version does not show templates);
- attachments: image, video and audio by URL or attachment id; a ``file`` must be a PDF, so a file
  payload whose URL does not end in ``.pdf`` is sent as its link in a text instead;
- a ``custom`` payload sends its ``instagram`` key as is (the ``messenger`` key is Messenger's).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .rendering import Rendering, _Renderer, absolute_url, render_payload, split_text

MAX_TEXT_BYTES = 1000


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def utf8_prefix(text: str, limit: int) -> str:
    """The longest prefix of whole characters that fits in ``limit`` bytes of UTF-8."""
    return text.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


def is_pdf(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(".pdf")


class InstagramRenderer(_Renderer):
    platform = "Instagram"
    custom_key = "instagram"

    def split(self, text: str) -> list[str]:
        return split_text(text, MAX_TEXT_BYTES, measure=utf8_len, prefix=utf8_prefix)

    def texts(self, text: str) -> list[str]:
        chunks = self.split(text)
        if len(chunks) > 1:
            self.note(f"text of {utf8_len(text)} bytes split into {len(chunks)} messages "
                      f"(Instagram takes {MAX_TEXT_BYTES} bytes)")
        return chunks

    def media(self, payload: dict[str, Any]) -> None:
        url = payload.get("url")
        if payload["type"] != "file" or not isinstance(url, str) or not url.strip():
            super().media(payload)
            return
        link = absolute_url(url, self.options.external_url)
        if is_pdf(link):
            super().media(payload)
            return
        self.note("file payload is not a PDF, the only file Instagram sends: sent as its link")
        title = payload.get("title")
        text = f"{title.strip()}\n{link}" if isinstance(title, str) and title.strip() else link
        for chunk in self.texts(text):
            self.message({"text": chunk})


def render_instagram_payload(payload: dict[str, Any], recipient: str, **options: Any) -> Rendering:
    """Render one standard outgoing payload for ``recipient`` (an Instagram-scoped id)."""
    return render_payload(payload, recipient, renderer_class=InstagramRenderer, **options)
