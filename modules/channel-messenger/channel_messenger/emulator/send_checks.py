"""Meta's documented limits on what the Send API and the Messenger Profile API accept.

Anything over them is answered with error #100, as Meta does, so a channel that would send
something Messenger refuses is caught by its tests, not by its users.
"""

from __future__ import annotations

import re
from typing import Any

from .faults import GraphError

PROFILE_FIELDS = ("greeting", "get_started", "persistent_menu", "ice_breakers", "whitelisted_domains")
SENDER_ACTIONS = ("typing_on", "typing_off", "mark_seen")
MESSAGING_TYPES = ("RESPONSE", "UPDATE", "MESSAGE_TAG", "UTILITY")


def _units(text: str) -> int:
    """Characters as Messenger's clients count them (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _param(message: str) -> GraphError:
    return GraphError(400, 100, f"(#100) {message}")


def check_buttons(buttons: Any, where: str) -> None:
    if not isinstance(buttons, list) or not buttons:
        raise _param(f"{where} buttons must be a non-empty list")
    if len(buttons) > 3:
        raise _param(f"{where} buttons should be less than or equal to 3")
    for button in buttons:
        if not isinstance(button, dict) or button.get("type") not in ("web_url", "postback", "phone_number",
                                                                        "account_link", "account_unlink",
                                                                        "game_play"):
            raise _param(f"{where} button type is invalid")
        title = button.get("title")
        if button["type"] in ("web_url", "postback", "phone_number") and (not isinstance(title, str) or not title):
            raise _param(f"{where} button title is required")
        if isinstance(title, str) and _units(title) > 20:
            raise _param(f"{where} button title has more than 20 characters")
        if button["type"] == "web_url" and not button.get("url"):
            raise _param(f"{where} web_url button requires url")
        if button["type"] == "postback":
            payload = button.get("payload")
            if not isinstance(payload, str) or not payload:
                raise _param(f"{where} postback button requires payload")
            if _units(payload) > 1000:
                raise _param(f"{where} button payload has more than 1000 characters")


def check_message(message: Any) -> None:
    """Meta's documented Send API limits; anything over them is an error #100."""
    if not isinstance(message, dict):
        raise _param("param message must be an object")
    text, attachment = message.get("text"), message.get("attachment")
    if (text is None) == (attachment is None):
        raise _param("Exactly one of text and attachment must be set in message")
    if text is not None:
        if not isinstance(text, str) or not text:
            raise _param("param message[text] must be a non-empty UTF-8 encoded string")
        if _units(text) > 2000:
            raise _param("Length of param message[text] must be less than or equal to 2000")
    quick_replies = message.get("quick_replies")
    if quick_replies is not None:
        if not isinstance(quick_replies, list) or not quick_replies:
            raise _param("param message[quick_replies] must be a non-empty array")
        if len(quick_replies) > 13:
            raise _param("param message[quick_replies] must have at most 13 elements")
        for reply in quick_replies:
            kind = reply.get("content_type") if isinstance(reply, dict) else None
            if kind not in ("text", "user_phone_number", "user_email"):
                raise _param("quick_replies content_type must be text, user_phone_number or user_email")
            if kind == "text":
                title, payload = reply.get("title"), reply.get("payload")
                if not isinstance(title, str) or not title:
                    raise _param("quick_replies title is required for text quick replies")
                if _units(title) > 20:
                    raise _param("quick_replies title has more than 20 characters")
                if not isinstance(payload, str | int) or str(payload) == "":
                    raise _param("quick_replies payload is required for text quick replies")
                if _units(str(payload)) > 1000:
                    raise _param("quick_replies payload has more than 1000 characters")
    if attachment is not None:
        check_attachment(attachment)


def check_attachment(attachment: Any) -> None:
    if not isinstance(attachment, dict):
        raise _param("param message[attachment] must be an object")
    kind, payload = attachment.get("type"), attachment.get("payload")
    if kind in ("image", "audio", "video", "file"):
        if not isinstance(payload, dict) or not (payload.get("url") or payload.get("attachment_id")):
            raise _param(f"{kind} attachment requires payload.url or payload.attachment_id")
        url = payload.get("url")
        if url and not re.match(r"^https?://", str(url)):
            raise _param(f"{kind} attachment url must be an http(s) URL")
        return
    if kind != "template" or not isinstance(payload, dict):
        raise _param("param message[attachment][type] must be one of image, audio, video, file, template")
    template = payload.get("template_type")
    if template == "generic":
        elements = payload.get("elements")
        if not isinstance(elements, list) or not elements:
            raise _param("generic template elements must be a non-empty array")
        if len(elements) > 10:
            raise _param("Param elements[] must be less than or equal to 10")
        for element in elements:
            title = element.get("title") if isinstance(element, dict) else None
            if not isinstance(title, str) or not title:
                raise _param("generic template element title is required")
            if _units(title) > 80:
                raise _param("generic template element title has more than 80 characters")
            subtitle = element.get("subtitle")
            if subtitle is not None and (not isinstance(subtitle, str) or _units(subtitle) > 80):
                raise _param("generic template element subtitle has more than 80 characters")
            if "buttons" in element:
                check_buttons(element["buttons"], "generic template element")
        return
    if template == "button":
        text = payload.get("text")
        if not isinstance(text, str) or not text or _units(text) > 640:
            raise _param("button template text is required and at most 640 characters")
        check_buttons(payload.get("buttons"), "button template")
        return
    if template in ("media", "receipt", "customer_feedback", "product"):
        return
    raise _param(f"unsupported template_type {template!r}")


