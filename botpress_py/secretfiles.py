"""Secrets the server generates for itself (signing keys, tokens), kept in files only its user reads.

Created once with 0600 permissions (written under a temporary name, then renamed, so a crash
never leaves half a key), read back at every start: restarts keep tokens signed with them valid.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

SECRET_BYTES = 32


def load_or_create_secret(path: Path, nbytes: int = SECRET_BYTES) -> bytes:
    """The secret stored at ``path`` (hex text), created with ``nbytes`` random bytes if missing.

    A file readable by others is tightened to 0600 (and still used): changing the key would
    invalidate what was signed with it, and the permission is what was wrong.
    """
    path = Path(path)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(nbytes) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process created it meanwhile: theirs wins
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
    return _read(path)


def read_secret(path: Path) -> bytes | None:
    """The secret stored at ``path``, or None when there is none yet (never creates it)."""
    try:
        return _read(Path(path))
    except FileNotFoundError:
        return None


def _read(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(path, 0o600)
    text = path.read_text(encoding="ascii").strip()
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: not a hex-encoded secret; delete the file to have a new one generated") from None
    if len(value) < 16:
        raise ValueError(f"{path}: the secret is shorter than 16 bytes; delete the file to have a new one generated")
    return value
