"""Visitor identity: a random user id and a token that proves it, signed with the server's key.

A token is ``<userId>.<signature>``, where the signature is an HMAC-SHA256 of the bot id and
the user id under ``server.secret("visitor-tokens")``. Nothing is stored per visitor: the
server checks a token by signing again. A token is valid for one bot only, and every
token stops working when the key file (``data/secrets/channel-web.visitor-tokens.key``) is
deleted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

USER_ID_PATTERN = re.compile(r"^v[A-Za-z0-9_-]{22}$")
_SIGNATURE_LENGTH = 43  # base64url of 32 bytes, without padding


class VisitorTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, bot_id: str, user_id: str) -> str:
        digest = hmac.digest(self._key, f"channel-web:v1:{bot_id}:{user_id}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def new_visitor(self, bot_id: str) -> tuple[str, str]:
        """A fresh (user id, token) pair for this bot."""
        user_id = "v" + secrets.token_urlsafe(16)  # 128 random bits, 22 characters
        return user_id, f"{user_id}.{self._sign(bot_id, user_id)}"

    def verify(self, bot_id: str, token: object) -> str | None:
        """The user id a token proves for this bot, or None when it is malformed or forged."""
        if not isinstance(token, str) or len(token) > 100:
            return None
        user_id, _, signature = token.partition(".")
        if not USER_ID_PATTERN.match(user_id) or len(signature) != _SIGNATURE_LENGTH:
            return None
        # compare_digest: the time taken does not tell how much of a forged signature was right.
        if not hmac.compare_digest(signature.encode(), self._sign(bot_id, user_id).encode()):
            return None
        return user_id
