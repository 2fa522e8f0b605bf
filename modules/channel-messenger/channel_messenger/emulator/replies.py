"""When is a bot's turn over? Deciding it from the Send API calls the emulator recorded.

A bot answers a message with any number of Send API calls, with typing pauses and retries
in between, and nothing says "done". ``ReplyCollector`` is fed the emulator's call records
(in the emulator process, or read over ``GET /_emulator/calls`` by ``botpress-py messenger
simulate``/``chat``) and decides: the turn is over once a reply came and the bot has been
quiet for ``settle`` seconds, while no typing indicator is on and no failed send awaits its
retry; without any reply, after ``timeout`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

MAX_TYPING = 25.0  # seconds a typing indicator may stay on (typing payloads pause at most 20 s)
RETRY_SETTLE = 6.0  # seconds to wait after a failed send: the channel's backoff is at most 4 s


def recipient_of(call: dict[str, Any]) -> str | None:
    body = call.get("json")
    recipient = body.get("recipient") if isinstance(body, dict) else None
    return str(recipient.get("id")) if isinstance(recipient, dict) and recipient.get("id") is not None else None


def is_send_call(call: dict[str, Any]) -> bool:
    return call.get("method") == "POST" and str(call.get("path", "")).endswith("/messages")


class ReplyCollector:
    """The Send API calls of one bot turn to one user (``psid``) of one Page (``page``, None: any)."""

    def __init__(self, psid: str, page: str | None = None, *, timeout: float = 10.0, settle: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.psid = str(psid)
        self.page = page
        self.timeout = timeout
        self.settle = settle
        self.clock = clock
        self.started = clock()
        self.records: list[dict[str, Any]] = []
        self.got_reply = False  # a message was accepted, or refused by the emulator (not a planned fault)
        self.typing = False
        self.retry_pending = False
        self.last_activity: float | None = None

    def concerns(self, call: dict[str, Any]) -> bool:
        if not is_send_call(call) or recipient_of(call) != self.psid:
            return False
        return self.page is None or call.get("page") in (None, self.page)

    def feed(self, calls: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take new call records (in order); returns the ones of this turn."""
        mine = [c for c in calls if self.concerns(c)]
        for call in mine:
            self.records.append(call)
            self.last_activity = self.clock()
            body = call.get("json") or {}
            if not call.get("accepted"):
                # A planned fault is retried by the channel; a refusal is the bot's answer, and final.
                self.retry_pending = bool(call.get("fault"))
                if not call.get("fault") and "message" in body:
                    self.got_reply = True
                continue
            self.retry_pending = False
            action = body.get("sender_action")
            if action == "typing_on":
                self.typing = True
            elif action == "typing_off":
                self.typing = False
            elif "message" in body:
                self.typing = False
                self.got_reply = True
        return mine

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Accepted message bodies of the turn (sender actions left out)."""
        return [c["json"] for c in self.records if c.get("accepted") and "message" in (c.get("json") or {})]

    @property
    def refused(self) -> list[dict[str, Any]]:
        """Sends the emulator refused as Meta would (planned faults left out)."""
        return [c for c in self.records if not c.get("accepted") and not c.get("fault")]

    def _quiet_needed(self) -> float:
        if self.typing:
            return MAX_TYPING
        if self.retry_pending:
            return max(self.settle, RETRY_SETTLE)
        return self.settle

    def done(self) -> bool:
        now = self.clock()
        if not self.got_reply:
            if now - self.started >= self.timeout:
                return True
            # Retries or typing that started before the timeout may still bring the first reply.
            return False
        assert self.last_activity is not None
        return now - self.last_activity >= self._quiet_needed()

    @property
    def timed_out(self) -> bool:
        return not self.got_reply

    def wait_hint(self) -> float:
        """Seconds until ``done()`` may turn true if nothing else arrives."""
        now = self.clock()
        if not self.got_reply:
            return self.started + self.timeout - now
        assert self.last_activity is not None
        return self.last_activity + self._quiet_needed() - now
