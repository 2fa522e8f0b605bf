"""The Messenger webhook: Meta's verification handshake (GET) and signed event deliveries (POST).

Served both per bot (``/api/v1/bots/<botId>/mod/channel-messenger/webhook``) and for any bot
(``/api/v1/bots/___/mod/channel-messenger/webhook``, entries routed by Page id). A POST is
trusted only through its signature: an entry is dispatched to a bot only when that bot's
appSecret produced the signature, so one Facebook App cannot inject events for another
App's Page even when both are served by this server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from botpress_py.sdk import IOEvent

from .incoming import map_entry
from .pages import PageBinding, PageRegistry

log = logging.getLogger("botpress_py.module.channel-messenger.webhook")

SIGNATURE_SHA256 = "X-Hub-Signature-256"
SIGNATURE_SHA1 = "X-Hub-Signature"

Deliver = Callable[[PageBinding, list[IOEvent]], Awaitable[None]]


def signature_headers(app_secret: str, raw: bytes) -> dict[str, str]:
    """The headers Meta sends with a delivery (used by the emulator and the simulate command)."""
    key = app_secret.encode()
    return {
        SIGNATURE_SHA256: "sha256=" + hmac.new(key, raw, hashlib.sha256).hexdigest(),
        SIGNATURE_SHA1: "sha1=" + hmac.new(key, raw, hashlib.sha1).hexdigest(),
    }


def _presented_signature(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(algorithm, hex digest) from the strongest signature header present, or None."""
    for header, algorithm in ((SIGNATURE_SHA256, "sha256"), (SIGNATURE_SHA1, "sha1")):
        value = headers.get(header)
        if value:
            prefix, _, digest = value.strip().partition("=")
            # A sha256 header that is malformed must not fall back to the weaker sha1 one.
            if prefix.lower() != algorithm or not digest:
                return algorithm, ""
            return algorithm, digest.strip().lower()
    return None


def matching_secrets(raw: bytes, headers: Mapping[str, str], secrets: Iterable[str]) -> set[str]:
    """The app secrets whose HMAC of ``raw`` equals the presented signature (constant-time compares)."""
    presented = _presented_signature(headers)
    if presented is None or not presented[1]:
        return set()
    algorithm, digest = presented
    digestmod = "sha256" if algorithm == "sha256" else "sha1"
    valid: set[str] = set()
    presented_digest = digest.encode("ascii", "replace")
    for secret in secrets:
        if not secret:
            continue
        expected = hmac.digest(secret.encode(), raw, digestmod).hex().encode()
        if hmac.compare_digest(expected, presented_digest):
            valid.add(secret)
    return valid


class _Where:
    """Which webhook a log line is about; only turned into text when the line is written."""

    __slots__ = ("bot_id",)

    def __init__(self, bot_id: str | None) -> None:
        self.bot_id = bot_id

    def __str__(self) -> str:
        return f"bot '{self.bot_id}'" if self.bot_id else "any-bot webhook"


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


