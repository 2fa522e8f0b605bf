"""The Graph emulator's conversation routing (handover), cross-Page identities and profile permissions.

State the emulator keeps per Page and user, and the Graph routes that read and change it:

- ``POST /{page}/pass_thread_control | take_thread_control | request_thread_control |
  release_thread_control`` with Meta's rules: only the thread owner passes or releases,
  only the Primary Receiver (the app whose Page tokens call the emulator) takes;
- the Send API refuses messages to a thread another app owns (code 10, subcode 2018300);
- ``GET /{psid}/ids_for_pages`` lists one person's PSIDs on the Pages of the business,
  with cursor paging (``limit``, ``after``);
- ``GET /{psid}?fields=...`` refuses fields the Page was not granted (code 200, as Meta
  does for ``gender``, ``locale`` and ``timezone`` without the matching permission).

Errors are raised through the ``error`` factory the emulator passes in (its ``GraphError``),
so this file does not import the emulator.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

PAGE_INBOX_APP_ID = "263902037430900"
DEFAULT_APP_ID = "1000000000001"  # the bot's own app (the Primary Receiver) in the emulator
BASIC_PROFILE_FIELDS = frozenset({"id", "first_name", "last_name", "name", "profile_pic"})
# What a Page may read without asking for more: the rest needs pages_user_<field>.
THREAD_ACTIONS = ("pass_thread_control", "take_thread_control", "request_thread_control", "release_thread_control")
NOT_OWNER_SUBCODE = 2018300

ErrorFactory = Callable[..., Exception]


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"i:{index}".encode()).decode().rstrip("=")


def _index(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        text = base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return -1
    return int(text[2:]) if text.startswith("i:") and text[2:].isdigit() else -1


class ConversationRouting:
    """Thread owners, people with ids on several Pages, and per-Page profile permissions.

    ``app_id`` is the app calling the emulator with its Page tokens; it is every Page's Primary
    Receiver, and owns each thread until it passes it. ``apps`` are the app ids Meta would accept
    as ``target_app_id`` (the bot's app, the Page Inbox, and any added with ``add_app``).
    """

    def __init__(self, error: ErrorFactory, *, app_id: str = DEFAULT_APP_ID) -> None:
        self.error = error
        self.app_id = app_id
        self.apps: dict[str, str] = {app_id: "Bot app", PAGE_INBOX_APP_ID: "Page Inbox"}
        self.owners: dict[tuple[str, str], str | None] = {}  # missing: our app; None: idle (released)
        self.requests: list[dict[str, Any]] = []
        self.people: dict[str, dict[str, str]] = {}  # psid -> {page id: psid} of the same person
        self.granted_fields: dict[str, set[str]] = {}  # page id -> extra profile fields it may read
        self.ids_page_size = 25

    # -- setup ----------------------------------------------------------------------------------
    def add_app(self, app_id: str, name: str = "") -> None:
        self.apps[str(app_id)] = name or f"App {app_id}"

    def add_person(self, ids: dict[str, str]) -> None:
        """One person known by ``{page id: psid}`` on several Pages of the business."""
        person = {str(page): str(psid) for page, psid in ids.items()}
        for psid in person.values():
            self.people[psid] = person

    def grant_fields(self, page_id: str, fields: set[str] | frozenset[str] | list[str]) -> None:
        """Restrict the Page to the basic profile fields plus ``fields`` (e.g. ``{"locale"}``)."""
        self.granted_fields[str(page_id)] = set(fields)

    def owner(self, page_id: str, psid: str) -> str | None:
        """The app that owns the thread (None when idle after a release)."""
        return self.owners.get((str(page_id), str(psid)), self.app_id)

    def set_owner(self, page_id: str, psid: str, app_id: str | None) -> None:
        """Make ``app_id`` the thread owner (as if it took or was passed control)."""
        self.owners[(str(page_id), str(psid))] = None if app_id is None else str(app_id)

    # -- checks used by the emulator's other routes ---------------------------------------------
    def check_send(self, page_id: str, psid: str) -> None:
        """The Send API is the thread owner's (an idle thread goes back to the Primary Receiver)."""
        owner = self.owner(page_id, psid)
        if owner is not None and owner != self.app_id:
            raise self.error(400, 10, "(#10) This app does not own the thread: another app has thread control "
                                      f"(app {owner})", subcode=NOT_OWNER_SUBCODE)

    def check_profile_fields(self, page_id: str, fields: list[str]) -> None:
        granted = self.granted_fields.get(str(page_id))
        if granted is None:
            return
        refused = [f for f in fields if f not in BASIC_PROFILE_FIELDS and f not in granted]
        if refused:
            raise self.error(400, 200, f"(#200) Requires pages_user_{refused[0]} permission to request "
                                       f"the field {refused[0]}", error_type="OAuthException")

    # -- routes ----------------------------------------------------------------------------------
    def route(self, method: str, path: str, page_id: str, pages: dict[str, str], body: Any,
              query: dict[str, str], base_url: str = "") -> dict[str, Any] | None:
        """Answer a routing or identity call, or None when ``path`` is not one of them."""
        match = re.fullmatch(r"/([0-9]+|me)/(" + "|".join(THREAD_ACTIONS) + ")", path)
        if match:
            if method != "POST":
                raise self.error(400, 100, f"Unsupported {method} request")
            if match.group(1) not in ("me", page_id):
                raise self.error(400, 100, "(#100) The Page of the access token differs from the Page in the path")
            return self._thread_action(match.group(2), page_id, body)
        match = re.fullmatch(r"/([0-9]+)/ids_for_pages", path)
        if match:
            if method != "GET":
                raise self.error(400, 100, f"Unsupported {method} request")
            return self._ids_for_pages(match.group(1), page_id, pages, query, base_url)
        return None

    def _recipient(self, body: Any) -> str:
        recipient = body.get("recipient") if isinstance(body, dict) else None
        psid = recipient.get("id") if isinstance(recipient, dict) else None
        if not psid:
            raise self.error(400, 100, "(#100) The parameter recipient is required")
        return str(psid)

    def _metadata(self, body: dict[str, Any]) -> None:
        metadata = body.get("metadata")
        if metadata is not None and (not isinstance(metadata, str) or len(metadata) > 1000):
            raise self.error(400, 100, "(#100) param metadata must be a string of at most 1000 characters")

    def _thread_action(self, action: str, page_id: str, body: Any) -> dict[str, Any]:
        psid = self._recipient(body)
        assert isinstance(body, dict)
        self._metadata(body)
        owner = self.owner(page_id, psid)
        if action == "pass_thread_control":
            target = str(body.get("target_app_id") or "")
            if target not in self.apps:
                raise self.error(400, 100, "(#100) param target_app_id must be the id of an app connected to "
                                           "the Page")
            if owner not in (self.app_id, None):
                raise self.error(400, 10, f"(#10) Only the thread owner can pass thread control (app {owner} "
                                          "owns it)", subcode=NOT_OWNER_SUBCODE)
            self.set_owner(page_id, psid, target)
        elif action == "take_thread_control":
            # Our app is the Primary Receiver: it may take control from any app.
            self.set_owner(page_id, psid, self.app_id)
        elif action == "request_thread_control":
            if owner in (self.app_id, None):
                raise self.error(400, 10, "(#10) The app already owns the thread", subcode=NOT_OWNER_SUBCODE)
            self.requests.append({"page": page_id, "psid": psid, "owner": owner, "metadata": body.get("metadata"),
                                  "time": time.time()})
        else:  # release_thread_control
            if owner != self.app_id:
                raise self.error(400, 10, "(#10) Only the thread owner can release thread control",
                                 subcode=NOT_OWNER_SUBCODE)
            self.set_owner(page_id, psid, None)
        return {"success": True}

    def _ids_for_pages(self, psid: str, page_id: str, pages: dict[str, str], query: dict[str, str],
                       base_url: str) -> dict[str, Any]:
        person = self.people.get(psid)
        if person is None or person.get(page_id) != psid:
            raise self.error(400, 100, f"Unsupported get request. Object with ID '{psid}' does not exist, cannot "
                                       "be loaded due to missing permissions, or does not support this operation",
                             subcode=33, error_type="GraphMethodException")
        ids = [{"id": other, "page": {"id": page, "name": pages.get(page, f"Page {page}")}}
               for page, other in sorted(person.items())]
        try:
            limit = max(1, min(int(query.get("limit") or self.ids_page_size), 100))
        except ValueError:
            raise self.error(400, 100, "(#100) param limit must be an integer") from None
        start = _index(query["after"]) + 1 if query.get("after") else 0
        if (query.get("after") and start <= 0) or start > len(ids):
            raise self.error(400, 100, "(#100) Invalid cursor")
        chunk = ids[start:start + limit]
        answer: dict[str, Any] = {"data": chunk}
        if chunk:
            answer["paging"] = {"cursors": {"before": _cursor(start), "after": _cursor(start + len(chunk) - 1)}}
            if start + len(chunk) < len(ids):
                answer["paging"]["next"] = (f"{base_url}/{psid}/ids_for_pages?limit={limit}"
                                            f"&after={_cursor(start + len(chunk) - 1)}")
        return answer


def handover_event(page_id: str, psid: str, action: str, **detail: Any) -> dict[str, Any]:
    """A handover webhook event (``pass_thread_control``, ``take_thread_control``, ``request_thread_control``,
    ``app_roles``) as Meta delivers it; ``detail`` is its body (``new_owner_app_id``, ``metadata``, …)."""
    return {"sender": {"id": str(psid)}, "recipient": {"id": str(page_id)}, "timestamp": int(time.time() * 1000),
            action: detail}
