"""Sessions of the admin page: a signed cookie instead of the token, a CSRF token per session,
and a throttle on failed logins.

- The cookie holds a random session id and its expiry, signed (HMAC-SHA256) with a key the
  server generates in ``data/secrets/admin-sessions.key`` (0600). The signature also covers a
  fingerprint of the admin token in use, so changing the token ends every session. The token
  itself is never in the cookie.
- The CSRF token of a session is derived from its id with the same key: nothing is stored per
  session, so sessions survive restarts. A logout revokes the session id until it expires
  (kept in storage, so a restart does not bring it back).
- ``FailureThrottle`` counts failed logins (and wrong bearer tokens) per client address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

COOKIE = "bp-admin-session"
# Browsers keep a __Host- cookie only when it is Secure, has Path=/ and no Domain: nobody on a
# sibling subdomain can set or shadow it.
SECURE_COOKIE = "__Host-bp-admin-session"
CSRF_HEADER = "X-CSRF-Token"
REVOKED_KEY = "revoked-sessions"
# Failed logins per client address: this many at once, then one more every FAILURE_REFILL seconds.
FAILURE_BURST = 10
FAILURE_REFILL = 6.0
# Client addresses remembered; the least recently seen is forgotten first (bounded memory).
FAILURE_ADDRESSES = 10_000
_SESSION_ID_BYTES = 18


class KeyValue(Protocol):
    async def get(self, key: str, default: Any = None) -> Any: ...

    async def set(self, key: str, value: Any) -> None: ...


@dataclass(frozen=True)
class Session:
    id: str
    expires: int  # epoch seconds
    csrf: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class AdminSessions:
    def __init__(self, key: bytes, token: Callable[[], str], lifetime: float, *, secure: bool,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._token = token
        self.lifetime = lifetime
        self.secure = secure
        self.cookie_name = SECURE_COOKIE if secure else COOKIE
        self._clock = clock
        self._revoked: dict[str, int] = {}  # session id -> its expiry (forgotten after it)
        self._kv: KeyValue | None = None

    # -- signing ---------------------------------------------------------------------------------
    def _mac(self, *parts: str) -> str:
        fingerprint = hashlib.sha256(self._token().encode()).hexdigest()
        message = "\n".join((*parts, fingerprint)).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def csrf_for(self, session_id: str) -> str:
        return self._mac("csrf", session_id)

    def issue(self) -> tuple[str, Session]:
        """A new session: (cookie value, session)."""
        session_id = _b64(secrets.token_bytes(_SESSION_ID_BYTES))
        expires = int(self._clock() + self.lifetime)
        value = f"{session_id}.{expires}.{self._mac('session', session_id, str(expires))}"
        return value, Session(session_id, expires, self.csrf_for(session_id))

    def verify(self, cookie: str) -> Session | None:
        """The session a cookie value proves, or None (forged, expired, revoked, or signed for
        another admin token)."""
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or len(cookie) > 200:
            return None
        session_id, expires_text, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac("session", session_id, expires_text).encode()):
            return None
        expires = int(expires_text)
        if expires <= self._clock() or session_id in self._revoked:
            return None
        return Session(session_id, expires, self.csrf_for(session_id))

    def check_csrf(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())

    # -- cookies -----------------------------------------------------------------------------------
    def cookie_attributes(self, max_age: int) -> dict[str, Any]:
        return {"max_age": max_age, "path": "/", "httponly": True, "samesite": "Strict", "secure": self.secure}

    # -- logout --------------------------------------------------------------------------------------
    async def load_revoked(self, kv: KeyValue) -> None:
        """Read the revoked sessions back from storage (at start)."""
        self._kv = kv
        stored = await kv.get(REVOKED_KEY, {})
        if isinstance(stored, dict):
            self._revoked = {k: int(v) for k, v in stored.items() if isinstance(v, int)}
        self._forget_expired()

    async def revoke(self, session: Session) -> None:
        """End a session before its expiry (logout); the cookie stops working at once."""
        self._forget_expired()
        self._revoked[session.id] = session.expires
        if self._kv is not None:
            await self._kv.set(REVOKED_KEY, dict(self._revoked))

    def _forget_expired(self) -> None:
        now = self._clock()
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}


class FailureThrottle:
    """Failed attempts per client address: ``FAILURE_BURST`` at once, then one per ``FAILURE_REFILL`` s.

    ``wait(address)`` is 0 while the address may try, else the seconds until it may again;
    a successful attempt costs nothing, and a blocked address is refused before its token is
    even compared (a right guess must not get through a throttle).
    """

    def __init__(self, burst: int = FAILURE_BURST, refill: float = FAILURE_REFILL, *,
                 clock: Callable[[], float] = time.monotonic, max_addresses: int = FAILURE_ADDRESSES) -> None:
        self.burst = burst
        self.refill = refill
        self._clock = clock
        self._max = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def _tokens(self, address: str) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), self._clock()))
        return min(float(self.burst), tokens + (self._clock() - at) / self.refill)

    def wait(self, address: str) -> float:
        tokens = self._tokens(address)
        return 0.0 if tokens >= 1 else (1 - tokens) * self.refill

    def failed(self, address: str) -> None:
        tokens = max(0.0, self._tokens(address) - 1)
        self._buckets.pop(address, None)
        self._buckets[address] = (tokens, self._clock())
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
