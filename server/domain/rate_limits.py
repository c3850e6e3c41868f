"""Rate limits: how often something may happen per key, counted in this process."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from datetime import datetime, timedelta

# Keys tracked at once; past it, the keys with nothing left in their period are forgotten.
KEYS_KEPT = 100_000


class RateLimit:
    """At most `limit` events per key within any `period`."""

    def __init__(self, limit: int, period: timedelta) -> None:
        self.limit = limit
        self.period = period
        self._events: dict[Hashable, deque[datetime]] = {}

    def take(self, key: Hashable, now: datetime) -> timedelta | None:
        """Count an event for `key` at `now`: None when the limit allows it, else how long
        until it would (and nothing is counted)."""
        if key not in self._events and len(self._events) >= KEYS_KEPT:
            self._forget_before(now - self.period)
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.period:
            events.popleft()
        if len(events) >= self.limit:
            return events[0] + self.period - now
        events.append(now)
        return None

    def _forget_before(self, start: datetime) -> None:
        self._events = {
            key: events for key, events in self._events.items() if events and events[-1] > start
        }
        if len(self._events) >= KEYS_KEPT:
            self._events.clear()
