"""Per-key coordination of this process's tasks: locks, shared attempts, recent failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

# Failures remembered at once; past it, the ones that no longer count are forgotten.
_FAILURES_KEPT = 1000


class KeyedLocks:
    """One asyncio lock per key, forgotten once nobody holds or awaits it; attempts
    shared by everyone who asks for the same key while one runs; and failures
    remembered for a while, so that what failed is not retried at once."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}
        self._attempts: dict[Hashable, asyncio.Future[Any]] = {}
        self._failed_until: dict[Hashable, datetime] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def share(self, key: Hashable, attempt: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run `attempt`, or wait for the one under way for `key` and take its outcome.

        Returns the outcome and whether this call ran the attempt. A failure
        returned as an outcome is shared like any other; an attempt that raised
        or was cancelled shares nothing, and the callers waiting for it try
        again themselves.
        """
        while (running := self._attempts.get(key)) is not None:
            await asyncio.wait([running])
            if not running.cancelled():
                return running.result(), False
        shared: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._attempts[key] = shared
        try:
            outcome = await attempt()
        except BaseException:
            shared.cancel()
            raise
        finally:
            del self._attempts[key]
        shared.set_result(outcome)
        return outcome, True

    def note_failure(self, key: Hashable, *, now: datetime, until: datetime) -> None:
        """Remember from `now` until `until` that what `key` names failed."""
        if len(self._failed_until) >= _FAILURES_KEPT:
            self._failed_until = {
                kept: end for kept, end in self._failed_until.items() if end > now
            }
            if len(self._failed_until) >= _FAILURES_KEPT:
                self._failed_until.clear()
        self._failed_until[key] = until

    def failed_recently(self, key: Hashable, now: datetime) -> bool:
        until = self._failed_until.get(key)
        return until is not None and until > now
