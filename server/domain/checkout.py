"""Checkout: a usable access token and the window it is promised to work in.

Every checkout holds a lease (server/domain/leases.py): the token it returns
keeps working at GitHub until `usable_until`, because nothing refreshes a
credential version while a window on it is open. A checkout that finds no
window open refreshes early, once less than REFRESH_AHEAD of the token is
left, so that a refresh rarely has to wait for anyone.

A checkout that finds a window open on a token it would refresh gets the
current token, for as much of its window as that token can still promise.
Waiting for the open windows to end could take up to an hour, and a refusal
would fail a worker that a shorter window serves; `usable_until` earlier
than asked tells the caller, and the windows all end by the token's expiry
at the latest, when the next checkout refreshes and gets a full window.

The refresh itself (single flight per credential_version, across tasks and
processes) is `refresh.refresh_single_flight`, shared with the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from server.auth import Principal
from server.crypto import Keyring
from server.domain import audit, leases
from server.domain.enums import AppType, AuditAction, ErrorCode, TokenKind
from server.domain.errors import Refusal
from server.domain.github_access import GitHubAccess
from server.domain.locks import KeyedLocks
from server.domain.refresh import (
    NOT_REFRESHABLE,
    decrypted,
    read_token,
    refresh_single_flight,
    refresh_token_usable,
    usable,
)
from server.storage.transactions import write_transaction

# Twice the longest window: a token refreshed this early outlives every window
# opened on it before it is due again.
REFRESH_AHEAD = 2 * timedelta(seconds=leases.MAX_LEASE_SECONDS)
# After GitHub could not refresh a token early, this process hands out the
# current token without asking again for a while, rather than have every
# checkout wait out GitHub's timeout.
RETRY_EARLY_REFRESH_AFTER = timedelta(minutes=1)
# Refusals after which the stored row is no longer the token in hand.
_TOKEN_GONE = frozenset(
    {ErrorCode.NOT_CONNECTED, ErrorCode.TOKEN_REVOKED, ErrorCode.REFRESH_FAILED}
)
# A checkout that keeps finding the version moved (refreshes racing it) gives up.
_ROUNDS = 4
_KEPT_CHANGING = Refusal(
    ErrorCode.GITHUB_UNAVAILABLE, "The token kept changing during the checkout; try again."
)


@dataclass(frozen=True)
class CheckedOutToken:
    access_token: str = field(repr=False)
    access_token_expires_at: datetime | None
    github_user_id: str
    github_login: str
    refreshed: bool
    usable_until: datetime
    credential_version: int

    @property
    def commit_author(self) -> str:
        """Ready for `git commit --author`, with GitHub's no-reply address."""
        login = self.github_login
        return f"{login} <{self.github_user_id}+{login}@users.noreply.github.com>"


def refresh_wanted(row: dict[str, Any], now: datetime) -> bool:
    """Whether a checkout should refresh the row now: no window is open on it, it can be
    refreshed, and less than REFRESH_AHEAD of its access token is left."""
    limit = leases.promise_limit(row)
    return (
        limit is not None
        and limit - now < REFRESH_AHEAD
        and not leases.window_open(row, now)
        and refresh_token_usable(row, now)
    )


async def checkout_token(
    actor: Principal,
    user_id: str,
    app_type: AppType,
    *,
    lease_seconds: int = leases.DEFAULT_LEASE_SECONDS,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    locks: KeyedLocks,
) -> CheckedOutToken | Refusal:
    """The user's access token for the commit worker, usable for `lease_seconds` when it
    allows that long; audited as TOKEN_CHECKED_OUT."""
    return await _lease(
        actor,
        user_id,
        app_type,
        lease=leases.lease_length(lease_seconds),
        trigger="checkout",
        audited=True,
        now=now,
        keyring=keyring,
        github=github,
        locks=locks,
    )


