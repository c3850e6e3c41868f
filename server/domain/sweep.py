"""The sweep: refresh tokens before they lapse, not only when checked out.

A GitHub refresh token lives about six months and each refresh issues a new
one; a token nobody checks out for that long drops to REFRESH_EXPIRED. The
sweep refreshes every live token whose refresh token expires within a window
or whose access token has expired, through the checkout's own single-flight
path (`refresh.refresh_single_flight`), so several sweepers, and checkouts
racing them, still refresh each credential version once. A token with a
window open on it (server/domain/leases.py) is left for a later sweep:
refreshing it would kill an access token someone holds. On PostgreSQL a
sweeper skips rows another transaction holds (`SKIP LOCKED`) rather than
queueing behind it; the compare-and-swap on credential_version makes a
second refresh of the same version impossible either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from piccolo.custom_types import Combinable

from server.crypto import Keyring
from server.domain.enums import AppType, ErrorCode
from server.domain.errors import Refusal
from server.domain.github_access import GitHubAccess
from server.domain.leases import no_window_open, window_open
from server.domain.locks import KeyedLocks
from server.domain.refresh import refresh_single_flight, refresh_token_usable
from server.storage.tables import UserGithubAppToken as Token
from server.storage.token_counts import KEPT_DUE_WINDOW, counts_at

logger = logging.getLogger("ghvault.sweep")

DEFAULT_WINDOW = timedelta(days=30)
DEFAULT_CONCURRENCY = 8
# Each refresh waits up to this long first, so sweepers started together (a
# cron on several hosts) interleave instead of hitting GitHub in lockstep.
DEFAULT_JITTER_SECONDS = 0.05
TRIGGER = "sweep"


def due_condition(now: datetime, within: timedelta) -> Combinable:
    """SQL for "a sweep would refresh this row now"; mirrors `is_due`."""
    usable_refresh = Token.refresh_token_encrypted.is_not_null() & (
        Token.refresh_token_expires_at.is_null() | (Token.refresh_token_expires_at > now)
    )
    lapsing = (Token.refresh_token_expires_at <= now + within) | (
        Token.access_token_expires_at <= now
    )
    return Token.revoked_at.is_null() & usable_refresh & lapsing


def is_due(row: Mapping[str, Any], now: datetime, within: timedelta) -> bool:
    """Live and refreshable, and its refresh token lapses within `within` or its access expired."""
    if row["revoked_at"] is not None or not refresh_token_usable(row, now):
        return False
    refresh_expires, access_expires = (
        row["refresh_token_expires_at"],
        row["access_token_expires_at"],
    )
    return (refresh_expires is not None and refresh_expires <= now + within) or (
        access_expires is not None and access_expires <= now
    )


def due_from_counts(counts: Mapping[AppType, Mapping[str, int]]) -> int:
    """Due rows from the kept counts at an instant (server/storage/token_counts.py).

    A row is due from the earlier of its access expiry and its refresh expiry
    minus the window until its refresh expiry; the first comes no later than
    the second, so "due" is "started" minus "ended".
    """
    return sum(kept["due_from"] - kept["refresh_lapsed"] for kept in counts.values())


async def count_due(now: datetime, within: timedelta = DEFAULT_WINDOW) -> int:
    if within == KEPT_DUE_WINDOW:
        return due_from_counts(await counts_at(now))
    due: int = await Token.count().where(due_condition(now, within))
    return due


async def due_candidates(
    now: datetime, within: timedelta, limit: int | None
) -> list[dict[str, Any]]:
    """(user, app type, version) of the due rows that no window holds, most urgent first."""
    query = (
        Token.select(Token.user_id, Token.github_app_type, Token.credential_version)
        .where(due_condition(now, within) & no_window_open(now))
        .order_by(Token.refresh_token_expires_at, Token.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return await query


SWEEP_OUTCOMES = ("refreshed", "revoked", "failed", "unreadable", "skipped")


@dataclass
class SweepReport:
    due: int = 0
    refreshed: int = 0
    revoked: int = 0  # GitHub refused the refresh token: REFRESH_FAILED, user must reconnect
    failed: int = 0  # GitHub unavailable or app not configured: retried on the next sweep
    unreadable: int = 0  # the stored refresh token would not decrypt (see the audit log)
    skipped: int = 0  # refreshed, revoked or removed by someone else meanwhile
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.refreshed + self.revoked + self.failed + self.unreadable + self.skipped

    def summary(self) -> str:
        return (
            f"sweep: {self.due} due, {self.refreshed} refreshed, {self.revoked} revoked, "
            f"{self.failed} failed, {self.unreadable} unreadable, {self.skipped} skipped "
            f"in {self.seconds:.2f} s"
        )


_OUTCOME_OF_ERROR = {
    ErrorCode.REFRESH_FAILED: "revoked",
    ErrorCode.GITHUB_UNAVAILABLE: "failed",
    ErrorCode.INVALID_INPUT: "failed",  # the token's GitHub App is not configured here
    ErrorCode.TOKEN_UNREADABLE: "unreadable",
}


async def sweep(
    *,
    now: datetime,
    keyring: Keyring,
    github_for: Mapping[AppType, GitHubAccess],
    locks: KeyedLocks,
    within: timedelta = DEFAULT_WINDOW,
    limit: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    jitter_seconds: float = DEFAULT_JITTER_SECONDS,
    progress: Callable[[SweepReport], None] | None = None,
    stop: asyncio.Event | None = None,
) -> SweepReport:
    """Refresh the due tokens, at most `concurrency` at a time towards GitHub.

    Once `stop` is set, no further refresh starts.
    """
    started = time.monotonic()
    candidates = await due_candidates(now, within, limit)
    report = SweepReport(due=len(candidates))
    pending: Iterator[dict[str, Any]] = iter(candidates)

    async def one(candidate: dict[str, Any]) -> str:
        app_type = AppType(candidate["github_app_type"])
        outcome, led = await refresh_single_flight(
            None,
            candidate["user_id"],
            app_type,
            seen_version=candidate["credential_version"],
            due=lambda row: is_due(row, now, within) and not window_open(row, now),
            trigger=TRIGGER,
            now=now,
            keyring=keyring,
            github=github_for[app_type],
            locks=locks,
            skip_locked=True,
        )
        if isinstance(outcome, Refusal):
            # NOT_CONNECTED / TOKEN_REVOKED: gone, revoked or held elsewhere meanwhile.
            return _OUTCOME_OF_ERROR.get(outcome.code, "skipped")
        return "refreshed" if led and outcome.refreshed else "skipped"

    async def worker() -> None:
        # One shared iterator: each candidate goes to exactly one worker.
        for candidate in pending:
            if stop is not None and stop.is_set():
                return
            if jitter_seconds > 0:
                await asyncio.sleep(random.uniform(0, jitter_seconds))  # noqa: S311 -- not a secret
            outcome = await one(candidate)
            setattr(report, outcome, getattr(report, outcome) + 1)
            if progress is not None:
                progress(report)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(candidates))):
            group.create_task(worker())
    report.seconds = time.monotonic() - started
    return report


async def sweep_periodically(
    interval_seconds: float,
    run: Callable[[asyncio.Event], Awaitable[SweepReport]],
    stop: asyncio.Event,
) -> None:
    """Run `run(stop)` (a sweep) every interval, give or take 10 %, until `stop` is set.

    Stopping is cooperative: a sweep under way finishes the refreshes it
    started (cancelling one part-way would leave its database connection
    and GitHub request dangling). A failed sweep is logged and the next one
    runs on schedule: the sweep is an optimisation, checkout still refreshes
    on demand.
    """
    while True:
        pause = interval_seconds * random.uniform(0.9, 1.1)  # noqa: S311 -- not a secret
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        if stop.is_set():
            return
        try:
            report = await run(stop)
        except Exception as exc:  # noqa: BLE001 -- a sweep must not stop the sweeper
            logger.warning("sweep failed: %s", type(exc).__name__)
        else:
            logger.info(report.summary())
