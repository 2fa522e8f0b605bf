"""Graph API calls: one pooled HTTP session, appsecret_proof, retries for transient errors only.

Which errors are worth retrying is graph_errors.py's; Send API calls of a busy Page go together
in batch requests (graph_batch.py).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .graph_batch import SEND_PATH, SendBatcher
from .graph_errors import GraphApiError, answer_or_error, redact
from .graph_errors import failure_hint as failure_hint  # re-exported: the channel's modules import it from here
from .graph_errors import is_transient as is_transient

log = logging.getLogger("botpress_py.module.channel-messenger.graph")

MAX_ID_PAGES = 20  # pages of ids_for_pages followed at most (25 ids each)
# Backoff between attempts: the first step, doubled each retry up to the ceiling (seconds). Read when
# a GraphClient is made, so a test can shrink them for the servers it starts.
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 4.0


def endpoint_kind(path: str) -> str:
    """A Graph path as a bounded metrics label: what kind of call it was, never an id."""
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    kinds = {"messages": "send", "me": "me", "messenger_profile": "profile", "message_attachments": "attachment",
             "ids_for_pages": "ids_for_pages", "subscribed_apps": "subscribed_apps", "comments": "comment"}
    if tail in kinds:
        return kinds[tail]
    if tail.endswith("_thread_control"):
        return "thread_control"
    return "object" if tail.isdigit() else "other"  # a user's profile, a Page's fields


@functools.lru_cache(maxsize=4096)  # one HMAC per token, not per call: the same few Pages call all day
def appsecret_proof(app_secret: str, access_token: str) -> str:
    """hex HMAC-SHA256 of the access token keyed with the app secret (Graph's appsecret_proof)."""
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


class GraphClient:
    """A server's one HTTP connection pool to the Graph API, shared by every Page.

    ``base_delay`` is the first backoff step (doubled each retry, with jitter, up to ``max_delay``);
    both default to ``BACKOFF_FIRST_SECONDS`` and ``BACKOFF_MAX_SECONDS``. ``budget`` caps the
    seconds spent on one call including retries, so a reply never hangs the conversation for long:
    past it the pipeline's own retry takes over.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_attempts: int = 4,
        base_delay: float | None = None,
        max_delay: float | None = None,
        budget: float = 15.0,
    ) -> None:
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.base_delay = BACKOFF_FIRST_SECONDS if base_delay is None else base_delay
        self.max_delay = BACKOFF_MAX_SECONDS if max_delay is None else max_delay
        self.budget = budget
        self._session: aiohttp.ClientSession | None = None
        # Told of every attempt: (bot, endpoint kind, "ok" or the error's outcome, whether it was a retry).
        self.observer: Callable[[str, str, str, bool], None] | None = None
        self.batcher = SendBatcher(self)  # Send API calls of a busy Page, together (graph_batch.py)

    @property
    def closed(self) -> bool:
        return self._session is None or self._session.closed

    def session(self) -> aiohttp.ClientSession:
        """The pool, opened on first use (and again after a close)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=100, limit_per_host=50),
                headers={"User-Agent": "botpress-py channel-messenger"},
            )
        return self._session

    async def start(self) -> None:
        """Open the pool now (it also opens lazily on first use)."""
        self.session()

    async def close(self) -> None:
        await self.batcher.close()
        # Taken first: a call retried while it closes opens a new pool, which must stay the client's to close.
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def page(
        self,
        *,
        api_url: str,
        version: str,
        access_token: str,
        app_secret: str,
        logger: logging.Logger | None = None,
        bot_id: str = "",
        batching: bool = False,
    ) -> PageGraph:
        """Calls made with one Page's token (``bot_id`` labels their metrics; ``batching``: its Send API calls
        may go in batch requests when the Page is busy, graph_batch.py)."""
        return PageGraph(self, api_url.rstrip("/") + "/" + version.strip("/"), access_token, app_secret,
                         logger or log, bot_id, batching)

    def observe(self, bot: str, path: str, outcome: str, retried: bool) -> None:
        if self.observer is not None:
            self.observer(bot, endpoint_kind(path), outcome, retried)

    def _backoff(self, attempt: int) -> float:
        step = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        # "Equal jitter": never less than half the step, so retries from many pages spread out
        # without collapsing to zero delay.
        return step / 2 + random.uniform(0, step / 2)

    def request(
        self,
        method: str,
        url: str,
        path: str,
        *,
        access_token: str,
        app_secret: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        logger: logging.Logger = log,
        quiet: bool = False,
        timeout: float | None = None,
        bot: str = "",
    ) -> GraphRequest:
        """One Graph call, ready to send (``perform`` sends it with retries): the token and its appsecret_proof
        in the query. Each failed attempt is logged at warning, or at debug when ``quiet``: for lookups whose
        caller reports a failure itself (once per Page), since they fail alike for every user. ``timeout``
        replaces the pool's per-attempt timeout (an upload Meta fetches for long)."""
        query = dict(params or {})
        query["access_token"] = access_token
        if app_secret:
            query["appsecret_proof"] = appsecret_proof(app_secret, access_token)
        secrets = (access_token, app_secret, query.get("appsecret_proof", ""))
        return GraphRequest(method, url, path, query, body, secrets, logger, quiet, timeout, bot)

    async def attempt(self, request: GraphRequest) -> dict[str, Any] | GraphApiError:
        """One HTTP request, no retry: the JSON answer, or the error it ended with (returned, not raised)."""
        what = request.what
        try:
            async with self.session().request(
                    request.method, request.url, params=request.query, json=request.body,
                    **({"timeout": aiohttp.ClientTimeout(total=request.timeout)} if request.timeout else {})
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after_header = response.headers.get("Retry-After")
                usage_header = response.headers.get("X-Business-Use-Case-Usage")
        except TimeoutError:
            return GraphApiError(f"{what} failed: no answer within {request.timeout or self.timeout:g} s",
                                 permanent=False)
        except aiohttp.ClientError as exc:
            reason = redact(str(exc), request.secrets) or type(exc).__name__
            return GraphApiError(f"{what} failed: {type(exc).__name__}: {reason}", permanent=False)
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = None
        return answer_or_error(what, status, data, retry_after_header, request.secrets, usage_header)

    async def perform(
        self,
        request: GraphRequest,
        *,
        first: GraphApiError | None = None,
        started: float | None = None,
        attempt: Callable[[GraphRequest], Awaitable[dict[str, Any] | GraphApiError]] | None = None,
    ) -> dict[str, Any]:
        """``request`` with retries for transient errors, within the budget; returns the answer or raises.

        ``first``: the first attempt was already made elsewhere (an item of a batch, graph_batch.py) and
        failed so; ``started``: when that call began (the budget counts from it). ``attempt`` makes each
        HTTP request (default ``self.attempt``; the batcher's counts its requests in flight).
        """
        loop = asyncio.get_running_loop()
        deadline = (loop.time() if started is None else started) + self.budget
        send = attempt or self.attempt
        tries = 0
        while True:
            tries += 1
            outcome = first if tries == 1 and first is not None else await send(request)
            if not isinstance(outcome, GraphApiError):
                self.observe(request.bot, request.path, "ok", tries > 1)
                return outcome
            error = outcome
            self.observe(request.bot, request.path, error.outcome, tries > 1)
            delay = self._backoff(tries)
            # A throttled call is not retried here: the caller pauses (pacing.py) or reports it, and
            # retrying at once only digs the hole deeper.
            last_try = error.permanent or error.is_rate_limit or tries >= self.max_attempts \
                or loop.time() + delay > deadline
            request.logger.log(
                logging.DEBUG if request.quiet else logging.WARNING,
                "Graph %s (attempt %d/%d)%s",
                error,
                tries,
                self.max_attempts,
                "" if last_try else f", retrying in {delay:.2f} s",
            )
            if last_try:
                raise error
            await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class GraphRequest:
    """One Graph call as made (the query holds the token and its proof: never log it, ``secrets`` redacts)."""

    method: str
    url: str
    path: str
    query: dict[str, str]
    body: Any
    secrets: tuple[str, ...]
    logger: logging.Logger
    quiet: bool = False
    timeout: float | None = None
    bot: str = ""

    def __repr__(self) -> str:  # the dataclass default would print the token
        return f"<GraphRequest {self.method} {self.path}>"

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class PageGraph:
    """Graph calls on behalf of one Page (its token and its app's secret)."""

    client: GraphClient
    base_url: str
    access_token: str
    app_secret: str
    logger: logging.Logger
    bot_id: str = ""
    batching: bool = False  # Send API calls may go in batch requests (graphBatching, graph_batch.py)

    def __repr__(self) -> str:  # the dataclass default would print the token
        return f"<PageGraph {self.base_url}>"

    async def _call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    body: Any = None, quiet: bool = False, timeout: float | None = None) -> dict[str, Any]:
        return await self.client.perform(self.client.request(
            method,
            self.base_url + path,
            path,
            access_token=self.access_token,
            app_secret=self.app_secret,
            params=params,
            body=body,
            logger=self.logger,
            quiet=quiet,
            timeout=timeout,
            bot=self.bot_id,
        ))

    async def me(self) -> dict[str, Any]:
        """The Page the token belongs to: ``{"id", "name"}``."""
        return await self._call("GET", "/me", params={"fields": "id,name"})

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send API: a message or a sender action; returns ``{recipient_id, message_id?}``."""
        if self.batching:
            return await self.client.batcher.send(self, body)
        return await self._call("POST", SEND_PATH, body=body)

    async def upload_attachment(self, page_id: str, kind: str, url: str, *, platform: str | None = None,
                                timeout: float | None = None) -> dict[str, Any]:
        """Attachment Upload API: Meta fetches ``url`` and keeps it for this Page; returns ``{attachment_id}``.

        ``platform="instagram"`` uploads for the Page's Instagram account (attachments.py).
        """
        body: dict[str, Any] = {"message": {"attachment": {"type": kind, "payload": {"url": url,
                                                                                      "is_reusable": True}}}}
        if platform:
            body["platform"] = platform
        return await self._call("POST", f"/{page_id}/message_attachments", body=body, quiet=True, timeout=timeout)

    async def instagram_account(self, page_id: str) -> str | None:
        """The id of the Instagram professional account linked to the Page, or None when none is."""
        answer = await self._call("GET", f"/{page_id}", params={"fields": "instagram_business_account"})
        linked = answer.get("instagram_business_account")
        account = linked.get("id") if isinstance(linked, dict) else None
        return str(account) if account is not None and str(account).isdigit() else None

    async def user_profile(self, psid: str, fields: str) -> dict[str, Any]:
        """A user's profile fields (contacts.py reports failures, once per Page)."""
        return await self._call("GET", f"/{psid}", params={"fields": fields}, quiet=True)

    async def ids_for_pages(self, psid: str) -> list[tuple[str, str]]:
        """The same person's (Page id, PSID) on the Pages of the business, following the paging cursors."""
        found: list[tuple[str, str]] = []
        params: dict[str, str] = {}
        for _ in range(MAX_ID_PAGES):
            answer = await self._call("GET", f"/{psid}/ids_for_pages", params=params, quiet=True)
            for item in answer.get("data") or []:
                page = item.get("page") if isinstance(item, dict) else None
                if isinstance(page, dict) and page.get("id") and item.get("id"):
                    found.append((str(page["id"]), str(item["id"])))
            paging = answer.get("paging") if isinstance(answer.get("paging"), dict) else {}
            after = (paging.get("cursors") or {}).get("after") if isinstance(paging.get("cursors"), dict) else None
            if not paging.get("next") or not after:
                break
            # Follow the cursor rather than the "next" URL, which carries the token in its query.
            params = {"after": str(after)}
        return found

    async def thread_control(self, action: str, psid: str, *, target_app_id: str | None = None,
                             metadata: str | None = None) -> dict[str, Any]:
        """Conversation routing: ``pass``, ``take``, ``request`` or ``release`` thread control."""
        body: dict[str, Any] = {"recipient": {"id": psid}}
        if action == "pass":
            body["target_app_id"] = int(target_app_id) if target_app_id and target_app_id.isdigit() \
                else target_app_id
        if metadata is not None and action != "release":
            body["metadata"] = metadata
        return await self._call("POST", f"/me/{action}_thread_control", body=body)

    async def reply_to_comment(self, comment_id: str, message: str) -> dict[str, Any]:
        """A public reply under a comment of the Page's feed: ``{"id"}`` of the new comment."""
        return await self._call("POST", f"/{comment_id}/comments", body={"message": message})

    async def set_profile(self, fields: dict[str, Any], *, platform: str | None = None) -> dict[str, Any]:
        """Messenger Profile API; ``platform="instagram"``: the profile of the Page's Instagram account."""
        if platform:
            return await self._call("POST", "/me/messenger_profile", params={"platform": platform},
                                    body={"platform": platform, **fields})
        return await self._call("POST", "/me/messenger_profile", body=fields)

    async def delete_profile(self, fields: list[str], *, platform: str | None = None) -> dict[str, Any]:
        params = {"platform": platform} if platform else None
        return await self._call("DELETE", "/me/messenger_profile", params=params, body={"fields": fields})
