"""Prometheus exposition of figures that live elsewhere (the stages' heartbeats), through prometheus_client.

The figures are not the client library's own counters: each scrape turns the latest status
into metric families and lets prometheus_client write them, so numbers keep full precision
(a hand-written ``%g`` once printed 1234567 as ``1.23457e+06``).

>>> metrics = Exposition()
>>> metrics.add("vestwatch_frames_total", "counter", "Frames captured", {"stream": "cam1"}, 1234567)
>>> print(metrics.text().splitlines()[2])
vestwatch_frames_total{stream="cam1"} 1.234567e+06
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_MS = [25, 50, 100, 250, 500, 1000, 2500, 5000]  # upper bounds of the latency histograms
# the same in seconds, as exported: Prometheus names and values are in base units (``promtool check metrics``)
LATENCY_BUCKETS_S = [bound / 1000 for bound in LATENCY_BUCKETS_MS]
FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}


class Exposition:
    """Samples gathered for one scrape, by family; ``text()`` writes them."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def _family(self, name: str, kind: str, help_text: str, labels: dict[str, str]) -> Metric:
        if name not in self.families:
            self.families[name] = FAMILIES[kind](name, help_text, labels=list(labels))
        return self.families[name]

    def add(self, name: str, kind: str, help_text: str, labels: dict[str, str], value: float) -> None:
        self._family(name, kind, help_text, labels).add_metric(list(labels.values()), value)

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: dict[str, str],
        bounds: list[float],
        cumulative: list[int],
        total: float,
    ) -> None:
        """``cumulative``: counts at or below each bound, then the overall count (``+Inf``)."""
        buckets = [(f"{bound:g}", count) for bound, count in zip(bounds, cumulative)]
        buckets.append(("+Inf", cumulative[-1] if cumulative else 0))
        self._family(name, "histogram", help_text, labels).add_metric(list(labels.values()), buckets, total)

    def collect(self) -> Iterator[Metric]:
        yield from self.families.values()

    def text(self) -> str:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry).decode()
