"""The Messenger webhook: Meta's verification handshake (GET) and signed event deliveries (POST).

Served both per bot (``/api/v1/bots/<botId>/mod/channel-messenger/webhook``) and for any bot
(``/api/v1/bots/___/mod/channel-messenger/webhook``, entries routed by Page id). Deliveries of
``object: "page"`` are Messenger's; other objects are read by the ``EntryKind`` registered for
them (``"instagram"``: entries of Instagram accounts, instagram.py), and any other object is
answered 404. A POST is
trusted only through its signature: an entry is dispatched to a bot only when that bot's
appSecret produced the signature, so one Facebook App cannot inject events for another
App's Page even when both are served by this server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from botpress_py.sdk import IOEvent, LogThrottle, ModuleRouter, StorageUnavailable, now_ms

from .comments import entry_comments
from .incoming import entry_events, map_messaging_event
from .pages import PageBinding, PageRegistry
from .signature import SIGNATURE_SHA1, SIGNATURE_SHA256, matching_secrets
from .validation import Malformed, an_id, kind_of

log = logging.getLogger("botpress_py.module.channel-messenger.webhook")

Deliver = Callable[[PageBinding, list[IOEvent]], Awaitable[None]]
MAX_BODY_DEPTH = 1024  # orjson's limit; no Meta delivery comes near it (a dozen levels)
YIELD_EVERY = 200  # entries and events read between two turns of the event loop


class _Where:
    """Which webhook a log line is about; only turned into text when the line is written."""

    __slots__ = ("bot_id",)

    def __init__(self, bot_id: str | None) -> None:
        self.bot_id = bot_id

    def __str__(self) -> str:
        return f"bot '{self.bot_id}'" if self.bot_id else "any-bot webhook"


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


class BodyError(ValueError):
    """A delivery whose body cannot be read at all (answered 400)."""


def parse_body(raw: bytes) -> Any:
    """The JSON of a delivery, nested at most ``MAX_BODY_DEPTH`` levels.

    orjson parses it: it is several times faster than the standard library (a 10 MB body is
    parsed on the event loop: the parser holds the GIL, a thread would not free the loop), and
    it refuses bodies nested deeper than 1024 levels with an error rather than the
    RecursionError the standard library raises. What orjson refuses and JSON allows (a lone
    UTF-16 surrogate such as ``"\\ud800"``, a number beyond 64-bit floats, NaN) is parsed again by the
    standard library, whose recursion the interpreter bounds (caught), and held to the same depth.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        refusal = str(exc)
    if "depth" in refusal or "ecursion" in refusal:
        raise BodyError(f"nested deeper than {MAX_BODY_DEPTH} levels")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BodyError(f"nested deeper than {MAX_BODY_DEPTH} levels") from None
    except ValueError:
        raise BodyError(f"not JSON ({refusal})") from None
    if _deeper_than(body, MAX_BODY_DEPTH):  # the same bound whichever parser read it
        raise BodyError(f"nested deeper than {MAX_BODY_DEPTH} levels")
    return body


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` levels (a walk with its own stack, not recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


@dataclass(frozen=True, slots=True)
class EntryKind:
    """How the entries of one webhook ``object`` are read: which binding an entry id belongs to, and how
    one of its messaging events becomes IOEvents (``map_event(raw, entry id, standby=, received_ms=)``)."""

    lookup: Callable[[str], PageBinding | None]
    map_event: Callable[..., list[IOEvent]]
    noun: str  # in log lines: "page", "Instagram account"
    feed: bool = False  # its entries may carry Page ``changes`` (comments on the Page's posts)


class _Batches:
    """The events of one delivery, grouped by the bot they are for."""

    def __init__(self) -> None:
        self.by_bot: dict[str, tuple[PageBinding, list[IOEvent]]] = {}

    def add(self, binding: PageBinding, events: list[IOEvent]) -> None:
        if events:
            self.by_bot.setdefault(binding.bot_id, (binding, []))[1].extend(events)


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
        # Lines that whoever reaches the URL can trigger per request (a bad signature, a malformed
        # event) are written once a minute per kind, with how many were held back.
        self.throttle = LogThrottle(60.0)
        # bot id -> (registry version, global config, secrets): rebuilt only when a Page binding
        # or the global config changed, not per request (it costs O(bots) to build).
        self._secrets: dict[str | None, tuple[int, Mapping[str, Any], list[str]]] = {}
        self.objects: dict[str, EntryKind] = {"page": EntryKind(
            lambda page: registry.by_page(page) or registry.parked(page), map_messaging_event, "page", feed=True)}

    def add_object(self, name: str, kind: EntryKind) -> None:
        """Read deliveries of another webhook ``object`` (signed with the same app secrets)."""
        self.objects[name] = kind

    def add_routes(self, router: ModuleRouter, bot_id: str | None = None) -> None:
        """``GET`` and ``POST /webhook`` on a router: the any-bot one, or a bot's own (only its Page served)."""

        # partial, not a coroutine that awaits the handler: one coroutine less per delivery.
        router.add_get("/webhook", partial(self.handle_get, bot_id=bot_id))
        router.add_post("/webhook", partial(self.handle_post, bot_id=bot_id))

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

    def _warn(self, key: Any, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        self.throttle.log(log, level, key, msg, *args)

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
            reason = f"hub.mode is {mode[:40]!r}, not 'subscribe'"
        elif not tokens:
            reason = "no verifyToken is configured (set verifyToken in data/global/config/channel-messenger.json)"
        elif challenge is None:
            reason = "hub.challenge is missing"
        else:
            reason = "hub.verify_token does not match the configured verifyToken"
        self._warn(("verify", bot_id, reason), "Webhook verification refused (%s): %s", _Where(bot_id), reason)
        return _text(403, f"verification refused: {reason}")

    async def handle_post(self, request: web.Request, bot_id: str | None = None) -> web.Response:
        """A signed delivery: verify, map every entry of every Page, store, then answer 200.

        Only a body that cannot be read as a whole is refused (400); an entry or event that cannot
        be read is skipped and logged, and the rest of the delivery is stored and acknowledged.
        """
        raw = await request.read()
        where = _Where(bot_id)  # formatted only if a log line is written
        if not (request.headers.get(SIGNATURE_SHA256) or request.headers.get(SIGNATURE_SHA1)):
            self._warn(("unsigned", bot_id), "Webhook POST refused (%s): no %s header", where, SIGNATURE_SHA256)
            return _text(403, f"missing {SIGNATURE_SHA256} signature")
        secrets = self.app_secrets(bot_id)
        valid = matching_secrets(raw, request.headers, secrets)
        if not valid:
            reason = (
                "no connected bot has an appSecret to check it with"
                if not secrets
                else "it does not match the appSecret of any connected bot"
            )
            self._warn(("signature", bot_id, bool(secrets)), "Webhook POST refused (%s): invalid signature, %s",
                       where, reason)
            return _text(403, "invalid signature")
        try:
            body = parse_body(raw)
        except BodyError as exc:
            self._warn(("body", bot_id), "Webhook POST refused (%s): body %s", where, exc)
            return _text(400, f"body {exc}")
        if not isinstance(body, dict):
            self._warn(("body", bot_id), "Webhook POST refused (%s): body is not a JSON object", where)
            return _text(400, "body must be a JSON object")
        kind = self.objects.get(body["object"]) if isinstance(body.get("object"), str) else None
        if kind is None:
            shown = body.get("object") if isinstance(body.get("object"), str) else kind_of(body.get("object"))
            handled = " and ".join(repr(name) for name in self.objects)
            self._warn(("object", bot_id), "Webhook POST for object %r ignored (%s): only %s handled",
                       shown[:40], where, handled + (" are" if len(self.objects) > 1 else " is"), level=logging.INFO)
            return _text(404, f"only object {handled} {'are' if len(self.objects) > 1 else 'is'} handled")
        entries = body.get("entry", [])
        if not isinstance(entries, list):
            self._warn(("body", bot_id), "Webhook POST refused (%s): 'entry' is %s, not a list", where,
                       kind_of(entries))
            return _text(400, "'entry' must be a list")

        batches = await self._read_entries(entries, bot_id, valid, kind)
        return await self._store(batches)

    async def _read_entries(self, entries: list[Any], bot_id: str | None, valid: set[str],
                            kind: EntryKind) -> _Batches:
        """Every readable event of the delivery, by bot. Bounded per event, with a turn of the event loop
        every ``YIELD_EVERY`` events: a 6,000-event delivery must not hold everyone else up."""
        batches = _Batches()
        received = now_ms()
        seen = 0
        for index, entry in enumerate(entries):
            seen += 1
            if seen % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            try:
                binding = self._route(entry, index, bot_id, valid, kind)
            except Exception as exc:  # last resort: a bug must cost this entry only
                self._failed("entry", exc)
                continue
            if binding is None:
                continue
            page_id = binding.page_id
            for item in entry_events(entry):
                seen += 1
                if seen % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if isinstance(item, Malformed):
                    self._skipped(page_id, item, kind)
                    continue
                raw_event, standby = item
                try:
                    batches.add(binding, kind.map_event(raw_event, page_id, standby=standby, received_ms=received))
                except Malformed as exc:
                    self._skipped(page_id, exc, kind)
                except Exception as exc:  # last resort: a bug must cost this event only
                    self._failed("event", exc)
            if not kind.feed:
                continue
            try:  # Page feed changes: comments on the Page's posts (comments.py)
                for change in entry_comments(entry, page_id, received):
                    if isinstance(change, Malformed):
                        self._skipped(page_id, change, kind)
                    else:
                        batches.add(binding, [change])
            except Exception as exc:
                self._failed("change", exc)
        return batches

    def _route(self, entry: Any, index: int, bot_id: str | None, valid: set[str],
               kind: EntryKind) -> PageBinding | None:
        """The binding an entry is for, or None (logged) when it is not ours or cannot be read."""
        where = _Where(bot_id)
        if not isinstance(entry, dict):
            self._skipped("?", Malformed(f"entry[{index}]", f"expected an object, got {kind_of(entry)}"), kind)
            return None
        try:
            page_id = an_id(entry.get("id"), f"entry[{index}].id")
        except Malformed as exc:
            self._skipped("?", exc, kind)
            return None
        binding = kind.lookup(page_id)
        if binding is None or (bot_id is not None and binding.bot_id != bot_id):
            # A busy Page nobody serves must not flood the log: once a minute per Page.
            self._warn((kind.noun, page_id, bot_id), "Webhook entry for %s %s skipped (%s): no connected bot has "
                       "this %s", kind.noun, page_id, where, kind.noun, level=logging.INFO)
            return None
        if binding.settings.app_secret not in valid:
            self._warn(("foreign", page_id), "Webhook entry for %s %s skipped: the request was not signed with "
                       "the appSecret of bot '%s'", kind.noun, page_id, binding.bot_id)
            return None
        return binding

    def _skipped(self, page_id: str, problem: Malformed, kind: EntryKind) -> None:
        # The field and what is wrong with it, never its value (it may be a user's text).
        self._warn(("malformed", page_id, problem.field), "Webhook event of %s %s skipped: %s: %s", kind.noun,
                   page_id, problem.field, problem.reason)

    def _failed(self, what: str, exc: Exception) -> None:
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
        self._warn(("failed", what, type(exc).__name__, at), "Webhook %s skipped: reading it failed with %s%s "
                   "(a bug: please report it)", what, type(exc).__name__, at, level=logging.ERROR)

    async def _store(self, batches: _Batches) -> web.Response:
        if not batches.by_bot:
            return _text(200, "EVENT_RECEIVED")
        if len(batches.by_bot) == 1:  # the usual case: no task for a gather
            [(binding, events)] = batches.by_bot.values()
            try:
                await self.deliver(binding, events)
                results: list[BaseException | None] = [None]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(
                *(self.deliver(binding, events) for binding, events in batches.by_bot.values()),
                return_exceptions=True)
        failed = [(bid, r) for bid, r in zip(batches.by_bot, results, strict=True) if isinstance(r, BaseException)]
        for failed_bot, error in failed:
            if isinstance(error, StorageUnavailable):
                # Storage is slow or down: one line a minute says so (the error names cause and fix); a
                # traceback per delivery would only bury it.
                self.throttle.log(log, logging.WARNING, ("unstored", failed_bot),
                                  "Webhook events for bot '%s' not stored yet, answered 503 (Meta redelivers): %s",
                                  failed_bot, error)
            else:
                log.error("Webhook events for bot '%s' could not be stored: %s", failed_bot, error,
                          exc_info=error)
        if failed:
            # Meta redelivers on non-200; events already stored are dropped then as duplicates.
            return _text(503, "events could not be stored; please retry")
        return _text(200, "EVENT_RECEIVED")
