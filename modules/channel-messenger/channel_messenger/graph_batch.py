"""Graph API batch requests for the Send API: a busy Page's calls go together in one HTTP request.

Each HTTP request to the Graph API costs this process 200-260 µs of CPU (aiohttp's client), about a
fifth of an answered event. Meta takes up to 50 calls in one batch request and answers each on its
own, in order (https://developers.facebook.com/docs/graph-api/batch-requests); each still counts
against the rate limits.

Adaptive, without a timer: a Send API call made while fewer than ``COALESCE_AFTER`` HTTP requests of
its Page are in flight goes at once, alone, as a plain call (no added latency at low load). One made
while the Page has that many in flight waits; when one of them is answered, the waiting calls go
together in the next request (a batch of one is a plain call). Meta runs a batch's calls in parallel,
so a batch never holds two calls to one recipient, and a recipient's call goes only once its previous
one is answered: a user's messages keep their order.

Each caller gets its own outcome: its item's answer, or its own GraphApiError mapped from the item's
code and body as for a single call (graph_errors.py), so rate limits, a refused token or a thread
owned elsewhere are handled by the caller as before. A transient failure (an item Meta did not
complete, a whole batch lost) is retried alone, as a plain call, within the call's budget
(``GraphClient.perform``); a permanent one fails only its call. Only ``POST me/messages`` is batched:
uploads, profiles, handover and lookups stay plain calls.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import aiohttp

from .graph_errors import GraphApiError, answer_or_error, error_from_response, redact

if TYPE_CHECKING:
    from .graph_client import GraphClient, GraphRequest, PageGraph

SEND_PATH = "/me/messages"
MAX_BATCH = 50  # Meta's limit of calls in one batch request
# A Page's HTTP requests in flight from which its new Send API calls wait to go together. Low enough
# that a busy Page batches; high enough that a quiet one (a reply now and then) never waits.
COALESCE_AFTER = 2

Outcome = dict[str, Any] | GraphApiError
LaneKey = tuple[str, str, str]  # (Graph base URL, access token, app secret): one Page's traffic


def recipient_key(body: Any) -> str | None:
    """Who a Send API call goes to (a PSID, a user_ref, a comment for a private reply); None: not said."""
    recipient = body.get("recipient") if isinstance(body, dict) else None
    if not isinstance(recipient, dict):
        return None
    for field in ("id", "user_ref", "comment_id", "post_id"):
        if recipient.get(field):
            return f"{field}:{recipient[field]}"
    return None


_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # made once: json.dumps
# with options builds a new encoder at every call


def form_body(body: dict[str, Any]) -> str:
    """A Send API body as a batch item's ``body``: form-encoded, objects as JSON (as Graph reads its parameters)."""
    return "&".join(f"{quote_plus(key)}={quote_plus(value if isinstance(value, str) else _compact_json(value))}"
                    for key, value in body.items())


_BOUNDARY = "botpress-py-" + secrets.token_hex(16)  # drawn once per process


def multipart_form(fields: dict[str, str]) -> tuple[bytes, str]:
    """``fields`` as a multipart/form-data body (what ``curl -F`` sends, as in Meta's examples) and its content
    type: unlike a urlencoded form, the batch's tens of kilobytes of JSON go as they are, not quoted again."""
    text = "".join(fields.values())
    boundary = _BOUNDARY
    while boundary in text:  # never in practice (random, never shown), but a part must not contain its boundary
        boundary = "botpress-py-" + secrets.token_hex(16)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             for name, value in fields.items()]
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


@dataclass(eq=False, slots=True)
class _Waiting:
    """A Send API call waiting for its Page's next request."""

    request: GraphRequest
    recipient: str
    started: float  # loop time it was made: its retry budget counts from here
    future: asyncio.Future[Outcome]
    launched: bool = False


class _Lane:
    """One Page's Send API traffic: its requests in flight, the calls waiting, the recipients being answered."""

    __slots__ = ("active", "in_flight", "queue", "queued")

    def __init__(self) -> None:
        self.in_flight = 0  # HTTP requests under way: plain calls and batches
        self.queue: deque[_Waiting] = deque()
        self.queued: dict[str, int] = {}  # recipient -> its calls in the queue
        self.active: set[str] = set()  # recipients with a call under way (in flight, or between its retries)

    @property
    def idle(self) -> bool:
        return not (self.in_flight or self.queue or self.active)


