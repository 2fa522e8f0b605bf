"""Helpers for the Instagram tests: accounts linked to the emulator's Pages, deliveries as Meta makes them."""

from __future__ import annotations

import time
from typing import Any

from channel_messenger.emulator import GraphEmulator
from channel_messenger.emulator.instagram import instagram_webhook_body
from messenger_testkit import FakeMeta

ACCOUNT_A, ACCOUNT_B = "17841400000000101", "17841400000000202"
SERVER_NAMESPACE = "channel-messenger:server"


def ig_message(account: str, igsid: str, text: str, mid: str, **extra: Any) -> dict[str, Any]:
    """A message an Instagram user writes to the account (Messenger's shape, other ids)."""
    return {"sender": {"id": igsid}, "recipient": {"id": account}, "timestamp": int(time.time() * 1000),
            "message": {"mid": mid, "text": text, **extra}}


def ig_postback(account: str, igsid: str, payload: str, title: str, mid: str) -> dict[str, Any]:
    return {"sender": {"id": igsid}, "recipient": {"id": account}, "timestamp": int(time.time() * 1000),
            "postback": {"mid": mid, "title": title, "payload": payload}}


async def ig_say(meta: FakeMeta, emulator: GraphEmulator, account: str, igsid: str, text: str, mid: str,
                 **options: Any) -> int:
    """Deliver one Instagram message, signed like Meta; the emulator learns the user is an Instagram one."""
    emulator.instagram.add_user(account, igsid)
    status, _ = await meta.post(instagram_webhook_body(account, [ig_message(account, igsid, text, mid)]), **options)
    return status


def sent_to(emulator: GraphEmulator, recipient: str) -> list[dict[str, Any]]:
    """Accepted Send API bodies (messages and sender actions) to one recipient, in order."""
    return [c["json"] for c in emulator.calls if c["accepted"] and c["path"].endswith("/messages")
            and (c["json"] or {}).get("recipient", {}).get("id") == recipient]


def messages_to(emulator: GraphEmulator, recipient: str) -> list[dict[str, Any]]:
    return [b for b in sent_to(emulator, recipient) if "message" in b]


def uploads(emulator: GraphEmulator) -> list[dict[str, Any]]:
    return [c for c in emulator.calls if c["path"].endswith("/message_attachments")]
