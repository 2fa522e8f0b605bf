"""Graph API version health: how long Meta keeps the configured ``graphApiVersion`` working.

Meta's schedule ships as data (graph_versions.json, with the page it was copied from). A version
expiring within ``WARN_DAYS`` is a warning (logged at mount and daily, shown with the bot's status);
an expired one is an error in ``GET /status``: Meta then answers its calls with the oldest version
still available, whose behaviour the bot was never tried with.

"Today" comes from ``today()``, which reads ``BP_MESSENGER_TODAY`` (``YYYY-MM-DD``) when set: the knob
lets an operator (or a test) see what the check will say on a given day without changing the clock.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SCHEDULE_FILE = Path(__file__).with_name("graph_versions.json")
WARN_DAYS = 90
TODAY_ENV = "BP_MESSENGER_TODAY"
_VERSION = re.compile(r"^v([0-9]+)\.([0-9]+)$")

Health = Literal["ok", "expiring", "expired", "unknown"]
HEALTH_VALUES: dict[Health, int] = {"ok": 0, "unknown": 0, "expiring": 1, "expired": 2}  # the metric's value


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    introduced: dt.date
    available_until: dt.date | None  # None: Meta has not announced it (TBD)


@dataclass(frozen=True, slots=True)
class VersionHealth:
    version: str
    state: Health
    message: str  # one line for the status, the log and the doctor
    days_left: int | None = None


def today() -> dt.date:
    """The date the checks use: ``$BP_MESSENGER_TODAY`` when set (an invalid value is ignored), else today (UTC)."""
    forced = os.environ.get(TODAY_ENV, "").strip()
    if forced:
        try:
            return dt.date.fromisoformat(forced)
        except ValueError:
            pass
    return dt.datetime.now(dt.UTC).date()


@functools.cache
def schedule() -> dict[str, VersionInfo]:
    data = json.loads(SCHEDULE_FILE.read_text(encoding="utf-8"))
    found: dict[str, VersionInfo] = {}
    for row in data["versions"]:
        until = row.get("availableUntil")
        found[row["version"]] = VersionInfo(row["version"], dt.date.fromisoformat(row["introduced"]),
                                            dt.date.fromisoformat(until) if until else None)
    return found


def _key(version: str) -> tuple[int, int] | None:
    match = _VERSION.match(version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def latest() -> str:
    """The newest version of the shipped schedule."""
    return max(schedule(), key=lambda v: _key(v) or (0, 0))


def version_health(version: str, on: dt.date | None = None) -> VersionHealth:
    """How ``version`` stands on ``on`` (default ``today()``) according to Meta's schedule."""
    day = on or today()
    info = schedule().get(version)
    newest = latest()
    upgrade = f'set "graphApiVersion": "{newest}" (and test the bot with it)'
    if info is None:
        key, oldest = _key(version), min((_key(v) or (0, 0)) for v in schedule())
        if key is not None and key < oldest:
            return VersionHealth(version, "expired", f"graphApiVersion {version} is long past its end of "
                                 f"availability; {upgrade}", None)
        return VersionHealth(version, "unknown", f"graphApiVersion {version} is not in the schedule this module "
                             f"ships (newest known: {newest}); check Meta's changelog", None)
    if info.available_until is None:
        return VersionHealth(version, "ok", f"graphApiVersion {version} has no announced end date", None)
    left = (info.available_until - day).days
    until = info.available_until.isoformat()
    if left <= 0:
        return VersionHealth(version, "expired", f"graphApiVersion {version} expired on {until} (Meta now answers "
                             f"its calls as the oldest version still available); {upgrade}", left)
    if left <= WARN_DAYS:
        return VersionHealth(version, "expiring", f"graphApiVersion {version} expires on {until}, in {left} "
                             f"day{'s' if left != 1 else ''}; {upgrade}", left)
    return VersionHealth(version, "ok", f"graphApiVersion {version} is available until {until}", left)
