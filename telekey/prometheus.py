"""What the daemons share for their Prometheus metrics."""

import functools
from typing import Any


@functools.cache
def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, kept. labels() converts, validates and takes the metric's
    lock at every call, and a daemon counts every request; the label values are a small
    fixed set (request kinds, result codes, drop reasons), so each child is looked up once."""
    return metric.labels(*values)
