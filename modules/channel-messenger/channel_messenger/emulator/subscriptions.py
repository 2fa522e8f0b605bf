"""The emulator's Page webhook subscriptions (``/{page-id}/subscribed_apps``), as Meta keeps them per Page and app.

- ``GET /{page-id}/subscribed_apps``: ``{"data": [{"id", "name", "subscribed_fields": [...]}]}`` for the
  apps subscribed to the Page (here: the emulator's one app, ``APP_ID``);
- ``POST /{page-id}/subscribed_apps?subscribed_fields=a,b``: subscribes the token's app to those fields
  (replacing its previous list, as Meta does) and answers ``{"success": true}``;
- ``DELETE /{page-id}/subscribed_apps``: unsubscribes it.

A Page starts subscribed to every field the emulator can deliver, so the usual runs pass the doctor;
a test unsubscribes it (the Graph ``DELETE``, or ``set_fields``) to see the check fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

APP_ID = "555000111222333"
APP_NAME = "botpress-py emulated app"
# What Meta may deliver to a Messenger webhook, as far as the channel reads it.
WEBHOOK_FIELDS = ("messages", "messaging_postbacks", "messaging_optins", "message_deliveries", "message_reads",
                  "message_echoes", "message_reactions", "message_edits", "messaging_handovers",
                  "messaging_referrals", "standby", "feed")


class PageSubscriptions:
    def __init__(self, error: Callable[..., Exception]) -> None:
        self._error = error
        self._fields: dict[str, list[str]] = {}  # page id -> the fields our app is subscribed to ([]: none)

    def fields(self, page_id: str) -> list[str]:
        return list(self._fields.get(page_id, WEBHOOK_FIELDS))

    def set_fields(self, page_id: str, fields: list[str]) -> None:
        """Subscribe the app to exactly these fields of the Page ([]: unsubscribed)."""
        self._fields[page_id] = list(fields)

    def route(self, method: str, path: str, page_id: str, query: dict[str, str]) -> dict[str, Any] | None:
        if path != f"/{page_id}/subscribed_apps" and path != "/me/subscribed_apps":
            return None
        if method == "GET":
            fields = self.fields(page_id)
            return {"data": [{"id": APP_ID, "name": APP_NAME, "subscribed_fields": fields}] if fields else []}
        if method == "DELETE":
            self._fields[page_id] = []
            return {"success": True}
        if method == "POST":
            wanted = [f.strip() for f in query.get("subscribed_fields", "").split(",") if f.strip()]
            if not wanted:
                raise self._error(400, 100, "(#100) The parameter subscribed_fields is required")
            unknown = [f for f in wanted if f not in WEBHOOK_FIELDS]
            if unknown:
                raise self._error(400, 100, f"(#100) Param subscribed_fields[{unknown[0]}] must be one of "
                                  f"{{{', '.join(WEBHOOK_FIELDS)}}}")
            self._fields[page_id] = wanted
            return {"success": True}
        raise self._error(400, 100, f"Unsupported {method} request")
