"""What the daemons share for their Prometheus metrics.

`Counts` and `Durations` are a counter and a histogram for the per-request metrics, kept as
plain numbers in dicts and turned into Prometheus families only when /metrics is scraped.
prometheus_client's own metric objects take a lock and run several Python calls per `inc` or
`observe`; a daemon counts every request, and a request that follows milliseconds of idling
runs with cold CPU caches, where each of those calls costs tens of microseconds (measured in
the KDC, docs/performance.md). Only the event loop's thread updates them; the scrape thread
copies a dict (one C call, atomic under the GIL) before reading it."""

import bisect
import functools
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


@functools.cache
def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, kept. labels() converts, validates and takes the metric's
    lock at every call, and a daemon counts every request; the label values are a small
    fixed set (request kinds, result codes, drop reasons), so each child is looked up once."""
    return metric.labels(*values)


class Counts(Collector):
    """A counter family `name`_total with `labels`: `inc(*values)` adds one."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.values: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def inc(self, *values: str) -> None:
        self.values[values] = self.values.get(values, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, count in sorted(dict(self.values).items()):
            family.add_metric(list(values), count)
        yield family


class Durations(Collector):
    """A histogram family `name` with `labels` and upper bounds `buckets` (seconds):
    `observe(seconds, *values)`."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.bounds = tuple(buckets)
        # per label values: a count per bound, one for above the last bound, and the sum
        self.rows: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)

    def observe(self, seconds: float, *values: str) -> None:
        row = self.rows.get(values)
        if row is None:
            row = self.rows[values] = [0] * (len(self.bounds) + 2)
        row[bisect.bisect_left(self.bounds, seconds)] += 1
        row[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, row in sorted(dict(self.rows).items()):
            row = list(row)
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self.bounds, float("inf")), row[:-1], strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            family.add_metric(list(values), buckets, row[-1])
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
