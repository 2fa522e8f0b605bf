"""Webhook signature checks over raw bytes, computed independently with hashlib."""

from __future__ import annotations

import hashlib
import hmac

from channel_messenger.signature import matching_secrets, signature_headers

RAW = b'{"object":"page","entry":[{"id":"1001","messaging":[]}]}'


def sha256(secret: str, raw: bytes = RAW) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def sha1(secret: str, raw: bytes = RAW) -> str:
    return "sha1=" + hmac.new(secret.encode(), raw, hashlib.sha1).hexdigest()


def test_sha256_selects_exactly_the_signing_secret() -> None:
    headers = {"X-Hub-Signature-256": sha256("app-a")}
    assert matching_secrets(RAW, headers, ["app-a", "app-b"]) == {"app-a"}
    assert matching_secrets(RAW, headers, ["app-b"]) == set()


def test_sha1_is_the_fallback_when_sha256_is_absent() -> None:
    assert matching_secrets(RAW, {"X-Hub-Signature": sha1("app-b")}, ["app-a", "app-b"]) == {"app-b"}


def test_a_bad_sha256_is_not_rescued_by_a_good_sha1() -> None:
    headers = {"X-Hub-Signature-256": sha256("wrong"), "X-Hub-Signature": sha1("app-a")}
    assert matching_secrets(RAW, headers, ["app-a"]) == set()
    malformed = {"X-Hub-Signature-256": "md5=abc", "X-Hub-Signature": sha1("app-a")}
    assert matching_secrets(RAW, malformed, ["app-a"]) == set()


def test_signature_is_over_the_raw_bytes() -> None:
    reformatted = b'{"object": "page", "entry": [{"id": "1001", "messaging": []}]}'
    assert matching_secrets(reformatted, {"X-Hub-Signature-256": sha256("app-a")}, ["app-a"]) == set()


def test_uppercase_hex_and_spaces_are_tolerated() -> None:
    upper = "sha256=" + sha256("app-a").split("=", 1)[1].upper()
    assert matching_secrets(RAW, {"X-Hub-Signature-256": " " + upper}, ["app-a"]) == {"app-a"}


def test_missing_empty_or_garbage_signatures_match_nothing() -> None:
    assert matching_secrets(RAW, {}, ["app-a"]) == set()
    assert matching_secrets(RAW, {"X-Hub-Signature-256": "sha256="}, ["app-a"]) == set()
    assert matching_secrets(RAW, {"X-Hub-Signature-256": "sha256=zzz\u00e9"}, ["app-a"]) == set()
    assert matching_secrets(RAW, {"X-Hub-Signature-256": sha256("")}, [""]) == set(), "empty secrets never match"


def test_signature_headers_helper_matches_meta_format() -> None:
    headers = signature_headers("app-a", RAW)
    assert headers == {"X-Hub-Signature-256": sha256("app-a"), "X-Hub-Signature": sha1("app-a")}
