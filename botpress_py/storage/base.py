"""The storage interface every backend implements (SQLite by default, PostgreSQL by DATABASE_URL).

Rules every backend follows:
- ``open()`` connects and applies versioned migrations (idempotent, from an empty database).
- No call blocks the event loop: SQLite runs on dedicated writer/reader threads, PostgreSQL on asyncpg.
- A storage that cannot answer now (a lock held elsewhere past the query timeout, the database
  unreachable, read-only or full, the disk failing) raises ``StorageUnavailable`` with the cause
  and the fix; other exceptions are bugs or bad values.
- Events flagged ``mask`` are encrypted in their inbox and outbox rows (``crypto.py``) and
  decrypted when read back; what replaces them once processed is the masked copy, in clear.
- Each method that takes a list writes it in ONE transaction (group commit happens above,
  in ``GroupCommitInbox``, which merges concurrent ``inbox_add`` calls into one call here).
- Events are stored as their ``IOEvent.to_dict()`` JSON, so new IOEvent fields need no migration.
- Times are integer milliseconds since the epoch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..events import IOEvent
from .crypto import EventCipher
from .media_rows import StoredMedia

OutboxStatus = Literal["pending", "sent", "failed", "dropped", "discarded"]
Direction = Literal["incoming", "outgoing"]
# (contact id or None, every (bot, channel, user id) linked to it)
ContactMembers = tuple[str | None, list[tuple[str, str, str]]]


class StorageUnavailable(Exception):
    """Storage cannot take or give data now; the message says why and what to check.

    Raised by ``bot.receive`` when a channel's events could not be stored within
    ``storage.ackTimeout`` (or storage refused them): the channel answers 503 (or its platform's
    equivalent) so that the platform redelivers. If the commit lands later after all, the events
    are processed as usual and the redelivery is recognised as a duplicate.
    """


@dataclass(slots=True)
class OutboxRow:
    seq: int
    event: IOEvent
    attempts: int
    next_attempt_at: int  # ms epoch; 0 = now
    status: OutboxStatus
    error: str | None = None


@dataclass(slots=True)
class PendingEvent:
    """An incoming event waiting to be processed, and how many processing attempts failed so far."""

    seq: int
    event: IOEvent
    attempts: int = 0


@dataclass(slots=True)
class FailedEvent:
    """An incoming or outgoing event the pipeline gave up on (or, after a retry or discard, was)."""

    direction: Direction
    seq: int
    event: IOEvent
    status: str
    attempts: int
    error: str | None
    updated_at: int | None  # ms epoch: when it failed (or was discarded)


@dataclass(slots=True)
class Completion:
    """One processed incoming event and the outgoing events it produced."""

    event_id: str
    status: str = "done"  # done | dropped | error
    error: str | None = None
    outgoing: list[IOEvent] = field(default_factory=list)
    # Stored in place of the event once processed (message text masked for data protection).
    redacted: IOEvent | None = None
    # Appended to message history in the same transaction (the event, masked when asked).
    message: IOEvent | None = None
    # ``event_json`` of each outgoing event when the caller already has it (the pipeline encodes
    # every reply as it is sent, to refuse one that is not JSON there).
    outgoing_json: list[str] | None = None


@dataclass(slots=True)
class SentMark:
    """One outgoing event a channel delivered: what ``outbox_sent_many`` records."""

    event: IOEvent
    attempts: int
    channel_message_id: str | None
    # Kept as the stored form and appended to history: the event itself or a masked copy.
    stored: IOEvent


@dataclass(slots=True)
class IncomingContext:
    """What the pipeline reads about an incoming event's conversation and user before bot logic."""

    last_event_at: int | None  # the conversation's last event (ms epoch), None if it is new
    user: dict[str, Any] | None  # as ``user_get``
    contact: ContactMembers  # as ``contact_of``


