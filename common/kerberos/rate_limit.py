"""Per-source token buckets (no I/O, time passed in): one address cannot monopolise the KDC's
CPU with PKINIT requests (~5 ms of RSA/DH work each)."""

from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate` requests per second per source, bursts up to `burst`. Bounded memory: when more
    than `max_sources` are tracked, the table is cleared (sources then start full)."""

    def __init__(self, rate: float, burst: float, max_sources: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, source: str, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.clear()
            bucket = self._buckets[source] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True
