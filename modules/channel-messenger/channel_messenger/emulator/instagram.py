"""The Graph emulator's Instagram side: accounts linked to Pages, their users, limits and ice breakers.

What Meta's Instagram Messaging (with a linked Facebook Page) looks like from the channel:

- ``GET /{page-id}?fields=instagram_business_account`` answers the linked account's id (``link``);
- a Send API call made with the Page's token to a user of the Page's account (an IGSID the
  emulator delivered a webhook for, or ``add_user``) is an Instagram message: besides Messenger's
  checks it must keep Instagram's limits (text of at most 1000 bytes of UTF-8; generic, button or
  product templates only, with ``web_url``/``postback`` buttons; a ``file`` must be a PDF);
- ``/me/messenger_profile?platform=instagram`` keeps the account's own profile (its ice breakers);
- deliveries are ``{"object": "instagram", "entry": [{"id": <account id>, "messaging": [...]}]}``,
  signed with the app secret like a Page's (``instagram_webhook_body``, ``POST
  /_emulator/instagram/send``).

Errors are raised through the ``error`` factory the emulator passes in (its ``GraphError``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .events import user_event
from .send_checks import check_ice_breakers

DEMO_INSTAGRAM_ACCOUNT = "17841400000000001"  # linked to the demo Page by ``botpress-py messenger emulator``
MAX_TEXT_BYTES = 1000
TEMPLATES = ("generic", "button", "product")
BUTTONS = ("web_url", "postback")
PROFILE_FIELDS = ("ice_breakers",)

ErrorFactory = Callable[..., Exception]


def instagram_event(account_id: str, igsid: str, **what: Any) -> dict[str, Any]:
    """A messaging event from an Instagram user (``text=``, ``postback=`` or ``quick_reply=``, ``title=``):
    Messenger's shape with the IGSID as sender and the account as recipient."""
    return user_event(account_id, igsid, **what)


def instagram_webhook_body(account_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "instagram", "entry": [{"id": str(account_id), "time": int(time.time() * 1000),
                                              "messaging": events}]}


class InstagramAccounts:
    """``accounts``: account id -> ``{"page", "username"}``; ``users``: IGSID -> account id; ``profiles``: account id
    -> its messenger_profile fields."""

    def __init__(self, error: ErrorFactory) -> None:
        self.error = error
        self.accounts: dict[str, dict[str, str]] = {}
        self.users: dict[str, str] = {}
        self.profiles: dict[str, dict[str, Any]] = {}

    def link(self, page_id: str, account_id: str, username: str = "") -> None:
        """Link an Instagram professional account to a Page (one account per Page)."""
        for account, spec in list(self.accounts.items()):
            if spec["page"] == str(page_id):
                del self.accounts[account]
        self.accounts[str(account_id)] = {"page": str(page_id), "username": username or f"account_{account_id}"}

    def add_user(self, account_id: str, igsid: str) -> None:
        """An Instagram user of the account (the emulator adds every user it delivers a webhook for)."""
        self.users[str(igsid)] = str(account_id)

    def note_delivery(self, body: Any) -> None:
        """Every sender of an ``object: "instagram"`` delivery is a user of the entry's account."""
        if not isinstance(body, dict) or body.get("object") != "instagram":
            return
        for entry in body.get("entry") or []:
            account = str(entry.get("id")) if isinstance(entry, dict) else ""
            if account not in self.accounts:
                continue
            for event in entry.get("messaging") or []:
                sender = event.get("sender") if isinstance(event, dict) else None
                if isinstance(sender, dict) and sender.get("id") is not None and str(sender["id"]) != account:
                    self.add_user(account, str(sender["id"]))

    def account_of(self, page_id: str) -> str | None:
        return next((a for a, spec in self.accounts.items() if spec["page"] == str(page_id)), None)

    def page_of(self, account_id: str) -> str | None:
        spec = self.accounts.get(str(account_id))
        return spec["page"] if spec else None

    def platform_of(self, page_id: str, recipient: str) -> str:
        """"instagram" when ``recipient`` is a user of the Page's account, else "messenger"."""
        account = self.users.get(str(recipient))
        return "instagram" if account is not None and account == self.account_of(page_id) else "messenger"

    # -- Graph routes ----------------------------------------------------------------------------
    def route(self, method: str, path: str, page_id: str, page_name: str,
              query: dict[str, str]) -> dict[str, Any] | None:
        """``GET /{page-id}?fields=...`` (the Page's fields, its Instagram account), or None for other paths."""
        if method != "GET" or path != f"/{page_id}":
            return None
        fields = [f for f in query.get("fields", "id,name").split(",") if f]
        answer: dict[str, Any] = {"id": page_id}
        if "name" in fields:
            answer["name"] = page_name
        account = self.account_of(page_id)
        if "instagram_business_account" in fields and account is not None:
            answer["instagram_business_account"] = {"id": account}
        return answer

    def profile(self, method: str, page_id: str, body: Any, query: dict[str, str]) -> dict[str, Any]:
        """``/me/messenger_profile`` with ``platform=instagram``: the linked account's profile."""
        account = self.account_of(page_id)
        if account is None:
            raise self.error(400, 100, "(#100) The Page has no Instagram professional account linked")
        profile = self.profiles.setdefault(account, {})
        if method == "GET":
            fields = [f for f in query.get("fields", "").split(",") if f]
            data = {f: profile[f] for f in fields if f in profile}
            return {"data": [data] if data else []}
        if not isinstance(body, dict):
            raise self.error(400, 100, "(#100) The request body must be a JSON object")
        if method == "DELETE":
            fields = body.get("fields")
            if not isinstance(fields, list) or not fields or any(f not in PROFILE_FIELDS for f in fields):
                raise self.error(400, 100, f"(#100) param fields must be a non-empty list of {list(PROFILE_FIELDS)}")
            for name in fields:
                profile.pop(name, None)
            return {"result": "success"}
        if method != "POST":
            raise self.error(400, 100, f"Unsupported {method} request")
        fields = {k: v for k, v in body.items() if k != "platform"}
        unknown = [k for k in fields if k not in PROFILE_FIELDS]
        if unknown or not fields:
            raise self.error(400, 100, f"(#100) Unknown or missing Instagram profile fields: {unknown}")
        check_ice_breakers(fields["ice_breakers"])
        profile.update(fields)
        return {"result": "success"}

    def check_message(self, platform: str, message: Any) -> None:
        """Instagram's own limits on a Send API message (Messenger's were checked before)."""
        if platform != "instagram" or not isinstance(message, dict):
            return
        text = message.get("text")
        if isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise self.error(400, 100, f"(#100) Length of param message[text] must be at most {MAX_TEXT_BYTES} bytes "
                                       "on Instagram")
        attachment = message.get("attachment")
        if not isinstance(attachment, dict):
            return
        payload = attachment.get("payload") if isinstance(attachment.get("payload"), dict) else {}
        if attachment.get("type") == "file" and payload.get("url") \
                and not str(payload["url"]).split("?", 1)[0].lower().endswith(".pdf"):
            raise self.error(400, 100, "(#100) Instagram sends only PDF files")
        if attachment.get("type") != "template":
            return
        template = payload.get("template_type")
        if template not in TEMPLATES:
            raise self.error(400, 100, f"(#100) template_type {template!r} is not supported on Instagram")
        elements = payload.get("elements") if template == "generic" else [payload]
        for element in elements or []:
            for button in (element.get("buttons") or []) if isinstance(element, dict) else []:
                if not isinstance(button, dict) or button.get("type") not in BUTTONS:
                    raise self.error(400, 100, "(#100) Instagram templates take only web_url and postback buttons")