async def hold_lease(
    actor: Principal | None,
    user_id: str,
    app_type: AppType,
    *,
    seconds: int,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    locks: KeyedLocks,
) -> CheckedOutToken | Refusal:
    """Hold a window on the user's token for a request ghvault itself sends with it.

    For the GitHub proxy: call before forwarding a request, with `seconds`
    (1..3600, else InvalidInput) covering it, and use the returned token
    until `usable_until` at most; a request that outlasts it holds again
    first (every hold extends the window, none shortens it). The token is
    chosen, refreshed and protected exactly as for a checkout, and the use
    is noted in last_used_at, but no TOKEN_CHECKED_OUT event is written:
    the token does not leave ghvault, and the proxy audits what it
    forwards. A refresh this causes is audited with the reason "lease".
    """
    return await _lease(
        actor,
        user_id,
        app_type,
        lease=leases.lease_length(seconds, "seconds"),
        trigger="lease",
        audited=False,
        now=now,
        keyring=keyring,
        github=github,
        locks=locks,
    )


async def _lease(
    actor: Principal | None,
    user_id: str,
    app_type: AppType,
    *,
    lease: timedelta,
    trigger: str,
    audited: bool,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    locks: KeyedLocks,
) -> CheckedOutToken | Refusal:
    found = await read_token(user_id, app_type)
    for _ in range(_ROUNDS):
        row = usable(found)
        if isinstance(row, Refusal):
            return row
        plaintext, refreshed = None, False
        key = (user_id, app_type, row["credential_version"])
        if refresh_wanted(row, now) and not (
            locks.failed_recently(key, now) and leases.window_end(row, now, lease) is not None
        ):
            attempt, led = await refresh_single_flight(
                actor,
                user_id,
                app_type,
                seen_version=row["credential_version"],
                due=lambda locked: refresh_wanted(locked, now),
                lease=lease,
                trigger=trigger,
                now=now,
                keyring=keyring,
                github=github,
                locks=locks,
            )
            if isinstance(attempt, Refusal):
                # Not refreshed, the row left as it was: the current token serves if it can.
                if attempt.code in _TOKEN_GONE or leases.window_end(row, now, lease) is None:
                    return attempt
                locks.note_failure(key, now=now, until=now + RETRY_EARLY_REFRESH_AFTER)
            else:
                row, plaintext = attempt.row, attempt.access_token
                refreshed = led and attempt.refreshed
        end = leases.window_end(row, now, lease)
        if end is None:
            return NOT_REFRESHABLE
        handed = await _hand_out(
            actor,
            row,
            end,
            now=now,
            keyring=keyring,
            audited=audited,
            plaintext=plaintext,
            refreshed=refreshed,
        )
        if handed is not None:
            return handed
        # Refreshed or revoked since it was read: start again from what is stored now.
        found = await read_token(user_id, app_type)
    return _KEPT_CHANGING


async def _hand_out(
    actor: Principal | None,
    row: dict[str, Any],
    end: datetime,
    *,
    now: datetime,
    keyring: Keyring,
    audited: bool,
    plaintext: str | None,
    refreshed: bool,
) -> CheckedOutToken | Refusal | None:
    """Decrypt (unless refreshed just now), hold the window, audit, return; None when the
    row moved to another version since it was read."""
    async with write_transaction():
        token = plaintext or await decrypted(actor, row, TokenKind.ACCESS, keyring=keyring, now=now)
        if isinstance(token, Refusal):
            return token
        if not await leases.hold(row, end, now=now):
            return None
        if audited:
            await audit.record(
                AuditAction.TOKEN_CHECKED_OUT,
                actor=actor,
                now=now,
                subject_user_id=row["user_id"],
                app_type=AppType(row["github_app_type"]),
                detail={
                    "refreshed": refreshed,
                    "credential_version": row["credential_version"],
                    "usable_until": end.isoformat(),
                },
            )
    return CheckedOutToken(
        access_token=token,
        access_token_expires_at=row["access_token_expires_at"],
        github_user_id=row["github_user_id"],
        github_login=row["github_login"],
        refreshed=refreshed,
        usable_until=end,
        credential_version=row["credential_version"],
    )
