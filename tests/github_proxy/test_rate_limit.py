"""Requests per capability: a burst, then a steady rate, on the app's clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.github_proxy import rate_limit
from server.github_proxy.rate_limit import RateLimiter
from tests.helpers import T0


def test_a_burst_then_one_request_per_refill() -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.take("c1", T0) for _ in range(3)] == [None, None, None]
    assert limiter.take("c1", T0) == 20.0
    assert limiter.take("c1", T0 + timedelta(seconds=19)) is not None
    assert limiter.take("c1", T0 + timedelta(seconds=20)) is None
    assert limiter.take("c1", T0 + timedelta(seconds=20)) is not None


def test_each_capability_has_its_own_bucket() -> None:
    limiter = RateLimiter(per_minute=1)
    assert limiter.take("c1", T0) is None
    assert limiter.take("c1", T0) is not None
    assert limiter.take("c2", T0) is None


def test_a_bucket_never_holds_more_than_a_burst() -> None:
    limiter = RateLimiter(per_minute=2)
    limiter.take("c1", T0)
    later = T0 + timedelta(hours=1)
    assert [limiter.take("c1", later) is None for _ in range(3)] == [True, True, False]


def test_idle_buckets_are_forgotten_before_busy_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays bounded, and forgetting never lets a spent capability start afresh early."""
    monkeypatch.setattr(rate_limit, "MAX_BUCKETS", 2)
    limiter = RateLimiter(per_minute=1)
    limiter.take("busy", T0)
    limiter.take("idle", T0 - timedelta(minutes=5))

    assert limiter.take("new", T0) is None
    assert limiter.take("busy", T0) is not None
