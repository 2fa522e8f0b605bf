"""``GET /metrics``: one prometheus-client registry per server, shared by the core and its modules.

Each server owns its ``CollectorRegistry`` (never the process-wide default one), so two servers in
one process (tests, a supervisor) never share or double-count a series. Modules get the same
object as ``ServerContext.metrics`` / ``BotContext.metrics`` (``ModuleMetrics``); asking for a
metric again returns the object made the first time, because modules are instantiated again on
reload and bots are mounted again.

``*_created`` series are switched off: they double the output and no alert reads them.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    exposition,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()

# generate_latest writes the 0.0.4 text format; newer prometheus-client versions name a newer
# format as "latest", which their own generate_latest does not write.
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

log = logging.getLogger("botpress_py.metrics")

_NAME = re.compile(r"bp_[a-zA-Z0-9_]+")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Read = Callable[[], "float | Mapping[tuple[str, ...] | str, float]"]


def labelled(name: str, **labels: str) -> str:
    """The series name of ``name`` with these labels, as ``/metrics`` prints it:
    ``labelled("bp_x_total", direction="in")`` is ``bp_x_total{direction="in"}``."""
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


class CallbackGauge(Collector):
    """A gauge read when ``/metrics`` is scraped: ``read()`` gives one value, or one value per label
    tuple. A read that raises is logged and its series left out: one module's bug never breaks the page."""

    def __init__(self, name: str, documentation: str, read: Read, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.read = read
        self.labelnames = labelnames

    def describe(self) -> Iterable[Any]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames or None)]

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames or None)
        try:
            value = self.read()
            if isinstance(value, Mapping):
                for key, v in value.items():
                    values = (key,) if isinstance(key, str) else tuple(key)
                    if len(values) != len(self.labelnames):
                        raise ValueError(f"label values {values!r} do not match labels {self.labelnames!r}")
                    family.add_metric([str(part) for part in values], float(v))
            elif self.labelnames:
                raise ValueError(f"labelled gauge needs a mapping of label tuples to values, got {value!r}")
            else:
                family.add_metric([], float(value))
        except Exception as exc:
            log.warning("metric %s could not be read: %s: %s", self.name, type(exc).__name__, exc)
            family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames or None)
        return [family]


class ModuleMetrics:
    """The server's metrics: make counters, gauges and histograms that ``GET /metrics`` serves.

    Every name starts with ``bp_``; labels must have bounded values (a bot id, a channel, a status
    code: never a user id, a secret or a message text). Asking again with the same name, kind and
    labels returns the same object; a different definition under a name in use raises ValueError.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        # name as asked -> (kind, labelnames, extra definition, object)
        self._made: dict[str, tuple[str, tuple[str, ...], Any, Any]] = {}

    # -- the module API -----------------------------------------------------------------------------
    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """A counter; prometheus-client prints it as ``<name>_total`` (a name ending in ``_total`` is kept)."""
        return self._make("counter", name, documentation, labelnames, None,
                          lambda labels: Counter(name, documentation, labels, registry=self.registry))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        """A gauge the module sets (``set``/``inc``/``dec``)."""
        return self._make("gauge", name, documentation, labelnames, None,
                          lambda labels: Gauge(name, documentation, labels, registry=self.registry))

    def histogram(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] | None = None) -> Histogram:
        """A histogram (``observe(seconds)``); ``buckets`` default to prometheus-client's."""
        extra = tuple(float(b) for b in buckets) if buckets is not None else None

        def make(labels: tuple[str, ...]) -> Histogram:
            if extra is None:
                return Histogram(name, documentation, labels, registry=self.registry)
            return Histogram(name, documentation, labels, registry=self.registry, buckets=extra)
        return self._make("histogram", name, documentation, labelnames, extra, make)

    def gauge_callback(self, name: str, documentation: str, read: Read,
                       labelnames: Sequence[str] = ()) -> CallbackGauge:
        """A gauge whose value ``read()`` gives at scrape time: a float, or a mapping from label tuples
        (a plain string for one label) to floats. Asking again replaces ``read`` (a remounted module's
        new objects are read from then on)."""
        collector = self._make("gauge_callback", name, documentation, labelnames, None,
                               lambda labels: self._register(CallbackGauge(name, documentation, read, labels)))
        collector.read = read
        return collector

    # -- reading (tests, the admin) -----------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)

    @property
    def counters(self) -> dict[str, float]:
        """Every sample served now, by its series name (``labelled`` spelling): a snapshot for tests."""
        return self.values()

    def values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                key = labelled(sample.name, **sample.labels) if sample.labels else sample.name
                out[key] = sample.value
        return out

    # -- internals ----------------------------------------------------------------------------------
    def _register(self, collector: CallbackGauge) -> CallbackGauge:
        self.registry.register(collector)
        return collector

    def _make(self, kind: str, name: str, documentation: str, labelnames: Sequence[str], extra: Any,
              make: Callable[[tuple[str, ...]], Any]) -> Any:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"metric {name!r}: names start with 'bp_' and use only letters, digits and '_'")
        if isinstance(labelnames, str):
            raise ValueError(f"metric {name!r}: labelnames must be a sequence of names, not one string")
        labels = tuple(labelnames)
        for label in labels:
            if not isinstance(label, str) or not _LABEL.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"metric {name!r}: invalid label name {label!r}")
        with self._lock:
            known = self._made.get(name)
            if known is not None:
                if known[:3] != (kind, labels, extra):
                    raise ValueError(f"metric {name!r} is already defined as a {known[0]} with labels "
                                     f"{list(known[1])}; it cannot be redefined as a {kind} with labels {list(labels)}")
                return known[3]
            try:
                made = make(labels)
            except ValueError as exc:  # another name of the same series (bp_x and bp_x_total), a reserved name
                raise ValueError(f"metric {name!r} cannot be defined: {exc}") from None
            self._made[name] = (kind, labels, extra, made)
            return made
