"""Graph API calls: one pooled HTTP session, appsecret_proof, retries for transient errors only.

Meta's errors come as ``{"error": {message, type, code, error_subcode, fbtrace_id}}``. Some
are worth retrying (server trouble, rate limits), most mean "this request will never work"
(bad token, bad parameter, user unreachable) and retrying them only burns rate limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from botpress_py.sdk import DeliveryError

log = logging.getLogger("botpress_py.module.channel-messenger.graph")

# Codes Meta documents as temporary: unknown/service errors, throttling, "try again".
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 341, 613, 1200, 80006})
# Codes (or subcodes) that never succeed on a resend of the same request.
PERMANENT_CODES = frozenset({100, 190, 551, 2018300})
# With codes 10/200: the user is outside the 24 h window, a message tag is needed.
OUTSIDE_WINDOW_SUBCODES = frozenset({2018278, 2534022})
AUTH_ERROR_CODE = 190
# Meta's throttling: app (4), user (17), Page (32), "calls exceeded the rate limit" (613), Messenger's own (80006).
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80006})
# Codes counted under their own label in the metrics; any other is "other" (the label stays bounded).
COUNTED_CODES = frozenset({1, 2, 4, 10, 17, 32, 100, 190, 200, 230, 551, 613, 1200, 2018278, 2018300, 80006})
# Another app (a human agent's inbox, usually) owns the conversation: only it may send.
THREAD_OWNED_ELSEWHERE = 2018300
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


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """hex HMAC-SHA256 of the access token keyed with the app secret (Graph's appsecret_proof)."""
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


class GraphApiError(DeliveryError):
    """A failed Graph call. ``code`` is Meta's error code (None for network errors and timeouts)."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status: int | None = None,
        code: int | None = None,
        subcode: int | None = None,
        error_type: str | None = None,
        fbtrace_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, permanent=permanent, retry_after=retry_after, code=code)
        self.status = status
        self.subcode = subcode
        self.error_type = error_type
        self.fbtrace_id = fbtrace_id

    @property
    def is_auth_error(self) -> bool:
        return self.code == AUTH_ERROR_CODE

    @property
    def is_rate_limit(self) -> bool:
        """Meta throttles the app, the Page or the Messenger use case: wait before calling again."""
        return self.code in RATE_LIMIT_CODES or self.status == 429

    @property
    def outcome(self) -> str:
        """The metrics label of this failure: Meta's code when it is a known one, else a bounded class."""
        if self.code in COUNTED_CODES:
            return str(self.code)
        if self.code is not None:
            return "other"
        return "network" if self.status is None else f"http_{self.status // 100}xx"

    @property
    def is_permission_error(self) -> bool:
        """The app lacks a permission (codes 10 and 200-299), e.g. pages_user_gender for a profile field."""
        return self.code is not None and (self.code == 10 or 200 <= self.code <= 299) \
            and self.subcode != THREAD_OWNED_ELSEWHERE

    @property
    def thread_owned_elsewhere(self) -> bool:
        """Meta refused because another app has thread control of the conversation."""
        return THREAD_OWNED_ELSEWHERE in (self.code, self.subcode)


def failure_hint(error: GraphApiError) -> str:
    """What the operator can do about a failed Graph call, for a status reason."""
    if error.is_auth_error:
        return ("the access token is invalid, expired or revoked: generate a new Page Access Token in Meta App > "
                "Messenger > Access Tokens and put it in accessToken")
    if error.code is None and error.status is None:
        return "the Graph API could not be reached: check the network and graphApiUrl; reload the bot to retry"
    return "reload the bot to retry once the cause is fixed"


def is_transient(status: int | None, code: int | None, subcode: int | None, flagged_transient: bool) -> bool:
    """Whether resending the same request later may succeed."""
    if code in PERMANENT_CODES or subcode in PERMANENT_CODES:
        return False
    if code in (10, 200) and subcode in OUTSIDE_WINDOW_SUBCODES:
        return False
    if code in TRANSIENT_CODES or flagged_transient:
        return True
    if status is None:
        return True  # network error or timeout: the request may never have arrived
    return status >= 500 or status == 429


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _regain_access_seconds(header: str) -> float | None:
    """Seconds until Meta lifts a throttle, from ``X-Business-Use-Case-Usage`` (minutes, per business id)."""
    try:
        usage = json.loads(header)
    except ValueError:
        return None
    minutes = [entry.get("estimated_time_to_regain_access") for entries in
               (usage.values() if isinstance(usage, dict) else []) if isinstance(entries, list)
               for entry in entries if isinstance(entry, dict)]
    found = [float(m) for m in minutes if isinstance(m, int | float) and m > 0]
    return max(found) * 60 if found else None


def error_from_response(
    what: str, status: int, body: Any, retry_after_header: str | None, secrets: tuple[str, ...],
    usage_header: str | None = None,
) -> GraphApiError:
    """Turn a non-2xx (or error-carrying) Graph answer into a GraphApiError."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    code = _int_or_none(error.get("code"))
    subcode = _int_or_none(error.get("error_subcode"))
    message = _redact(str(error.get("message") or f"HTTP {status}"), secrets)
    fbtrace_id = error.get("fbtrace_id")
    transient = is_transient(status, code, subcode, error.get("is_transient") is True)
    retry_after = None
    if retry_after_header and retry_after_header.strip().isdigit():
        retry_after = float(retry_after_header.strip())
    elif usage_header:
        retry_after = _regain_access_seconds(usage_header)
    details = ", ".join(
        part
        for part in (
            f"HTTP {status}",
            f"code {code}" if code is not None else "",
            f"subcode {subcode}" if subcode is not None else "",
            f"fbtrace_id {fbtrace_id}" if fbtrace_id else "",
        )
        if part
    )
    return GraphApiError(
        f"{what} failed: {message} ({details})",
        permanent=not transient,
        status=status,
        code=code,
        subcode=subcode,
        error_type=error.get("type"),
        fbtrace_id=str(fbtrace_id) if fbtrace_id else None,
        retry_after=retry_after,
    )


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

    @property
    def closed(self) -> bool:
        return self._session is None or self._session.closed

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=100, limit_per_host=50),
                headers={"User-Agent": "botpress-py channel-messenger"},
            )
        return self._session

    async def start(self) -> None:
        """Open the pool now (it also opens lazily on first use)."""
        self._get_session()

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def page(
        self,
        *,
        api_url: str,
        version: str,
        access_token: str,
        app_secret: str,
        logger: logging.Logger | None = None,
        bot_id: str = "",
    ) -> PageGraph:
        """Calls made with one Page's token (``bot_id`` labels their metrics)."""
        return PageGraph(self, api_url.rstrip("/") + "/" + version.strip("/"), access_token, app_secret,
                         logger or log, bot_id)

    def _observe(self, bot: str, path: str, outcome: str, retried: bool) -> None:
        if self.observer is not None:
            self.observer(bot, endpoint_kind(path), outcome, retried)

    def _backoff(self, attempt: int) -> float:
        step = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        # "Equal jitter": never less than half the step, so retries from many pages spread out
        # without collapsing to zero delay.
        return step / 2 + random.uniform(0, step / 2)

    async def call(
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
    ) -> dict[str, Any]:
        """One Graph call with retries; returns the JSON answer or raises GraphApiError.

        Each failed attempt is logged at warning, or at debug when ``quiet``: for lookups whose
        caller reports a failure itself (once per Page), since they fail alike for every user.
        ``timeout`` replaces the pool's per-attempt timeout (an upload Meta fetches for long).
        """
        query = dict(params or {})
        query["access_token"] = access_token
        if app_secret:
            query["appsecret_proof"] = appsecret_proof(app_secret, access_token)
        secrets = (access_token, app_secret, query.get("appsecret_proof", ""))
        what = f"{method} {path}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        session = self._get_session()
        attempt = 0
        while True:
            attempt += 1
            error: GraphApiError
            try:
                async with session.request(method, url, params=query, json=body,
                                           **({"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout else {})
                                           ) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after_header = response.headers.get("Retry-After")
                    usage_header = response.headers.get("X-Business-Use-Case-Usage")
            except TimeoutError:
                error = GraphApiError(f"{what} failed: no answer within {timeout or self.timeout:g} s",
                                      permanent=False)
            except aiohttp.ClientError as exc:
                reason = _redact(str(exc), secrets) or type(exc).__name__
                error = GraphApiError(f"{what} failed: {type(exc).__name__}: {reason}", permanent=False)
            else:
                try:
                    data = json.loads(raw) if raw else {}
                except ValueError:
                    data = None
                if 200 <= status < 300 and isinstance(data, dict) and "error" not in data:
                    self._observe(bot, path, "ok", attempt > 1)
                    return data
                if 200 <= status < 300 and not isinstance(data, dict):
                    error = GraphApiError(f"{what} failed: the answer is not a JSON object (HTTP {status})",
                                          permanent=False, status=status)
                else:
                    error = error_from_response(what, status, data, retry_after_header, secrets, usage_header)

            self._observe(bot, path, error.outcome, attempt > 1)
            delay = self._backoff(attempt)
            # A throttled call is not retried here: the caller pauses (pacing.py) or reports it, and
            # retrying at once only digs the hole deeper.
            last_try = error.permanent or error.is_rate_limit or attempt >= self.max_attempts \
                or loop.time() + delay > deadline
            logger.log(
                logging.DEBUG if quiet else logging.WARNING,
                "Graph %s (attempt %d/%d)%s",
                error,
                attempt,
                self.max_attempts,
                "" if last_try else f", retrying in {delay:.2f} s",
            )
            if last_try:
                raise error
            await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class PageGraph:
    """Graph calls on behalf of one Page (its token and its app's secret)."""

    client: GraphClient
    base_url: str
    access_token: str
    app_secret: str
    logger: logging.Logger
    bot_id: str = ""

    def __repr__(self) -> str:  # the dataclass default would print the token
        return f"<PageGraph {self.base_url}>"

    async def _call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    body: Any = None, quiet: bool = False, timeout: float | None = None) -> dict[str, Any]:
        return await self.client.call(
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
        )

    async def me(self) -> dict[str, Any]:
        """The Page the token belongs to: ``{"id", "name"}``."""
        return await self._call("GET", "/me", params={"fields": "id,name"})

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send API: a message or a sender action; returns ``{recipient_id, message_id?}``."""
        return await self._call("POST", "/me/messages", body=body)

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
