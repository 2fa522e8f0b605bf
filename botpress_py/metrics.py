"""Counters and gauges for ``GET /metrics`` in the Prometheus text format.

Written by hand rather than with prometheus-client: a handful of process-local counters
does not justify a dependency, and the format is three lines per metric.

A series with labels is named as Prometheus prints it: ``labelled("bp_x_total", direction="in")``
gives ``bp_x_total{direction="in"}``; HELP and TYPE are printed once per metric name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

HELP = {
    "bp_events_received_total": "Incoming events stored (duplicates excluded).",
    "bp_events_duplicate_total": "Incoming events acknowledged but dropped as redeliveries.",
    "bp_events_done_total": "Incoming events processed.",
    "bp_events_dropped_total": "Incoming events stopped by a middleware.",
    "bp_events_error_total": "Incoming events whose bot logic raised.",
    "bp_events_sent_total": "Outgoing events delivered by a channel.",
    "bp_events_send_retried_total": "Outgoing delivery attempts that failed transiently.",
    "bp_events_send_failed_total": "Outgoing events that failed permanently.",
    "bp_events_retried_total": "Incoming events whose processing failed (storage, not bot logic) and was "
                               "tried again after a backoff.",
    "bp_events_failed_total": "Events that became failed (retries used up, refused by storage, or a "
                              "permanent send failure), by direction.",
    "bp_events_sent_mark_failed_total": "Outgoing events delivered whose sent mark (and history) could not be "
                                        "recorded.",
    "bp_failed_events": "Failed events stored now (listed by GET /api/v1/admin/events/failed), by direction.",
    "bp_http_requests_total": "HTTP requests answered.",
    "bp_http_connections_refused_total": "Connections closed at once because httpServer.maxConnections were open.",
    "bp_http_connections_timed_out_total": "Connections closed because a request's headers or body came too late.",
}

# Every counter without labels the core increments, shown at 0 from the start: an alert or a rate()
# never meets a missing series (bp_events_failed_total, labelled, is registered by the pipeline).
COUNTERS = (
    "bp_events_received_total", "bp_events_duplicate_total", "bp_events_done_total", "bp_events_dropped_total",
    "bp_events_error_total", "bp_events_sent_total", "bp_events_send_retried_total", "bp_events_send_failed_total",
    "bp_events_retried_total", "bp_events_sent_mark_failed_total", "bp_http_requests_total",
    "bp_http_connections_refused_total", "bp_http_connections_timed_out_total",
)

Gauge = Callable[[], "float | Mapping[str, float]"]


def labelled(name: str, **labels: str) -> str:
    """The series name of ``name`` with these labels (values must not need escaping)."""
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, float] = defaultdict(float, dict.fromkeys(COUNTERS, 0.0))
        # A gauge reads one value, or one value per label set ({'direction="in"': 3.0}).
        self.gauges: dict[str, Gauge] = {}

    def inc(self, name: str, value: float = 1) -> None:
        self.counters[name] += value

    def gauge(self, name: str, read: Gauge, help_text: str) -> None:
        self.gauges[name] = read
        HELP[name] = help_text

    def render(self) -> str:
        series: dict[str, list[tuple[str, float]]] = {}
        kinds: dict[str, str] = {}
        for name, value in self.counters.items():
            base = name.split("{", 1)[0]
            series.setdefault(base, []).append((name, value))
            kinds[base] = "counter"
        for name, read in self.gauges.items():
            value = read()
            if isinstance(value, Mapping):
                series[name] = [(name + "{" + labels + "}", v) for labels, v in value.items()]
            else:
                series[name] = [(name, value)]
            kinds[name] = "gauge"
        lines: list[str] = []
        for base in sorted(series):
            lines += [f"# HELP {base} {HELP.get(base, base)}", f"# TYPE {base} {kinds[base]}"]
            lines += [f"{name} {value:g}" for name, value in sorted(series[base])]
        return "\n".join(lines) + "\n"