class SendBatcher:
    """The Send API calls of every Page of a GraphClient, each Page's coalesced as the module doc says."""

    def __init__(self, client: GraphClient, *, coalesce_after: int = COALESCE_AFTER,
                 max_batch: int = MAX_BATCH) -> None:
        self.client = client
        self.coalesce_after = max(1, coalesce_after)
        self.max_batch = max(1, min(max_batch, MAX_BATCH))
        self._lanes: dict[LaneKey, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # requests sent for waiting callers (kept from the GC)
        self.sizes: Counter[int] = Counter()  # batch requests sent, by number of calls
        # Told of each batch request: (bot, calls in it); the channel counts them (health.py).
        self.on_batch: Callable[[str, int], None] | None = None

    async def close(self) -> None:
        """Cancel the batch requests under way: their callers get a transient error, as for a dropped call."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def send(self, page: PageGraph, body: dict[str, Any]) -> dict[str, Any]:
        """One Send API call of ``page``: its answer, or its GraphApiError after the same retries as a plain call."""
        client = self.client
        request = client.request("POST", page.base_url + SEND_PATH, SEND_PATH, access_token=page.access_token,
                                 app_secret=page.app_secret, body=body, logger=page.logger, bot=page.bot_id)
        recipient = recipient_key(body)
        if recipient is None:
            return await client.perform(request)  # Meta refuses it anyway: not worth a place in a batch
        key = (page.base_url, page.access_token, page.app_secret)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        attempt = functools.partial(self._plain_attempt, lane, key)
        if lane.in_flight < self.coalesce_after and recipient not in lane.active and recipient not in lane.queued:
            lane.active.add(recipient)
            try:
                return await client.perform(request, attempt=attempt)
            finally:
                self._finish(lane, key, recipient)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(request, recipient, loop.time(), loop.create_future())
        lane.queue.append(waiting)
        lane.queued[recipient] = lane.queued.get(recipient, 0) + 1
        try:
            outcome = await waiting.future
        except BaseException:  # cancelled while waiting: its place goes to the others
            if waiting.launched:
                self._finish(lane, key, recipient)
            else:
                lane.queue.remove(waiting)
                self._unqueue(lane, recipient)
                self._drain(lane, key)
            raise
        try:
            if isinstance(outcome, GraphApiError):
                return await client.perform(request, first=outcome, started=waiting.started, attempt=attempt)
            client.observe(request.bot, SEND_PATH, "ok", False)
            return outcome
        finally:
            self._finish(lane, key, recipient)

    # -- the lane's bookkeeping -----------------------------------------------------------------
    async def _plain_attempt(self, lane: _Lane, key: LaneKey, request: GraphRequest) -> Outcome:
        lane.in_flight += 1
        try:
            return await self.client.attempt(request)
        finally:
            lane.in_flight -= 1
            self._drain(lane, key)

    def _finish(self, lane: _Lane, key: LaneKey, recipient: str) -> None:
        """The recipient's call is over: its next one may go."""
        lane.active.discard(recipient)
        self._drain(lane, key)

    @staticmethod
    def _unqueue(lane: _Lane, recipient: str) -> None:
        left = lane.queued[recipient] - 1
        if left:
            lane.queued[recipient] = left
        else:
            del lane.queued[recipient]

    def _drain(self, lane: _Lane, key: LaneKey) -> None:
        """Send what waits, as long as the Page has room for another request in flight."""
        while lane.queue and lane.in_flight < self.coalesce_after:
            batch = self._take(lane)
            if not batch:
                break  # every waiting call's recipient has a call under way
            lane.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(lane, key, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if lane.idle and self._lanes.get(key) is lane:
            del self._lanes[key]  # the map holds only the Pages with calls under way

    def _take(self, lane: _Lane) -> list[_Waiting]:
        """The next batch: waiting calls in order, at most one per recipient, none to a recipient being answered."""
        batch: list[_Waiting] = []
        kept: deque[_Waiting] = deque()
        chosen: set[str] = set()
        queue = lane.queue
        while queue:
            waiting = queue.popleft()
            if waiting.recipient in lane.active or waiting.recipient in chosen:
                kept.append(waiting)
                continue
            batch.append(waiting)
            chosen.add(waiting.recipient)
            if len(batch) >= self.max_batch:
                break
        kept.extend(queue)
        lane.queue = kept
        for waiting in batch:
            waiting.launched = True
            lane.active.add(waiting.recipient)
            self._unqueue(lane, waiting.recipient)
        return batch

    async def _run(self, lane: _Lane, key: LaneKey, batch: list[_Waiting]) -> None:
        """Send ``batch`` (one call: plain) and hand each caller its outcome; never raises."""
        outcomes: list[Outcome] | None = None
        try:
            if len(batch) == 1:
                outcomes = [await self.client.attempt(batch[0].request)]
            else:
                outcomes = await self._post(key[0], batch)
        except Exception as exc:  # a bug must not leave the callers waiting forever
            reason = redact(f"{type(exc).__name__}: {exc}", batch[0].request.secrets)
            outcomes = [GraphApiError(f"{w.request.what} failed: {reason}", permanent=False) for w in batch]
        finally:
            lane.in_flight -= 1
            for index, waiting in enumerate(batch):
                if not waiting.future.done():
                    waiting.future.set_result(outcomes[index] if outcomes is not None else GraphApiError(
                        f"{waiting.request.what} failed: the request was cancelled", permanent=False))
            self._drain(lane, key)

    # -- one batch request ----------------------------------------------------------------------
    async def _post(self, base_url: str, batch: list[_Waiting]) -> list[Outcome]:
        """One batch request to the Graph root: each call's outcome, in order."""
        first = batch[0].request
        what = first.what  # the errors read as for a plain call: callers and the bot's status cannot tell
        form = {key: value for key, value in first.query.items() if key in ("access_token", "appsecret_proof")}
        form["include_headers"] = "false"
        form["batch"] = json.dumps([{"method": "POST", "relative_url": w.request.path.lstrip("/"),
                                     "body": form_body(w.request.body)} for w in batch], separators=(",", ":"))
        data, content_type = multipart_form(form)  # not aiohttp's FormData, several times slower
        if self.on_batch is not None:
            self.on_batch(first.bot, len(batch))
        self.sizes[len(batch)] += 1
        try:
            async with self.client.session().post(base_url + "/", data=data,
                                                  headers={"Content-Type": content_type}) as response:
                raw = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
                usage = response.headers.get("X-Business-Use-Case-Usage")
        except TimeoutError:
            return [GraphApiError(f"{what} failed: no answer within {self.client.timeout:g} s", permanent=False)
                    for _ in batch]
        except aiohttp.ClientError as exc:
            reason = redact(str(exc), first.secrets) or type(exc).__name__
            return [GraphApiError(f"{what} failed: {type(exc).__name__}: {reason}", permanent=False) for _ in batch]
        try:
            items = json.loads(raw) if raw else None
        except ValueError:
            items = None
        if 200 <= status < 300 and isinstance(items, list) and len(items) == len(batch):
            return [_item_outcome(w.request, item, retry_after, usage) for w, item in zip(batch, items, strict=True)]
        if 200 <= status < 300 and not (isinstance(items, dict) and "error" in items):
            return [GraphApiError(f"{what} failed: the answer is not one result per call (HTTP {status})",
                                  permanent=False, status=status) for _ in batch]
        # The whole request failed (a refused token, an outage): every call in it gets the error, each its own.
        return [error_from_response(w.request.what, status, items, retry_after, first.secrets, usage) for w in batch]


def _item_outcome(request: GraphRequest, item: Any, retry_after: str | None, usage: str | None) -> Outcome:
    """One call's result in a batch answer (``{"code", "body"}``, or null when Meta did not complete it)."""
    if not isinstance(item, dict) or not isinstance(item.get("code"), int):
        return GraphApiError(f"{request.what} failed: Meta did not complete this call of a batch", permanent=False)
    body = item.get("body")
    try:
        data = json.loads(body) if isinstance(body, str) and body else {}
    except ValueError:
        data = None
    headers = {str(h.get("name", "")).lower(): str(h.get("value", "")) for h in item.get("headers") or []
               if isinstance(h, dict)}
    outcome = answer_or_error(request.what, item["code"], data, headers.get("retry-after"), request.secrets,
                              headers.get("x-business-use-case-usage"))
    if isinstance(outcome, GraphApiError) and outcome.is_rate_limit and outcome.retry_after is None \
            and (retry_after or usage):
        # Meta's throttling hint comes on the batch's own answer: it is this call's too.
        outcome = error_from_response(request.what, item["code"], data, retry_after, request.secrets, usage)
    return outcome