def _locales(items: list[Any], what: str) -> None:
    locales = [item.get("locale") for item in items]
    if "default" not in locales:
        raise _param(f"{what} needs an entry with locale default")
    if len(set(locales)) != len(locales):
        raise _param(f"{what} gives a locale more than once")


def check_ice_breakers(value: Any) -> None:
    """Meta's localized ice breakers: [{call_to_actions: [{question, payload}] (1 to 4), locale}], a default one."""
    if not isinstance(value, list) or not value:
        raise _param("ice_breakers must be a non-empty array")
    if not all(isinstance(item, dict) and "call_to_actions" in item for item in value):
        raise _param("ice_breakers must use the localized format: [{call_to_actions, locale}]")
    _locales(value, "ice_breakers")
    for item in value:
        actions = item.get("call_to_actions")
        if not isinstance(actions, list) or not 1 <= len(actions) <= 4:
            raise _param("ice_breakers call_to_actions must have 1 to 4 questions")
        for action in actions:
            if not isinstance(action, dict) or not isinstance(action.get("question"), str) \
                    or not action["question"] or not isinstance(action.get("payload"), str) or not action["payload"]:
                raise _param("each ice breaker needs a question and a payload")
            if _units(action["payload"]) > 1000:
                raise _param("ice breaker payload has more than 1000 characters")


def check_whitelisted_domains(value: Any) -> None:
    if not isinstance(value, list) or not value or len(value) > 50:
        raise _param("whitelisted_domains must be an array of 1 to 50 domains")
    for domain in value:
        host = re.match(r"^https://([^/:]+)", domain) if isinstance(domain, str) else None
        if host is None or host.group(1) == "localhost" or re.fullmatch(r"[0-9.]+", host.group(1)):
            raise _param("whitelisted_domains must be https URLs with a domain name (no IP address, no localhost)")


def check_profile(body: dict[str, Any], *, has_get_started: bool) -> None:
    greeting = body.get("greeting")
    if greeting is not None:
        if not isinstance(greeting, list) or not greeting:
            raise _param("greeting must be a non-empty array")
        for item in greeting:
            if not isinstance(item, dict) or not item.get("locale") or not isinstance(item.get("text"), str):
                raise _param("each greeting needs locale and text")
            if _units(item["text"]) > 160:
                raise _param("greeting text must be at most 160 characters")
        _locales(greeting, "greeting")
    if body.get("ice_breakers") is not None:
        check_ice_breakers(body["ice_breakers"])
    if body.get("whitelisted_domains") is not None:
        check_whitelisted_domains(body["whitelisted_domains"])
    get_started = body.get("get_started")
    if get_started is not None and (not isinstance(get_started, dict) or not get_started.get("payload")):
        raise _param("get_started needs a payload")
    menu = body.get("persistent_menu")
    if menu is not None:
        if not has_get_started:
            raise GraphError(400, 100, "(#100) You must set a Get Started button if you also wish to use "
                             "persistent menu.")
        if not isinstance(menu, list) or not menu:
            raise _param("persistent_menu must be a non-empty array")
        if not any(isinstance(m, dict) and m.get("locale") == "default" for m in menu):
            raise _param("persistent_menu needs a menu with locale default")
        for item in menu:
            actions = item.get("call_to_actions") if isinstance(item, dict) else None
            if not isinstance(actions, list) or not actions or len(actions) > 20:
                raise _param("persistent_menu call_to_actions must have 1 to 20 items")
            for action in actions:
                if not isinstance(action, dict) or action.get("type") not in ("web_url", "postback"):
                    raise _param("persistent_menu items must be web_url or postback")
                if not action.get("title") or _units(str(action["title"])) > 30:
                    raise _param("persistent_menu item title is required and at most 30 characters")

