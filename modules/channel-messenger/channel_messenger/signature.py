"""Meta's webhook signatures: ``X-Hub-Signature-256`` (HMAC-SHA256 of the body keyed with the App Secret),
and the older ``X-Hub-Signature`` (SHA-1), checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

SIGNATURE_SHA256 = "X-Hub-Signature-256"
SIGNATURE_SHA1 = "X-Hub-Signature"


def signature_headers(app_secret: str, raw: bytes) -> dict[str, str]:
    """The headers Meta sends with a delivery (used by the emulator and the simulate command)."""
    key = app_secret.encode()
    return {
        SIGNATURE_SHA256: "sha256=" + hmac.new(key, raw, hashlib.sha256).hexdigest(),
        SIGNATURE_SHA1: "sha1=" + hmac.new(key, raw, hashlib.sha1).hexdigest(),
    }


def _presented_signature(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(algorithm, hex digest) from the strongest signature header present, or None."""
    for header, algorithm in ((SIGNATURE_SHA256, "sha256"), (SIGNATURE_SHA1, "sha1")):
        value = headers.get(header)
        if value:
            prefix, _, digest = value.strip().partition("=")
            # A sha256 header that is malformed must not fall back to the weaker sha1 one.
            if prefix.lower() != algorithm or not digest:
                return algorithm, ""
            return algorithm, digest.strip().lower()
    return None


def matching_secrets(raw: bytes, headers: Mapping[str, str], secrets: Iterable[str]) -> set[str]:
    """The app secrets whose HMAC of ``raw`` equals the presented signature (constant-time compares)."""
    presented = _presented_signature(headers)
    if presented is None or not presented[1]:
        return set()
    algorithm, digest = presented
    digestmod = "sha256" if algorithm == "sha256" else "sha1"
    valid: set[str] = set()
    presented_digest = digest.encode("ascii", "replace")
    for secret in secrets:
        if not secret:
            continue
        expected = hmac.digest(secret.encode(), raw, digestmod).hex().encode()
        if hmac.compare_digest(expected, presented_digest):
            valid.add(secret)
    return valid
