"""Counters and gauges for ``GET /metrics`` in the Prometheus text format.

Written by hand rather than with prometheus-client: a handful of process-local counters
does not justify a dependency, and the format is three lines per metric.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

HELP = {
    "bp_events_received_total": "Incoming events stored (duplicates excluded).",
    "bp_events_duplicate_total": "Incoming events acknowledged but dropped as redeliveries.",
    "bp_events_done_total": "Incoming events processed.",
    "bp_events_dropped_total": "Incoming events stopped by a middleware.",
    "bp_events_error_total": "Incoming events whose bot logic raised.",
    "bp_events_sent_total": "Outgoing events delivered by a channel.",
    "bp_events_send_retried_total": "Outgoing delivery attempts that failed transiently.",
    "bp_events_send_failed_total": "Outgoing events that failed permanently.",
    "bp_http_requests_total": "HTTP requests answered.",
    "bp_http_connections_refused_total": "Connections closed at once because httpServer.maxConnections were open.",
    "bp_http_connections_timed_out_total": "Connections closed because a request's headers or body came too late.",
}


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, float] = defaultdict(float)
        self.gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, value: float = 1) -> None:
        self.counters[name] += value

    def gauge(self, name: str, read: Callable[[], float], help_text: str) -> None:
        self.gauges[name] = read
        HELP[name] = help_text

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(set(self.counters) | set(self.gauges)):
            kind = "gauge" if name in self.gauges else "counter"
            value = self.gauges[name]() if name in self.gauges else self.counters[name]
            lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"