class Storage(ABC):
    """Durable state of the server: inbox, outbox, users, conversations, messages, key-value."""

    kind: str = "abstract"
    cipher: EventCipher  # encrypts masked events at rest (crypto.py)

    def open_failure_hint(self) -> str:
        """What to check when ``open()`` failed, for this backend (shown by the start error)."""
        return "check the storage settings"

    @abstractmethod
    async def open(self) -> None:
        """Connect and migrate to the latest schema version."""

    @abstractmethod
    async def close(self) -> None:
        """Close connections; safe to call twice."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The migration version applied (0 for an empty database). Public for tools and the migration
        tests: which version a database is at (a newer one is refused at open)."""

    def is_transient_failure(self, exc: BaseException) -> bool:
        """True when a failed write says nothing about what was written: the database is locked,
        unreachable or out of space. A group commit then fails its callers at once (they retry,
        or their channel redelivers) rather than splitting the batch to look for a guilty item,
        which would repeat the same failure once per item."""
        return isinstance(exc, OSError | TimeoutError)

    # -- key-value: small JSON state that must outlive a restart --------------------------
    @abstractmethod
    async def kv_get(self, namespace: str, key: str) -> Any | None: ...

    async def kv_set(self, namespace: str, key: str, value: Any) -> None:
        await self.kv_set_many(namespace, {key: value})

    @abstractmethod
    async def kv_set_many(self, namespace: str, items: dict[str, Any]) -> None:
        """Set several keys of one namespace in one transaction (all or none)."""

    @abstractmethod
    async def kv_delete(self, namespace: str, key: str) -> None: ...

    # -- inbox: incoming events, stored before the webhook is acknowledged ----------------
    @abstractmethod
    async def inbox_add(self, events: list[IOEvent]) -> list[bool]:
        """Insert events in one transaction; per event True if new, False if a duplicate.

        A duplicate is an event whose ``dedupeKey`` is not None and equals that of an event
        already stored (processed or not) for the same ``botId`` and ``channel``.
        """

    async def inbox_pending(self, limit: int = 1000, after_seq: int = 0,
                            bot_id: str | None = None) -> list[tuple[int, IOEvent]]:
        """Unprocessed events with seq > after_seq (of one bot, or of all), ascending seq (arrival order).
        Public for tools and tests: what a restart would replay (the pipeline reads ``inbox_pending_rows``)."""
        return [(row.seq, row.event) for row in await self.inbox_pending_rows(limit, after_seq, bot_id)]

    @abstractmethod
    async def inbox_pending_rows(self, limit: int = 1000, after_seq: int = 0,
                                 bot_id: str | None = None) -> list[PendingEvent]:
        """``inbox_pending`` with each event's failed attempts so far."""

    @abstractmethod
    async def inbox_pending_counts(self) -> dict[str, int]:
        """How many unprocessed events each bot has (bots with none are left out)."""

    async def inbox_done(self, event_ids: list[str], status: str = "done", error: str | None = None) -> None:
        """Record events as processed (``done``, ``dropped`` or ``error`` with a reason), without replies or
        history. Public for tools and tests that set an event's state; the pipeline records a processed
        event with its replies through ``inbox_complete``, which this calls."""
        if event_ids:
            await self.inbox_complete([Completion(event_id, status, error) for event_id in event_ids])

    @abstractmethod
    async def inbox_complete(self, completions: list[Completion]) -> list[list[int]]:
        """Record incoming events processed AND store the replies they produced, in ONE transaction.

        Per completion: mark the inbox row (status, error) and insert its outgoing events as
        pending outbox rows; returns the outbox seqs per completion. Being atomic is what makes
        "work completed before a crash is never redone": either the event is still pending
        (and replays) or its replies are stored (and get sent), never both or neither.
        """

    # -- failed incoming events (the pipeline's retries and dead-letter state) -----------
    @abstractmethod
    async def inbox_add_failed(self, event: IOEvent, error: str) -> bool:
        """Store an event that ``inbox_add`` refused (already sanitised) as ``failed`` with ``error``.

        True if stored, False if its id or dedupe key is already stored (a redelivery).
        """

    @abstractmethod
    async def inbox_attempt_failed(self, event_id: str, attempts: int, error: str) -> None:
        """Record that processing a pending event failed ``attempts`` times so far, last with ``error``."""

    @abstractmethod
    async def inbox_fail(self, event_id: str, attempts: int, error: str) -> bool:
        """Mark a pending event ``failed`` (its own small transaction); False if it was not pending."""

    @abstractmethod
    async def inbox_fail_exhausted(self, max_attempts: int, error: str) -> dict[str, int]:
        """Mark ``failed`` every pending event with at least ``max_attempts`` failed attempts; counts per bot."""

    # -- failed events of both directions: what an operator lists, retries and discards ------
    @abstractmethod
    async def failed_events(self, direction: Direction, *, bot_id: str | None = None, after_seq: int = 0,
                            limit: int = 100) -> list[FailedEvent]:
        """Failed events of one direction (of one bot, or of all) with seq > after_seq, ascending seq."""

    @abstractmethod
    async def failed_counts(self) -> dict[str, dict[str, int]]:
        """How many failed events each bot has: ``{bot: {"incoming": n, "outgoing": n}}`` (none: left out)."""

    @abstractmethod
    async def event_status(self, event_id: str) -> tuple[Direction, str, str] | None:
        """(direction, status, bot id) of a stored event, or None when no such event is stored."""

    @abstractmethod
    async def events_retry(self, direction: Direction, event_ids: list[str]) -> list[FailedEvent]:
        """Put the given events back to ``pending`` with no attempts, if they are ``failed``.

        Returns those it changed (now pending), ascending seq; others are left alone.
        """

    @abstractmethod
    async def events_discard(self, direction: Direction, event_ids: list[str]) -> list[str]:
        """Mark the given events ``discarded`` if they are ``failed``; returns the ids it changed."""

    # -- outbox: outgoing events, stored before the channel is called ---------------------
    @abstractmethod
    async def outbox_add(self, events: list[IOEvent], encoded: list[str] | None = None) -> list[int]:
        """Store outgoing events as ``pending``; returns their seq numbers (ascending).

        ``encoded``: their ``event_json`` when the caller has it already.
        """

    @abstractmethod
    async def outbox_pending(self, limit: int = 1000, after_seq: int = 0) -> list[OutboxRow]:
        """Pending outgoing events with seq > after_seq, ascending seq."""

    @abstractmethod
    async def outbox_update(
        self,
        event_id: str,
        *,
        status: OutboxStatus,
        attempts: int,
        next_attempt_at: int = 0,
        error: str | None = None,
        channel_message_id: str | None = None,
    ) -> None: ...

    @abstractmethod
    async def outbox_get(self, event_id: str) -> OutboxRow | None: ...

    @abstractmethod
    async def outbox_sent_many(self, marks: list[SentMark]) -> list[None]:
        """In ONE transaction (group commit of sent marks), for each mark: the event is sent, ``stored``
        (the event itself or a masked copy) is its stored form, and ``stored`` joins message history with
        the channel's message id."""

    # Whether ``record_outcomes`` records completions and sent marks together in one transaction.
    records_outcomes_together = False

    async def record_outcomes(self, items: Sequence[Completion | SentMark]) -> list[list[int] | None]:
        """``inbox_complete`` of the completions and ``outbox_sent_many`` of the sent marks among ``items``,
        in ONE transaction: per item its outbox seqs, or None for a mark. Only called when
        ``records_outcomes_together`` (``GroupCommitOutcomes`` calls the two apart otherwise)."""
        raise NotImplementedError(f"{type(self).__name__} records completions and sent marks apart")

    @abstractmethod
    async def outbox_redact(self, event: IOEvent) -> None:
        """Replace the stored outgoing event (once sent) by this version, e.g. with its text masked."""

    # -- users, conversations and message history -----------------------------------------
    @abstractmethod
    async def user_upsert(self, bot_id: str, channel: str, user_id: str, profile: dict[str, Any] | None) -> None:
        """Create the user or update its profile (None keeps the stored profile)."""

    @abstractmethod
    async def user_get(self, bot_id: str, channel: str, user_id: str) -> dict[str, Any] | None:
        """``{"id", "channel", "botId", "profile", "createdOn", "updatedOn"}`` or None."""

    @abstractmethod
    async def message_record(self, event: IOEvent, channel_message_id: str | None = None) -> None:
        """Append to message history and touch the conversation (bot, channel, thread, user). Public for
        importing history from elsewhere and for tests; the pipeline records history inside its own
        transactions (``inbox_complete``, ``outbox_sent_many``), never with this."""

    @abstractmethod
    async def messages_for(self, bot_id: str, channel: str, user_id: str, limit: int = 100, *,
                           thread_id: str | None = None, after_seq: int | None = None,
                           before_seq: int | None = None) -> list[dict[str, Any]]:
        """Message history of one user, oldest first (event dicts plus ``channelMessageId`` and ``seq``).

        ``seq`` is the message's position in history (it only grows). Without ``after_seq`` the
        newest ``limit`` messages (older than ``before_seq`` when given); with it the oldest
        ``limit`` messages after it. ``thread_id`` keeps one thread's messages only.
        """

    @abstractmethod
    async def conversations(self, bot_id: str, *, channel: str | None = None, limit: int = 50,
                            after: tuple[int, str, str, str] | None = None) -> list[dict[str, Any]]:
        """A bot's conversations (of one channel when given), most recent activity first:
        ``{"botId", "channel", "userId", "threadId", "createdOn", "lastEventAt", "lastPreview",
        "lastDirection"}`` (the last message's preview as stored: masked where masking applies).
        ``after`` is ``(lastEventAt, channel, userId, threadId or "")`` of the previous page's last row."""

    @abstractmethod
    async def conversation_last_event(self, bot_id: str, channel: str, thread_id: str | None,
                                      user_id: str) -> int | None:
        """When the conversation last had an event (ms epoch), or None if it never had one."""

    @abstractmethod
    async def contact_link(self, members: list[tuple[str, str, str]]) -> str:
        """Link (bot, channel, user) ids as one contact, merging contacts they already belong to.

        Returns the contact id (the oldest of the merged ones, or a new one).
        """

    @abstractmethod
    async def contact_of(self, bot_id: str, channel: str, user_id: str) -> ContactMembers:
        """(contact id, every (bot, channel, user) of that contact), or (None, []) when not linked."""

    async def incoming_context(self, bot_id: str, channel: str, thread_id: str | None,
                               user_id: str) -> IncomingContext:
        """``conversation_last_event``, ``user_get`` and ``contact_of`` at once. It runs before every
        incoming event's bot logic, so the SQLite and PostgreSQL backends answer it in one round trip
        (one thread hand-off, one query); this default, for a backend that does not, makes three."""
        return IncomingContext(await self.conversation_last_event(bot_id, channel, thread_id, user_id),
                               await self.user_get(bot_id, channel, user_id),
                               await self.contact_of(bot_id, channel, user_id))

    # -- media: files users sent, kept as blobs (see docs/storage.md, "Media") --------------------------
    async def media_put(self, media: StoredMedia) -> None:
        """Store a media file (its ``data`` must be set), in one transaction of its own."""
        raise NotImplementedError(f"{type(self).__name__} keeps no media")

    async def media_get(self, bot_id: str, media_id: str, *, with_data: bool = True) -> StoredMedia | None:
        """One bot's media file, or None; ``with_data=False`` reads the metadata only."""
        raise NotImplementedError(f"{type(self).__name__} keeps no media")

    async def media_delete(self, bot_id: str, media_id: str) -> bool:
        """Delete one bot's media file; False when there was none."""
        raise NotImplementedError(f"{type(self).__name__} keeps no media")

    @abstractmethod
    async def erase_user(self, bot_id: str, channel: str, user_id: str) -> dict[str, int]:
        """Delete the user, their conversations, messages, media, inbox, outbox and contact rows; counts per
        table."""

    @abstractmethod
    async def purge(self, *, processed_before: int, messages_before: int,
                    failed_before: int | None = None, media_before: int | None = None) -> dict[str, int]:
        """Delete processed inbox rows and sent/dropped outbox rows older than ``processed_before``,
        failed and discarded rows of both older than ``failed_before`` (default: ``processed_before``),
        messages older than ``messages_before`` and, when ``media_before`` is given, media stored before it
        (ms epoch); counts per table."""
