"""How a thread's owner reads to people: log lines, failed-send reasons, the admin API's view, and
handover metadata as Meta takes it (handover.py keeps the owners themselves)."""

from __future__ import annotations

import json
import time
from typing import Any

from .settings import PAGE_INBOX_APP_ID

ANOTHER_APP = "another app"
RELEASED = "released"
MAX_METADATA = 1000

Owner = dict[str, Any]  # {"owner": app id | "another app" | "released", "since": ms, "reason": str}


def describe(owner: Owner) -> str:
    """A sentence for logs and failed-send reasons (no user data)."""
    who = owner.get("owner") or ANOTHER_APP
    if owner.get("until"):
        person = "a person in the Page Inbox" if who == PAGE_INBOX_APP_ID else f"a person using app {who}"
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(owner["until"]) / 1000))
        return f"{person} answered the user (human takeover): the bot is paused for them until {until}"
    if who == RELEASED:
        return "the bot released the conversation (thread control) and has not got it back"
    name = "the Page Inbox" if who == PAGE_INBOX_APP_ID else who if who == ANOTHER_APP else f"app {who}"
    return f"the conversation is handed over to {name} ({owner.get('reason') or 'handover'})"


def owner_view(owner: Owner | None) -> dict[str, Any]:
    """``{"app": "bot"}`` while the bot answers; otherwise the owner, since when and why (the admin API's view)."""
    if owner is None:
        return {"app": "bot"}
    app = owner.get("owner")
    view = {"app": "none" if app == RELEASED else app, "since": owner.get("since"), "reason": owner.get("reason"),
            "description": describe(owner)}
    if owner.get("until"):
        view["pausedUntil"] = owner["until"]
    return view


def metadata_text(value: Any) -> str | None:
    """Handover metadata as Meta wants it: a string of at most 1000 characters (objects as JSON).

    Raises ValueError (saying why) when it is longer.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if len(text) > MAX_METADATA:
        raise ValueError(f"at most {MAX_METADATA} characters (objects count as their JSON)")
    return text
