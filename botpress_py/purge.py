"""The background retention purge (storage.retention, storage.purgeInterval; docs/storage.md).

In cluster mode one node purges at a time: the others find the lock taken and skip that round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from .config.server_config import parse_duration
from .pipeline import EventPipeline
from .storage import Storage

log = logging.getLogger("botpress_py.server")

# Yields True when this node may purge now (always on a single node).
TryLock = Callable[[], AbstractAsyncContextManager[bool]]


async def purge_loop(storage_cfg: dict[str, Any], storage: Storage, pipeline: EventPipeline,
                     try_lock: TryLock) -> None:
    retention = storage_cfg.get("retention", {})
    events_age = parse_duration(retention.get("events", "7d"))
    messages_age = parse_duration(retention.get("messages", "90d"))
    failed_age = parse_duration(retention.get("failed", "30d"))
    media_age = parse_duration(retention.get("media", "90d"))
    interval = parse_duration(storage_cfg.get("purgeInterval", "1h"))
    while True:
        now = time.time()
        try:
            async with try_lock() as mine:
                if mine:
                    counts = await storage.purge(processed_before=int((now - events_age) * 1000),
                                                 messages_before=int((now - messages_age) * 1000),
                                                 failed_before=int((now - failed_age) * 1000),
                                                 media_before=int((now - media_age) * 1000))
                    if any(counts.values()):
                        log.info("storage purge removed %s", counts)
            # Failed events are counted as they come and go; purges and erases take some
            # away unseen, so the counts are read again here, once a purge period.
            await pipeline.failed_counts.refresh(storage.failed_counts)
        except Exception:
            log.exception("storage purge failed; will retry in %ss", interval)
        await asyncio.sleep(interval)  # the purge period
