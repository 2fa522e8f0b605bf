"""Processing one incoming event: context, middleware, bot logic, and retries when it fails.

Part of ``EventPipeline`` (a mixin, apart so that each file keeps to one concern): what runs
for one event in its conversation's worker, and how a failure that is not bot logic's own
(storage refusing a write, a read before bot logic) is retried, then recorded as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
from typing import TYPE_CHECKING, Any

from .config.server_config import parse_duration
from .core_metrics import CoreMetrics
from .event_feed import EventFeed
from .events import EVENT_FIELDS, IOEvent, Middleware, masked_copy
from .failed_events import RetryPolicy
from .gate import BotGate, MountedBot, ShuttingDown
from .loader import ModuleLoader
from .logthrottle import LogThrottle
from .state import linked_users
from .storage import Completion, GroupCommitOutcomes, Storage
from .storage.common import describe_error, event_json, unserialisable_path
from .storage.postgres_cluster import LeaseLost

log = logging.getLogger("botpress_py.pipeline")


class _ReplyCollector:
    """Replies sent while one incoming event is processed; committed with its "processed" mark."""

    def __init__(self) -> None:
        self.events: list[IOEvent] = []
        self.encoded: list[str] = []  # their event_json, made once when they were sent
        self.open = True


# Set in the worker while bot logic handles an event; tasks the bot logic spawns inherit it,
# and once it is closed their sends go straight to the outbox.
current_replies: contextvars.ContextVar[_ReplyCollector | None] = contextvars.ContextVar(
    "botpress_current_replies", default=None)
# The module whose hook runs now (and so whose sends these are): named when a reply is refused.
_current_module: contextvars.ContextVar[str | None] = contextvars.ContextVar("botpress_current_module",
                                                                              default=None)


class IncomingProcessing:
    if TYPE_CHECKING:
        storage: Storage
        gate: BotGate
        loader: ModuleLoader
        metrics: CoreMetrics
        retry: RetryPolicy
        outcomes: GroupCommitOutcomes
        middleware_in: list[tuple[str, Middleware]]
        _attempts: dict[str, int]
        feed: EventFeed
        _stopping: asyncio.Event
        # A full disk fails every conversation at once: one line per bot and kind of failure, then
        # every 10 s a line with the count of those held back (each event stays listed as failed).
        _log_throttle: LogThrottle

        def _queue_outgoing(self, events: list[IOEvent], seqs: list[int]) -> None: ...

        def _count_failed(self, bot_id: str, direction: str) -> None: ...

    async def _process_with_retries(self, event: IOEvent) -> None:
        """Bot logic, then its commit; a failure of either (not of bot logic itself, which is
        recorded as ``error``) is tried again after a backoff, the conversation waiting, until
        the attempts are used up: then the event is failed and the conversation moves on."""
        attempts = self._attempts.pop(event.id, 0)
        completion: Completion | None = None
        while True:
            try:
                if completion is None:
                    completion = await self._run_bot_logic(event)
                    if completion is None:
                        return  # left pending: its bot is gone, or the server stops
                [seqs] = await self.outcomes.add([completion])
            except LeaseLost:
                return  # cluster mode: another node took the partition over and processes the event
            except Exception as exc:
                attempts += 1
                stage = "recording its result" if completion is not None else "preparing it for bot logic"
                error = f"{stage}: {describe_error(exc, masked=bool(event.flags.get('mask')))}"
                if attempts >= self.retry.max_attempts:
                    await self._fail_incoming(event, attempts, error)
                    return
                if not await self._wait_to_retry(event, attempts, error):
                    return  # the server stops: the event stays pending, its attempts counted
                continue
            self._queue_outgoing(completion.outgoing, seqs or [])  # a completion's result: its replies' seqs
            getattr(self.metrics, f"events_{completion.status}").inc()
            log.debug("bot %s: incoming event %s %s, %d repl%s", event.botId, event.id, completion.status,
                      len(completion.outgoing), "y" if len(completion.outgoing) == 1 else "ies")
            return

    async def _run_bot_logic(self, event: IOEvent) -> Completion | None:
        try:
            async with self.gate.using(event.botId) as bot:
                await self._attach_context(event, bot)
                # History keeps the event as it arrived: what middleware adds later (a profile the
                # operator chose not to store, say) must not reach storage.
                masked = masked_copy(event) if event.flags.get("mask") else None
                history = masked or event.copy()
                collector = _ReplyCollector()
                token = current_replies.set(collector)
                try:
                    status, error = await self._run_incoming(event, bot)
                finally:
                    current_replies.reset(token)
                    collector.open = False
        except KeyError:
            if self.gate.knows(event.botId):
                raise  # not the missing bot: a processing failure like any other
            # The bot's folder is gone: keep the event stored (not done) for an operator to see.
            log.warning("event %s for unknown bot %s left in the inbox", event.id, event.botId)
            return None
        except ShuttingDown:
            return None  # stays pending in the inbox; replayed at the next start
        # History, processed mark and replies: one transaction.
        return Completion(event.id, status, error, collector.events, redacted=masked, message=history,
                          outgoing_json=collector.encoded)

    async def _wait_to_retry(self, event: IOEvent, attempts: int, error: str) -> bool:
        """Count the failed attempt (in storage too, so a restart does not reset it) and wait
        for the backoff; False when the server stops meanwhile."""
        delay = self.retry.delay(attempts)
        self.metrics.events_retried.inc()
        self._log_throttle.log(
            log, logging.WARNING, ("retry", event.botId, _kind(error)),
            "bot %s: processing event %s failed (attempt %d of %d), retrying in %.1fs: %s",
            event.botId, event.id, attempts, self.retry.max_attempts, delay, error)
        try:
            await self.storage.inbox_attempt_failed(event.id, attempts, error)
        except Exception as exc:
            self._log_throttle.log(
                log, logging.WARNING, ("count", event.botId, type(exc)),
                "bot %s: could not count the failed attempt of event %s: %s", event.botId, event.id,
                describe_error(exc, masked=bool(event.flags.get("mask"))))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        return not self._stopping.is_set()

    async def _fail_incoming(self, event: IOEvent, attempts: int, error: str) -> None:
        try:
            failed = await self.storage.inbox_fail(event.id, attempts, error)
        except Exception as exc:
            self._log_throttle.log(
                log, logging.ERROR, ("unmarked", event.botId, type(exc)),
                "bot %s: event %s failed %d times (%s) and could not be marked failed either (%s); it stays "
                "pending and replays at the next start", event.botId, event.id, attempts, error,
                describe_error(exc, masked=bool(event.flags.get("mask"))))
            return
        self._log_throttle.log(
            log, logging.ERROR, ("failed", event.botId, _kind(error)),
            "bot %s: event %s failed after %d attempts, its conversation moves on (see botpress-py events "
            "failed): %s", event.botId, event.id, attempts, error)
        if failed:
            self._count_failed(event.botId, "incoming")
            self.feed.publish(event, "failed")

    async def _run_incoming(self, event: IOEvent, bot: MountedBot) -> tuple[str, str | None]:
        contexts = bot.contexts
        if event.silent:
            return "done", None
        for module, mw in self.middleware_in:
            ctx = contexts.get(module)
            if ctx is None:
                continue
            token = _current_module.set(module)
            try:
                if await maybe_await(mw.handler(event, ctx)) is False:
                    return "dropped", f"dropped by middleware {mw.name}"
            except Exception as exc:
                log.exception("bot %s: middleware %s failed on event %s", event.botId, mw.name, event.id)
                return "error", f"middleware {mw.name}: {type(exc).__name__}: {exc}"
            finally:
                _current_module.reset(token)
        if not await self._transform("transform_input", event, bot):
            return "dropped", "dropped by transform_input"
        errors = []
        # Each module on its own, in hook order (tryfirst, plain, trylast): one failing stops no other.
        for name in self.loader.call_order("on_incoming", contexts):
            token = _current_module.set(name)
            try:
                await self.loader.call(name, "on_incoming", event=event, bot=contexts[name])
            except Exception as exc:
                log.exception("bot %s: module %s on_incoming failed on event %s", event.botId, name, event.id)
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
            finally:
                _current_module.reset(token)
        return ("error", "; ".join(errors)) if errors else ("done", None)

    async def _attach_context(self, event: IOEvent, bot: MountedBot) -> None:
        """``event.flags["session"]`` and ``event.user``, from one storage read.

        The session says whether the conversation is new, or back after ``sessionTimeout``;
        the user is the stored profile (unless the channel brought a fresh one) and contact.
        """
        context = await self.storage.incoming_context(event.botId, event.channel, event.threadId, event.target)
        last = context.last_event_at
        timeout = event.flags.get("sessionTimeout")  # a channel's own setting wins, in seconds
        if not isinstance(timeout, int | float) or timeout <= 0:
            timeout = parse_duration(bot.config.get("sessionTimeout") or "30m")
        expired = last is not None and event.createdOn - last > timeout * 1000
        event.flags["session"] = {"new": last is None, "expired": expired, "lastEventAt": last}

        event.user.setdefault("id", event.target)
        # Present from the user's first message on (None and [] until linked), whether or not a user
        # row exists yet: bot logic must not tell a first message from a later one by a missing key.
        contact_id, members = context.contact
        event.user["contactId"] = contact_id
        event.user["linked"] = linked_users(members, event.botId, event.channel, event.target)
        stored = context.user
        if stored is not None and stored.get("profile") is not None:
            event.user.setdefault("profile", stored["profile"])

    async def _transform(self, hook: str, event: IOEvent, bot: MountedBot) -> bool:
        """Modules' ``hook`` then the bot's transformers.py; False drops the event. Errors are contained."""
        for name in self.loader.call_order(hook, bot.contexts):
            try:
                results = await self.loader.call(name, hook, event=event, bot=bot.contexts[name])
            except Exception:
                log.exception("bot %s: module %s %s failed on event %s; it goes on unchanged",
                              event.botId, name, hook, event.id)
                continue
            if any(r is False for r in results):
                return False
        if bot.transformers is not None:
            return await bot.transformers.run(hook, event)
        return True

    def _encode_reply(self, event: IOEvent, bot: MountedBot | None) -> str:
        try:
            return event_json(event)
        except (TypeError, ValueError, RecursionError, OverflowError) as exc:
            found = unserialisable_path({name: getattr(event, name) for name in EVENT_FIELDS}, "")
            where, reason = found or ("the event", describe_error(exc))
            module = _current_module.get()
            sender = f"bot {event.botId}" + (f", module {module}" if module else "")
            transforms = [name for name in self.loader.call_order("transform_output", bot.contexts if bot else ())
                          if self.loader.implements(name, "transform_output")]
            if bot is not None and bot.transformers is not None and "transform_output" in bot.transformers.functions:
                transforms.append("transformers.py")
            after = f" (after transform_output of {', '.join(transforms)})" if transforms else ""
            raise ValueError(f"{sender}: cannot send a {event.type!r} reply whose {where} cannot be stored: "
                             f"{reason}{after}") from None


def _kind(error: str) -> tuple[str, ...]:
    """The stage and exception type of an error made in ``_process_with_retries``: what its log
    lines are throttled by."""
    return tuple(error.split(":", 2)[:2])


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
