"""The admin token: which one the server uses, and where the command line finds the same one.

Precedence, the first one set wins:

1. the environment variable ``BP_ADMIN_TOKEN``;
2. ``admin.token`` in ``data/global/botpress.config.json``;
3. the local token file ``data/secrets/admin.token``, generated (random, permissions 0600) at
   the server's first start when neither of the others is set.

So a server started on a fresh data folder always has a token, and a command-line verb
pointed at the same data folder finds it there: a local operator sets nothing up. The server
reads its token once, at start; a token set later in the file or the environment applies at
the next start, and the server's 403 says so when it sees the new one.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jsonfiles import ConfigFileError, load_json_file
from .secretfiles import load_or_create_secret, read_secret

TOKEN_FILE = Path("secrets") / "admin.token"
TOKEN_BYTES = 32
ENV_NAME = "BP_ADMIN_TOKEN"
# How often a refused token may make the server read its config file again (to tell a
# token that needs a restart from a wrong one): failures are throttled, and so is this.
_RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class AdminToken:
    value: str
    source: str  # "env", "config" or "file"

    def describe(self) -> str:
        """Where the token comes from, for messages anyone may read: never the token, nor where
        the data folder is on disk."""
        return {"env": f"the environment variable {ENV_NAME}",
                "config": "admin.token in <data>/global/botpress.config.json",
                "file": f"the token file <data>/{TOKEN_FILE.as_posix()}"}[self.source]


def token_file(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def explicit_token(env: Mapping[str, str], config_token: str) -> AdminToken | None:
    """The token set by the operator (environment first, then the config file), or None.

    ``config_token`` is ``admin.token`` after environment overrides (what ``ServerConfig``
    holds), so the environment is looked at first to name the right source.
    """
    if env.get(ENV_NAME):
        return AdminToken(env[ENV_NAME], "env")
    if config_token:
        return AdminToken(config_token, "config")
    return None


def server_token(data_dir: Path, env: Mapping[str, str], config_token: str) -> AdminToken:
    """The token a server uses: the operator's, else the local token file (created if missing).

    Raises ValueError (naming the file) when the token file exists but is not one this
    server wrote (not hex, too short): deleting it makes a new one.
    """
    explicit = explicit_token(env, config_token)
    if explicit is not None:
        return explicit
    path = token_file(data_dir)
    return AdminToken(load_or_create_secret(path, TOKEN_BYTES).hex(), "file")


def local_token(data_dir: Path, env: Mapping[str, str], config_token: str) -> AdminToken | None:
    """The token a command-line verb sends: the same precedence, but never creates the file."""
    explicit = explicit_token(env, config_token)
    if explicit is not None:
        return explicit
    path = token_file(data_dir)
    try:
        secret = read_secret(path)
    except (OSError, ValueError):
        return None
    return None if secret is None else AdminToken(secret.hex(), "file")


class RestartCheck:
    """Tells whether a refused token is the one the server would use after a restart.

    The server reads its token at start. When an operator then sets ``admin.token`` (or
    deletes it, leaving the token file), the command line sends the new token and is
    refused: that answer should say "restart the server", not "wrong token".
    """

    def __init__(self, data_dir: Path, env: Mapping[str, str], config_file: Path, in_use: AdminToken) -> None:
        self._data_dir = data_dir
        self._env = dict(env)
        self._config_file = config_file
        self._in_use = in_use
        self._checked_at = float("-inf")
        self._next: AdminToken | None = in_use

    def token_after_restart(self) -> AdminToken | None:
        """What a restart would use now (read again at most once a second), or None if unknown."""
        now = time.monotonic()
        if now - self._checked_at >= _RECHECK_SECONDS:
            self._checked_at = now
            self._next = self._read()
        return self._next

    def _read(self) -> AdminToken | None:
        try:
            data: Any = load_json_file(self._config_file) if self._config_file.exists() else {}
        except ConfigFileError:
            return None
        admin = data.get("admin") if isinstance(data, dict) else None
        config_token = admin.get("token", "") if isinstance(admin, dict) else ""
        return local_token(self._data_dir, self._env, config_token if isinstance(config_token, str) else "")

    def needs_restart(self, given: str) -> AdminToken | None:
        """The token source a restart would switch to, when ``given`` is that token."""
        upcoming = self.token_after_restart()
        if upcoming is None or upcoming.value == self._in_use.value:
            return None
        if not hmac.compare_digest(upcoming.value.encode(), given.encode()):
            return None
        return upcoming
