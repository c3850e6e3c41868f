"""Requests per capability: a runaway agent is stopped before GitHub stops the user.

A token bucket per capability, in each process: `per_minute` requests at
once, refilled evenly over a minute. It runs on the app's clock, so tests
move time instead of sleeping. With several processes each keeps its own
buckets; a worker's connections usually stay with one process, and the
bound is per process either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Buckets kept at most; a full one says nothing and is the first to go.
MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: datetime


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: datetime) -> float | None:
        """Spend one request of `key`'s bucket: None when allowed, else the seconds until
        the next one is."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
        else:
            self._refill(bucket, now)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) * 60 / self.per_minute

    def _refill(self, bucket: _Bucket, now: datetime) -> None:
        elapsed = max((now - bucket.updated).total_seconds(), 0.0)
        bucket.tokens = min(float(self.per_minute), bucket.tokens + elapsed * self.per_minute / 60)
        bucket.updated = now

    def _forget_full(self, now: datetime) -> None:
        for key, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            if bucket.tokens >= self.per_minute:
                del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:
            # Everyone is busy: forgetting the oldest half only ever lets a request through.
            for key in list(self._buckets)[: MAX_BUCKETS // 2]:
                del self._buckets[key]
