"""The emulator's Pages keep their Messenger profile across restarts, as Facebook's Pages do.

The channel pushes a Page's profile (greeting, Get Started button, persistent menu) only when it
changed since its last push, which the server remembers (``profile.py``): a Graph API that
forgot the profile at each restart would leave the Page without its Get Started button until
the bot's config changed. So ``messenger emulator`` and ``start --emulator`` keep the profile of
each Page in ``<data folder>/emulator/page-profiles.json`` (``{page id: profile}``; nothing
secret: greetings, payloads, menu titles) and load it when they start.

The file is small and written only when a profile call succeeds (Meta allows about 10 per 10
minutes per Page), atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROFILES_FILE = Path("emulator") / "page-profiles.json"  # under the data folder


class ProfilesFileError(ValueError):
    """The file cannot be used; the message says which file and why."""


def load_profiles(path: Path) -> dict[str, dict[str, Any]]:
    """The profiles kept in ``path`` (``{}`` when it does not exist); ProfilesFileError when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ProfilesFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProfilesFileError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ProfilesFileError(f"{path} must hold a JSON object of page id -> profile object")
    return {str(page_id): dict(profile) for page_id, profile in data.items()}


def save_profiles(path: Path, profiles: dict[str, dict[str, Any]]) -> None:
    """Write ``profiles`` to ``path`` atomically (its folder is created when missing); OSError when it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(json.dumps(profiles, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
