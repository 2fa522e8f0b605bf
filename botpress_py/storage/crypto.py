"""Encryption at rest of masked events (data protection): their text never reaches a database file in clear.

A channel flags an event ``mask`` when its bot must not keep message texts. Such an event still
has to be stored before its webhook is acknowledged, and read back if the process restarts
before it is processed, so its inbox and outbox rows hold it encrypted (AES-GCM, from the
``cryptography`` package) until processing replaces it by the masked copy. The key comes from
env ``BP_STORAGE_KEY`` (hex) or, by default, from ``data/secrets/storage.key`` (generated on
first start, 0600); it never goes into the database.

A stored value is ``enc1:<key id>:<base64 of nonce + ciphertext + tag>``. The key id (a hash of
the key, not the key) lets a row written with another key fail with a message that says so,
instead of an anonymous authentication error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..secretfiles import load_or_create_secret

PREFIX = "enc1:"
KEY_ENV = "BP_STORAGE_KEY"
_NONCE_BYTES = 12
_MIN_SECRET_BYTES = 16
_HKDF_INFO = b"botpress-py storage encryption v1"


class StorageKeyError(ValueError):
    """The storage key cannot be used (bad hex, too short, unreadable file); ``where`` names its source."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


class UnreadableStoredValue(Exception):
    """A stored value encrypted with another key (or damaged): the message says which key to restore."""


class EventCipher:
    """Encrypts and decrypts stored texts with one key; ``source`` says where the key came from."""

    def __init__(self, secret: bytes, source: str) -> None:
        if len(secret) < _MIN_SECRET_BYTES:
            raise StorageKeyError(source, f"{source}: the storage key must be at least {_MIN_SECRET_BYTES} bytes "
                                          f"({2 * _MIN_SECRET_BYTES} hex digits)")
        # The secret may be any length: HKDF turns it into the 256-bit AES key.
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"key id:" + key).hexdigest()[:8]
        self.source = source

    def __repr__(self) -> str:
        return f"<EventCipher key {self.key_id} from {self.source}>"  # never the key itself

    def encrypt(self, text: str) -> str:
        # A random 96-bit nonce per value: safe for far more values than a chatbot stores per key.
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode("utf-8", "surrogatepass"), None)
        return f"{PREFIX}{self.key_id}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, stored: str) -> str:
        """The clear text of ``stored`` (a value ``encrypt`` made); raises UnreadableStoredValue."""
        key_id, _, body = stored[len(PREFIX):].partition(":")
        if key_id != self.key_id:
            raise UnreadableStoredValue(
                f"stored encrypted with storage key {key_id}, but the key from {self.source} is {self.key_id}: "
                f"restore the key it was written with ({KEY_ENV} or data/secrets/storage.key, the same on every "
                "server sharing this database)")
        try:
            raw = base64.b64decode(body.encode("ascii"), validate=True)
            clear = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)
        except (InvalidTag, binascii.Error, ValueError, UnicodeEncodeError):
            raise UnreadableStoredValue(f"stored encrypted with storage key {key_id}, but it is damaged and "
                                        "cannot be decrypted") from None
        return clear.decode("utf-8", "surrogatepass")


def is_encrypted(stored: str | None) -> bool:
    return stored is not None and stored.startswith(PREFIX)


def load_cipher(data_dir: Path, env: Mapping[str, str]) -> EventCipher:
    """The storage key from env ``BP_STORAGE_KEY`` (hex), else ``<data_dir>/secrets/storage.key`` (created
    with a random key when missing). Raises StorageKeyError naming the source when it cannot be used."""
    text = env.get(KEY_ENV, "").strip()
    if text:
        where = f"env {KEY_ENV}"
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise StorageKeyError(where, f"{where} is not hex: give the key as hex digits, e.g. the output "
                                         "of `python -c 'import secrets; print(secrets.token_hex(32))'`") from None
        return EventCipher(secret, where)
    path = Path(data_dir) / "secrets" / "storage.key"
    try:
        secret = load_or_create_secret(path)
    except (OSError, ValueError) as exc:
        raise StorageKeyError(str(path), f"cannot use the storage key file {path}: {exc}") from None
    return EventCipher(secret, str(path))
