"""Leases: the window in which a handed-out token is promised to keep working.

GitHub kills the previous access token on every refresh, so a refresh breaks
every token ghvault has handed out of the version it replaces. Each checkout
therefore promises a window (`usableUntil`), and the token row keeps the end
of the latest window on its current credential version (`leased_until`;
every store, refresh and revocation starts a version with none). Nothing
refreshes a version while a window on it is open: not a checkout, not the
sweep, not another process. The row is where the promise lives because the
row lock and credential_version are what every refresh already goes through.

A window never reaches past the access token's expiry minus EXPIRY_MARGIN.
What a checkout does about an open window is server/domain/checkout.py's
decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from piccolo.custom_types import Combinable
from piccolo.query.functions import Case, When

from server.domain.errors import InvalidInput
from server.storage.tables import UserGithubAppToken as Token

MIN_LEASE_SECONDS = 1
MAX_LEASE_SECONDS = 3600
DEFAULT_LEASE_SECONDS = 600
# Covers the clocks of ghvault, the worker and GitHub disagreeing, and a request
# sent just before usableUntil reaching GitHub just after it.
EXPIRY_MARGIN = timedelta(minutes=1)


def lease_length(seconds: int, field: str = "leaseSeconds") -> timedelta:
    """The window a caller asked for; INVALID_INPUT outside 1..3600 seconds."""
    if not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:
        raise InvalidInput(
            f"{field} must be between {MIN_LEASE_SECONDS} and {MAX_LEASE_SECONDS} (got {seconds})",
            field,
        )
    return timedelta(seconds=seconds)


def window_open(row: Mapping[str, Any], now: datetime) -> bool:
    """Whether a window promised on the row's credential version is still running."""
    leased_until = row["leased_until"]
    return leased_until is not None and leased_until > now


def promise_limit(row: Mapping[str, Any]) -> datetime | None:
    """The latest instant the row's access token may be promised until; None: no expiry."""
    expires_at = row["access_token_expires_at"]
    return None if expires_at is None else expires_at - EXPIRY_MARGIN


def window_end(row: Mapping[str, Any], now: datetime, lease: timedelta) -> datetime | None:
    """The end of the window the row's token can promise from `now`: `lease` long when
    its expiry allows, shorter otherwise; None when it can promise nothing."""
    end = now + lease
    limit = promise_limit(row)
    if limit is not None:
        end = min(end, limit)
    return end if end > now else None


def no_window_open(now: datetime) -> Combinable:
    """SQL for "no window is open on this row"; mirrors `window_open`."""
    return Token.leased_until.is_null() | (Token.leased_until <= now)


async def hold(row: Mapping[str, Any], end: datetime, *, now: datetime) -> bool:
    """Open (or extend) the window on the row's version to at least `end`; note the use.

    False when the row has moved to another credential version since it was
    read: the token in hand is no longer the stored one. A window only grows,
    whichever of two concurrent writers commits first.
    """
    held = (
        await Token.update(
            {
                Token.last_used_at: now,
                Token.leased_until: Case(
                    When(Token.leased_until.is_null() | (Token.leased_until < end), then=end),
                    default=Token.leased_until,
                ),
            }
        )
        .where((Token.id == row["id"]) & (Token.credential_version == row["credential_version"]))
        .returning(Token.id)
    )
    return bool(held)