class WebhookEndpoint:
    """GET and POST handlers, shared by the per-bot and the any-bot routes (``bot_id`` None)."""

    def __init__(
        self,
        registry: PageRegistry,
        deliver: Deliver,
        global_config: Callable[[], Mapping[str, Any]] = dict,
    ) -> None:
        self.registry = registry
        self.deliver = deliver
        self.global_config = global_config
        self._reported_pages: set[str] = set()
        # bot id -> (registry version, global config, secrets): rebuilt only when a Page binding
        # or the global config changed, not per request (it costs O(bots) to build).
        self._secrets: dict[str | None, tuple[int, Mapping[str, Any], list[str]]] = {}

    def _global_value(self, key: str) -> str:
        value = self.global_config().get(key)
        return value.strip() if isinstance(value, str) else ""

    def verify_tokens(self, bot_id: str | None) -> list[str]:
        tokens = [b.settings.verify_token for b in self.registry.bindings(bot_id)]
        if bot_id is None:
            tokens.append(self._global_value("verifyToken"))
        return sorted({t for t in tokens if t})

    def app_secrets(self, bot_id: str | None) -> list[str]:
        config = self.global_config()  # a new object whenever the global config file changes
        cached = self._secrets.get(bot_id)
        if cached is not None and cached[0] == self.registry.version and cached[1] is config:
            return cached[2]
        secrets = [b.settings.app_secret for b in self.registry.bindings(bot_id, parked=True)]
        if bot_id is None:
            secrets.append(self._global_value("appSecret"))
        found = sorted({s for s in secrets if s})
        if len(self._secrets) > 10_000:  # bot ids come from URLs: keep the map bounded
            self._secrets.clear()
        self._secrets[bot_id] = (self.registry.version, config, found)
        return found

    async def handle_get(self, request: web.Request, bot_id: str | None = None) -> web.Response:
        """Meta's subscription check: echo ``hub.challenge`` when the verify token matches."""
        mode = request.query.get("hub.mode", "")
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge")
        tokens = self.verify_tokens(bot_id)
        # Compare against every token, without stopping at the first match.
        matches = [hmac.compare_digest(token.encode(), t.encode()) for t in tokens]
        if mode == "subscribe" and token and challenge is not None and any(matches):
            log.info("Webhook verification accepted (%s)", _Where(bot_id))
            return _text(200, challenge)
        if mode != "subscribe":
            reason = f"hub.mode is {mode!r}, not 'subscribe'"
        elif not tokens:
            reason = "no verifyToken is configured (set verifyToken in data/global/config/channel-messenger.json)"
        elif challenge is None:
            reason = "hub.challenge is missing"
        else:
            reason = "hub.verify_token does not match the configured verifyToken"
        log.warning("Webhook verification refused (%s): %s", _Where(bot_id), reason)
        return _text(403, f"verification refused: {reason}")

    async def handle_post(self, request: web.Request, bot_id: str | None = None) -> web.Response:
        """A signed delivery: verify, map every entry of every Page, store, then answer 200."""
        raw = await request.read()
        where = _Where(bot_id)  # formatted only if a log line is written
        if not (request.headers.get(SIGNATURE_SHA256) or request.headers.get(SIGNATURE_SHA1)):
            log.warning("Webhook POST refused (%s): no %s header", where, SIGNATURE_SHA256)
            return _text(403, f"missing {SIGNATURE_SHA256} signature")
        secrets = self.app_secrets(bot_id)
        valid = matching_secrets(raw, request.headers, secrets)
        if not valid:
            reason = (
                "no connected bot has an appSecret to check it with"
                if not secrets
                else "it does not match the appSecret of any connected bot"
            )
            log.warning("Webhook POST refused (%s): invalid signature, %s", where, reason)
            return _text(403, "invalid signature")
        try:
            body = json.loads(raw)
        except ValueError:
            log.warning("Webhook POST refused (%s): body is not JSON", where)
            return _text(400, "body is not JSON")
        if not isinstance(body, dict):
            return _text(400, "body must be a JSON object")
        if body.get("object") != "page":
            log.info("Webhook POST for object %r ignored (%s): only 'page' is handled", body.get("object"), where)
            return _text(404, "only object 'page' is handled")
        if not isinstance(body.get("entry", []), list):
            return _text(400, "'entry' must be a list")

        batches: dict[str, tuple[PageBinding, list[IOEvent]]] = {}
        for entry in body.get("entry") or []:
            if not isinstance(entry, dict):
                continue
            page_id = str(entry.get("id") or "")
            binding = self.registry.by_page(page_id) or self.registry.parked(page_id)
            if binding is None or (bot_id is not None and binding.bot_id != bot_id):
                # Once per page at INFO: a busy Page nobody serves must not flood the log.
                level = logging.DEBUG if page_id in self._reported_pages else logging.INFO
                self._reported_pages.add(page_id)
                log.log(level, "Webhook entry for page %s skipped (%s): no connected bot has this page "
                        "(further entries for it are logged at DEBUG)", page_id, where)
                continue
            if binding.settings.app_secret not in valid:
                log.warning(
                    "Webhook entry for page %s skipped: the request was not signed with the appSecret of bot '%s'",
                    page_id,
                    binding.bot_id,
                )
                continue
            events = map_entry(entry)
            if events:
                batches.setdefault(binding.bot_id, (binding, []))[1].extend(events)

        if not batches:
            return _text(200, "EVENT_RECEIVED")
        if len(batches) == 1:  # the usual case: no task for a gather
            [(binding, events)] = batches.values()
            try:
                await self.deliver(binding, events)
                results: list[BaseException | None] = [None]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(
                *(self.deliver(binding, events) for binding, events in batches.values()), return_exceptions=True
            )
        failed = [(bid, r) for bid, r in zip(batches, results, strict=True) if isinstance(r, BaseException)]
        for failed_bot, error in failed:
            log.error("Webhook events for bot '%s' could not be stored: %s", failed_bot, error,
                      exc_info=error)
        if failed:
            # Meta redelivers on non-200; events already stored are dropped then as duplicates.
            return _text(503, "events could not be stored; please retry")
        return _text(200, "EVENT_RECEIVED")