def add_control_routes(app: web.Application, emulator: Any) -> None:
    """``GET /_emulator/instagram`` and ``POST /_emulator/instagram/send`` (an Instagram user writes) of a
    ``GraphEmulator`` (its ``instagram``, ``post_webhook``, ``collect``; not imported: graph.py imports this)."""
    accounts = emulator.instagram

    async def info(request: web.Request) -> web.Response:
        return web.json_response({"accounts": [{"id": a, **spec, "profile": accounts.profiles.get(a, {})}
                                               for a, spec in accounts.accounts.items()],
                                  "users": accounts.users})

    async def send(request: web.Request) -> web.Response:
        """``{account?, psid, text | postback | quick_reply, title?, server?, bot?, wait?, timeout?, settle?}``: the
        emulator signs an ``object: "instagram"`` delivery and posts it; ``wait``: also the bot's replies."""
        try:
            spec = await request.json()
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            linked = sorted(accounts.accounts)
            account = str(spec.get("account") or (linked[0] if len(linked) == 1 else ""))
            page_id = accounts.page_of(account)
            if page_id is None:
                raise ValueError(f"account must be one of the linked Instagram accounts {linked}")
            psid = str(spec.get("psid") or "")
            if not re.fullmatch(r"[0-9]{1,64}", psid):
                raise ValueError("psid (the user's Instagram-scoped id, digits) is required")
            event = instagram_event(account, psid, text=spec.get("text"), postback=spec.get("postback"),
                                    quick_reply=spec.get("quick_reply"), title=spec.get("title"))
            timeout, settle = float(spec.get("timeout", 10.0)), float(spec.get("settle", 1.0))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        bot = str(spec.get("bot") or "___")

        async def post(server: str) -> tuple[int, str]:
            accounts.add_user(account, psid)
            return await emulator.post_webhook(server, page_id, [], bot=bot,
                                               body=instagram_webhook_body(account, [event]))

        return await emulator.post_and_answer(spec, post, event=event, psid=psid, page_id=page_id,
                                              timeout=timeout, settle=settle)

    app.router.add_get("/_emulator/instagram", info)
    app.router.add_post("/_emulator/instagram/send", send)
