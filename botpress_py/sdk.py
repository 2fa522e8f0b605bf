"""The only import surface for botpress-py modules.

    from botpress_py.sdk import hookimpl, IOEvent, BotContext

Everything a module needs is re-exported here; anything not listed is core-internal and
may change without notice.
"""

from __future__ import annotations

from .context import BotContext, ConfigProblem, KeyValueStore, MediaStore, ModuleState, ServerContext, UserStore
from .datafolder import DataFolder, ModuleConfig
from .events import (
    CARD_ACTIONS,
    STANDARD_PAYLOAD_TYPES,
    DeliveryError,
    IOEvent,
    Middleware,
    masked_copy,
    new_event_id,
    now_ms,
    payload_preview,
)
from .hookspecs import hookimpl
from .jsonfiles import ConfigFileError, load_json_file, validate_instance
from .logthrottle import LogThrottle
from .media import MediaTooLarge
from .metrics import ModuleMetrics
from .routing import ModuleRouter
from .storage.base import StorageUnavailable

__all__ = [
    "CARD_ACTIONS",
    "STANDARD_PAYLOAD_TYPES",
    "BotContext",
    "ConfigFileError",
    "ConfigProblem",
    "DataFolder",
    "DeliveryError",
    "IOEvent",
    "KeyValueStore",
    "LogThrottle",
    "MediaStore",
    "MediaTooLarge",
    "Middleware",
    "ModuleConfig",
    "ModuleMetrics",
    "ModuleRouter",
    "ModuleState",
    "ServerContext",
    "StorageUnavailable",
    "UserStore",
    "hookimpl",
    "load_json_file",
    "masked_copy",
    "new_event_id",
    "now_ms",
    "payload_preview",
    "validate_instance",
]
