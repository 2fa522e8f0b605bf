"""Access-token health: what the channel does once Meta refuses a bot's Page token (Graph error 190).

From the first refusal (while sending or mounting) the bot's status is an explicit error ("access
token invalid since <time>: <Meta's message>"), logged once, counted; the bot's incoming events
are still stored and its replies wait in the outbox (``DeliveryError(hold=True)``: pending, no
attempt used up) without a Graph call per reply. The state belongs to the token: a config reload
with the same token keeps it, a new token starts afresh, and the core retries what waited as soon
as the bot is mounted again. Every ``PROBE_SECONDS`` one send still tries the old token, in case
Meta accepts it again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from botpress_py.sdk import DeliveryError

from .graph_client import GraphApiError, failure_hint
from .pages import PageBinding

PROBE_SECONDS = 60.0


@dataclass
class Refusal:
    token: str  # a digest of the refused token, never the token
    since: float  # time.time() of the first refusal
    message: str
    probed_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class TokenHealth:
    """Per bot: the refusal of its current token, if Meta refused it. ``on_change(binding)`` recomputes the
    bot's status when the token's state changes; ``counted(bot_id)`` counts a refusal in the metrics."""

    def __init__(self, on_change: Callable[[PageBinding], None], counted: Callable[[str], None]) -> None:
        self._refused: dict[str, Refusal] = {}
        self._on_change = on_change
        self._counted = counted

    def refusal(self, binding: PageBinding) -> Refusal | None:
        """The refusal of the binding's token, or None (a changed token forgets the old one's)."""
        found = self._refused.get(binding.bot_id)
        if found is not None and found.token != _digest(binding.settings.access_token):
            del self._refused[binding.bot_id]
            return None
        return found

    def valid(self, bot_id: str) -> bool:
        return bot_id not in self._refused

    def status_reason(self, binding: PageBinding) -> str | None:
        found = self.refusal(binding)
        if found is None:
            return None
        since = dt.datetime.fromtimestamp(found.since, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return f"access token invalid since {since}: {found.message}; the bot's replies wait in the outbox until " \
               "the token is replaced (generate a new Page Access Token in Meta App > Messenger > Access Tokens and " \
               "put it in accessToken)"

    def check(self, binding: PageBinding) -> None:
        """Before a send: hold it (no Graph call) while the token is known to be refused, but for a probe now
        and then."""
        found = self.refusal(binding)
        if found is None:
            return
        now = time.time()
        if now - found.probed_at >= PROBE_SECONDS:
            found.probed_at = now
            return  # this send tries the token again
        raise DeliveryError(f"held: {self.status_reason(binding)}", hold=True)

    def refused(self, binding: PageBinding, error: GraphApiError) -> None:
        """Meta refused the token (code 190): the bot's status turns to error, logged and counted once per token."""
        if self.refusal(binding) is not None:
            return
        now = time.time()
        self._refused[binding.bot_id] = Refusal(_digest(binding.settings.access_token), now, str(error), now)
        binding.bot.logger.error("channel-messenger: Meta refused the access token of bot '%s' (%s); %s. Its "
                                 "replies wait in the outbox until the token is replaced", binding.bot_id, error,
                                 failure_hint(error))
        self._counted(binding.bot_id)
        self._on_change(binding)

    def accepted(self, binding: PageBinding) -> None:
        """A call with the token succeeded: a refusal of it is over."""
        if self._refused.pop(binding.bot_id, None) is not None:
            binding.bot.logger.warning("channel-messenger: Meta accepts the access token of bot '%s': the replies "
                                       "that waited are sent", binding.bot_id)
            self._on_change(binding)

    def hold(self, binding: PageBinding) -> DeliveryError:
        return DeliveryError(f"held: {self.status_reason(binding)}", hold=True)

    def forget(self, bot_id: str) -> None:
        self._refused.pop(bot_id, None)
