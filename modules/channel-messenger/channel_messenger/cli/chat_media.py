"""What the terminal chat sends besides typed text: a reaction to the bot's last message (``/react 👍``) and a
photo (``/image URL-or-path``), built as Meta delivers them (emulator/activity.py).

A photo named by a path is read here (at most ``MAX_FILE_BYTES``) and hosted by the emulator, like Meta's CDN
hosts what a user sends; a URL is sent as it is; nothing named sends the emulator's sample picture.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..emulator.activity import attachment_event, reaction_event
from ..emulator.events import user_event

MAX_FILE_BYTES = 25 * 1024 * 1024  # Messenger's own attachment limit


class ChatInputError(ValueError):
    """A chat command that cannot be sent as typed; the chat says why and goes on."""


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def read_media_file(name: str) -> tuple[bytes, str, str]:
    """(bytes, content type, file name) of a local file to send as a photo."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise ChatInputError(f"no file {name}: give a URL (https://...) or the path of an image")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ChatInputError(f"{name} is {size} bytes: Messenger takes at most {MAX_FILE_BYTES}")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.read_bytes(), content_type, path.name


def chat_event(page_id: str, psid: str, request: dict[str, Any], *, image_url: Callable[[str], str]) -> dict[str, Any]:
    """The messaging event a chat request stands for. ``image_url`` turns what ``/image`` named into a URL."""
    if "react" in request:
        mid = request.get("mid")
        if not mid:
            raise ChatInputError("nothing to react to yet: the bot has not written")
        return reaction_event(page_id, psid, str(mid), str(request["react"]))
    if "image" in request:
        return attachment_event(page_id, psid, image_url(str(request["image"] or "")), "image")
    return user_event(page_id, psid, **{k: v for k, v in request.items()
                                        if k in ("text", "postback", "quick_reply", "title")})
