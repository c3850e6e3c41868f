"""Token status changes, pushed: what githubTokenChanged streams.

A watcher first gets the current status, then a new one each time a status
read would answer differently: after a write by any process (the storage
layer's change source says which keys changed) or when an expiry passes.
Each push is the status as read after the change; changes closer together
than a read may arrive as one push of the latest status.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, Iterable
from datetime import datetime

from server.clock import Clock
from server.domain.enums import AppType
from server.domain.status import TokenStatus, token_status
from server.storage.token_changes import ChangeSource, TokenKey

MAX_SUBSCRIPTIONS_PER_PRINCIPAL = 20
# Re-read at least this often even when nothing was reported, so a missed
# report (a lost connection, a clock jump) heals by itself.
MAX_QUIET_SECONDS = 300.0
# Expiries are re-read a little after they pass, not on the instant.
EXPIRY_SLACK_SECONDS = 0.5


class TooManySubscriptions(Exception):
    """The principal already has the maximum number of open subscriptions."""


class TokenChanges:
    """Fans the change source's reports out to the watchers of each key."""

    def __init__(self, limit_per_principal: int = MAX_SUBSCRIPTIONS_PER_PRINCIPAL) -> None:
        self.limit_per_principal = limit_per_principal
        self.source: ChangeSource | None = None
        self._waiters: dict[TokenKey, set[asyncio.Event]] = {}
        self._open: Counter[str] = Counter()

    def changed(self, keys: Iterable[TokenKey]) -> None:
        """The change source's callback."""
        for key in keys:
            for waiter in self._waiters.get(key, ()):
                waiter.set()

    def open_subscriptions(self, principal_id: str) -> int:
        return self._open[principal_id]

    async def watch(
        self, principal_id: str, user_id: str, app_type: AppType, *, clock: Clock
    ) -> AsyncGenerator[TokenStatus, None]:
        """The current status, then each different one; counts against `principal_id`'s cap."""
        if self.source is None:
            raise RuntimeError("token changes are not started")
        if self._open[principal_id] >= self.limit_per_principal:
            raise TooManySubscriptions
        key = (user_id, app_type)
        woken = asyncio.Event()
        self._open[principal_id] += 1
        self._waiters.setdefault(key, set()).add(woken)
        try:
            await self.source.watch(key)
            try:
                last = await token_status(user_id, app_type, clock())
                yield last
                while True:
                    await _wait(woken, _seconds_until_next_expiry(last, clock()))
                    woken.clear()
                    current = await token_status(user_id, app_type, clock())
                    if current != last:
                        last = current
                        yield current
            finally:
                self.source.unwatch(key)
        finally:
            self._waiters[key].discard(woken)
            if not self._waiters[key]:
                del self._waiters[key]
            self._open[principal_id] -= 1
            if not self._open[principal_id]:
                del self._open[principal_id]


async def _wait(event: asyncio.Event, at_most: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), at_most)


def _seconds_until_next_expiry(status: TokenStatus, now: datetime) -> float:
    """Until the next expiry that changes the state (ACTIVE -> EXPIRED, and so on)."""
    upcoming = [
        (moment - now).total_seconds() + EXPIRY_SLACK_SECONDS
        for moment in (status.access_token_expires_at, status.refresh_token_expires_at)
        if moment is not None and moment > now
    ]
    return min([*upcoming, MAX_QUIET_SECONDS])
