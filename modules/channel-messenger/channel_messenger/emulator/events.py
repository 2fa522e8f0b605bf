"""Webhook deliveries as Meta makes them: a user's messaging events, the body around them, its signature."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from ..signature import signature_headers

WEBHOOK_PATH = "/api/v1/bots/{bot}/mod/channel-messenger/webhook"


def made_up_profile(psid: str) -> dict[str, Any]:
    """The profile the command-line emulator gives any user it does not know."""
    return {"first_name": "Test", "last_name": f"User {psid[-4:]}", "locale": "en_US", "timezone": 0,
            "profile_pic": f"https://example.com/emulator/{psid}.png"}


def user_event(page_id: str, psid: str, *, text: Any = None, postback: Any = None, quick_reply: Any = None,
               title: Any = None) -> dict[str, Any]:
    """One messaging event from a user: a typed ``text``, a ``postback`` tap or a ``quick_reply`` tap.

    A quick reply arrives as a message whose text is the reply's ``title`` (Messenger shows it
    as typed) plus ``quick_reply.payload``; a postback carries the button's ``title``.
    """
    given = [k for k, v in (("text", text), ("postback", postback), ("quick_reply", quick_reply)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of text, postback and quick_reply")
    now = int(time.time() * 1000)
    content = str(text if text is not None else postback if postback is not None else quick_reply)
    if not content:
        raise ValueError(f"{given[0]} must not be empty")
    mid = f"m_{psid}_{now}_{hashlib.sha1(f'{given[0]}:{content}:{time.time_ns()}'.encode()).hexdigest()[:10]}"
    event: dict[str, Any] = {"sender": {"id": str(psid)}, "recipient": {"id": str(page_id)}, "timestamp": now}
    if text is not None:
        event["message"] = {"mid": mid, "text": content}
    elif postback is not None:
        event["postback"] = {"mid": mid, "title": str(title or content), "payload": content}
    else:
        event["message"] = {"mid": mid, "text": str(title or content), "quick_reply": {"payload": content}}
    return event


def user_message(page_id: str, psid: str, text: str, mid: str | None = None) -> dict[str, Any]:
    """A messaging event as Meta sends it when ``psid`` writes ``text`` to the Page."""
    now = int(time.time() * 1000)
    return {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": now,
            "message": {"mid": mid or f"m_{psid}_{now}_{hashlib.sha1(text.encode()).hexdigest()[:8]}",
                        "text": text}}


def webhook_body(page_id: str, events: list[dict[str, Any]], *, standby: bool = False) -> dict[str, Any]:
    """A delivery of one Page's events (``standby``: events of a conversation another app owns)."""
    return {"object": "page", "entry": [{"id": page_id, "time": int(time.time() * 1000),
                                         "standby" if standby else "messaging": events}]}


def signed(body: dict[str, Any] | bytes, app_secret: str) -> tuple[bytes, dict[str, str]]:
    """(raw body, headers) of a webhook delivery signed like Meta does."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, {"Content-Type": "application/json", **signature_headers(app_secret, raw)}
