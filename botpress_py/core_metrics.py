"""The core's own metrics, made once per server in its ``ModuleMetrics`` (docs/operations.md lists them).

Counters without labels are printed from the start at 0, so an alert or a ``rate()`` never meets a
missing series. Labels are bounded: bot id, channel, direction; never a user id or a text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from .metrics import ModuleMetrics

if TYPE_CHECKING:
    from .events import IOEvent

# Seconds from a webhook's arrival to its answer: Meta wants the 200 within seconds.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds from an incoming event's arrival to the delivery of a reply to it.
REPLY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

DIRECTIONS = ("incoming", "outgoing")


class CoreMetrics:
    """Every metric the core updates, as attributes; ``metrics`` is the registry modules share."""

    def __init__(self, metrics: ModuleMetrics) -> None:
        self.metrics = metrics
        c = metrics.counter
        self.events_received: Counter = c("bp_events_received_total", "Incoming events stored (duplicates excluded).")
        self.events_duplicate = c("bp_events_duplicate_total",
                                  "Incoming events acknowledged but dropped as redeliveries.")
        self.events_done = c("bp_events_done_total", "Incoming events processed.")
        self.events_dropped = c("bp_events_dropped_total", "Incoming events stopped by a middleware.")
        self.events_error = c("bp_events_error_total", "Incoming events whose bot logic raised.")
        self.events_sent = c("bp_events_sent_total", "Outgoing events delivered by a channel.")
        self.events_send_retried = c("bp_events_send_retried_total",
                                     "Outgoing delivery attempts that failed transiently.")
        self.events_send_failed = c("bp_events_send_failed_total", "Outgoing events that failed permanently.")
        self.events_retried = c("bp_events_retried_total",
                                "Incoming events whose processing failed (storage, not bot logic) and was tried "
                                "again after a backoff.")
        self.events_sent_mark_failed = c("bp_events_sent_mark_failed_total",
                                         "Outgoing events delivered whose sent mark (and history) could not be "
                                         "recorded.")
        self.events_failed = c("bp_events_failed_total",
                               "Events that became failed (retries used up, refused by storage, or a permanent "
                               "send failure), by direction.", ["direction"])
        for direction in DIRECTIONS:
            self.events_failed.labels(direction)  # shown from the start, so an alert can compare with 0
        self.events_in = c("bp_events_in_total", "Incoming events stored, per bot and channel.", ["bot", "channel"])
        self.events_out = c("bp_events_out_total", "Outgoing events delivered, per bot and channel.",
                            ["bot", "channel"])
        self.http_requests = c("bp_http_requests_total", "HTTP requests answered.")
        self.connections_refused = c("bp_http_connections_refused_total",
                                     "Connections closed at once because httpServer.maxConnections were open.")
        self.connections_timed_out = c("bp_http_connections_timed_out_total",
                                       "Connections closed because a request's headers or body came too late.")
        self.ack_latency: Histogram = metrics.histogram(
            "bp_ack_latency_seconds", "Seconds from an HTTP request that brought incoming events (a webhook) "
            "to its answer, per channel.", ["channel"], buckets=ACK_BUCKETS)
        self.reply_latency: Histogram = metrics.histogram(
            "bp_reply_latency_seconds", "Seconds from an incoming event's arrival to the delivery of a reply "
            "to it (end to end), per channel.", ["channel"], buckets=REPLY_BUCKETS)
        # Labelled children by label values: labels() takes a lock and builds a key on every call, and
        # these are counted for every event.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)  # the metrics live as long as this object
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def received(self, event: IOEvent) -> None:
        self._child(self.events_in, event.botId, event.channel).inc()

    def acknowledged(self, channel: str, seconds: float) -> None:
        self._child(self.ack_latency, channel).observe(seconds)

    def gauge(self, name: str, documentation: str, read: Callable[[], float | Mapping[str, float]],
              labelnames: tuple[str, ...] = ()) -> None:
        self.metrics.gauge_callback(name, documentation, read, labelnames)

    def failed(self, direction: str, count: int = 1) -> None:
        self.events_failed.labels(direction).inc(count)

    def register_gauges(self, registry: Any, pipeline: Any, open_connections: Callable[[], int]) -> None:
        """The gauges read at scrape time from the bot registry and the pipeline."""
        g = self.gauge
        g("bp_bots_mounted", "Bots currently mounted.",
          lambda: sum(r.state == "mounted" for r in list(registry.records.values())))
        g("bp_bots_known", "Bots found under data/bots.", lambda: len(registry.records))
        g("bp_bots_error", "Bots not mounted because of an error (GET /status says why).",
          lambda: sum(r.status()["state"] == "error" for r in list(registry.records.values())))

        def module_errors() -> dict[tuple[str, str], float]:
            # Copies of what the event loop may change meanwhile: /metrics is written in a thread.
            out: dict[tuple[str, str], float] = {}
            for bot_id, record in list(registry.records.items()):
                shown = record.shown_during_remount
                modules = shown["modules"] if shown is not None else record.modules
                for module, entry in list(modules.items()):
                    out[bot_id, module] = float(entry.get("state") == "error")
            return out
        g("bp_bot_module_error", "1 while a module is in error for a bot (GET /status gives the reason), else 0.",
          module_errors, ("bot", "module"))
        g("bp_incoming_queued", "Incoming events queued in memory for processing.", lambda: pipeline.incoming.pending())
        g("bp_outgoing_queued", "Outgoing events queued in memory for delivery.", lambda: pipeline.outgoing.pending())
        g("bp_http_connections_open", "HTTP connections open now.", open_connections)
        g("bp_incoming_parked_bots", "Bots whose new events stay in storage until they are mounted or memory has room.",
          lambda: len(pipeline.parked_bots()))

    def delivered(self, event: IOEvent) -> None:
        """An outgoing event was delivered: counted, and a reply's end-to-end latency observed."""
        self.events_sent.inc()
        self._child(self.events_out, event.botId, event.channel).inc()
        received = event.flags.get("incomingReceivedAt")
        if isinstance(received, int | float) and not isinstance(received, bool):
            self._child(self.reply_latency, event.channel).observe(max(0.0, time.time() - received / 1000))
