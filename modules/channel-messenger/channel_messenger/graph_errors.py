"""Graph API errors: Meta's error answers as GraphApiError, and which of them are worth retrying.

Meta's errors come as ``{"error": {message, type, code, error_subcode, fbtrace_id}}``. Some
are worth retrying (server trouble, rate limits), most mean "this request will never work"
(bad token, bad parameter, user unreachable) and retrying them only burns rate limit. Shared by
the single calls (graph_client.py) and the items of a batch request (graph_batch.py).
"""

from __future__ import annotations

import json
from typing import Any

from botpress_py.sdk import DeliveryError

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


def redact(text: str, secrets: tuple[str, ...]) -> str:
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
    message = redact(str(error.get("message") or f"HTTP {status}"), secrets)
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


def answer_or_error(what: str, status: int, data: Any, retry_after_header: str | None, secrets: tuple[str, ...],
                    usage_header: str | None = None) -> dict[str, Any] | GraphApiError:
    """A Graph answer (status and parsed JSON body, None when it was not JSON) as the call's outcome."""
    if 200 <= status < 300 and isinstance(data, dict) and "error" not in data:
        return data
    if 200 <= status < 300 and not isinstance(data, dict):
        return GraphApiError(f"{what} failed: the answer is not a JSON object (HTTP {status})", permanent=False,
                             status=status)
    return error_from_response(what, status, data, retry_after_header, secrets, usage_header)
