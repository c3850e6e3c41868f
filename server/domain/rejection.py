"""A worker reports that GitHub rejected a token ghvault handed out.

Leases keep ghvault's own refreshes from killing a handed-out token, but a
token can still die in ways ghvault does not see: GitHub expiring it early,
a clock far off, the user revoking it at GitHub before the webhook arrives.
The worker says which credential version it holds (CheckoutSuccess's
credentialVersion), and ghvault asks GitHub about that token
(`POST /applications/{client_id}/token`). If GitHub says it is dead, that
version is refreshed, whatever windows are open on it (they are broken
already), or revoked as `github_rejected` when it cannot be refreshed.

Fenced by the version: a report about a version that is no longer the
stored one changes nothing and asks GitHub nothing (STALE), so a late or
repeated report never touches a newer token. Reports are limited per user,
since each one asking GitHub costs a request against the app's limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from server.auth import Principal
from server.crypto import Keyring
from server.domain import audit
from server.domain.enums import (
    AppType,
    AuditAction,
    ErrorCode,
    RejectionOutcome,
    RevocationReason,
    TokenKind,
)
from server.domain.errors import InvalidInput, Refusal
from server.domain.github_access import GitHubAccess, not_configured
from server.domain.locks import KeyedLocks
from server.domain.rate_limits import RateLimit
from server.domain.refresh import (
    decrypted,
    read_token,
    refresh_single_flight,
    refresh_token_usable,
    select_token,
    usable,
)
from server.domain.status import TokenStatus, token_status
from server.domain.tokens import mark_revoked
from server.github import GitHubError
from server.storage.transactions import for_update, write_transaction

REPORTS_PER_USER = 5
REPORT_PERIOD = timedelta(minutes=1)
TRIGGER = "github_rejected"
# credential_version is an INTEGER column; a larger number names no version.
_MAX_VERSION = 2**31 - 1


@dataclass(frozen=True)
class RejectionReport:
    outcome: RejectionOutcome
    token: TokenStatus


def report_limit() -> RateLimit:
    """The limit reports are held to, per user."""
    return RateLimit(REPORTS_PER_USER, REPORT_PERIOD)


async def report_rejected(
    actor: Principal,
    user_id: str,
    app_type: AppType,
    credential_version: int,
    *,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    locks: KeyedLocks,
    limit: RateLimit,
) -> RejectionReport | Refusal:
    """Ask GitHub about `credential_version` of the user's token; refresh or revoke it if
    GitHub says it is dead. Raises InvalidInput for a version that cannot exist."""
    if not 1 <= credential_version <= _MAX_VERSION:
        raise InvalidInput(
            "credentialVersion must be the positive number checkoutGithubToken returned",
            "credentialVersion",
        )
    wait = limit.take(user_id, now)
    if wait is not None:
        return Refusal(
            ErrorCode.RATE_LIMITED,
            f"Too many rejection reports for this user; try again in {wait.seconds + 1} s.",
        )
    row = usable(await read_token(user_id, app_type))
    if isinstance(row, Refusal):
        return row
    if row["credential_version"] != credential_version:
        return RejectionReport(RejectionOutcome.STALE, await token_status(user_id, app_type, now))
    configured = github.configured
    if configured is None:
        return not_configured(app_type)
    access_token = await decrypted(actor, row, TokenKind.ACCESS, keyring=keyring, now=now)
    if isinstance(access_token, Refusal):
        return access_token
    try:
        alive = await configured.client.check_token(configured.app, access_token=access_token)
    except GitHubError:
        return Refusal(
            ErrorCode.GITHUB_UNAVAILABLE,
            "GitHub could not be asked about the token right now; try again later.",
        )
    if alive:
        outcome = RejectionOutcome.STILL_VALID
    else:
        outcome_or_refusal = await _replace_dead(
            actor, row, now=now, keyring=keyring, github=github, locks=locks
        )
        if isinstance(outcome_or_refusal, Refusal):
            return outcome_or_refusal
        outcome = outcome_or_refusal
    async with write_transaction():
        await audit.record(
            AuditAction.TOKEN_REJECTION_REPORTED,
            actor=actor,
            now=now,
            subject_user_id=user_id,
            app_type=app_type,
            detail={"credential_version": credential_version, "outcome": outcome.value},
        )
    return RejectionReport(outcome, await token_status(user_id, app_type, now))


async def _replace_dead(
    actor: Principal,
    row: dict[str, Any],
    *,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    locks: KeyedLocks,
) -> RejectionOutcome | Refusal:
    """Refresh the dead version in `row`, or revoke it when it cannot be refreshed."""
    user_id, app_type = row["user_id"], AppType(row["github_app_type"])
    version = row["credential_version"]
    attempt, _ = await refresh_single_flight(
        actor,
        user_id,
        app_type,
        seen_version=version,
        due=lambda locked: refresh_token_usable(locked, now),
        trigger=TRIGGER,
        now=now,
        keyring=keyring,
        github=github,
        locks=locks,
    )
    if isinstance(attempt, Refusal):
        # REFRESH_FAILED: GitHub refused the refresh token too, and the row is revoked.
        if attempt.code is ErrorCode.REFRESH_FAILED:
            return RejectionOutcome.REVOKED
        return attempt
    if attempt.refreshed:
        return RejectionOutcome.REFRESHED
    if attempt.row["credential_version"] != version:
        return RejectionOutcome.STALE
    revoked = await _revoke_version(actor, user_id, app_type, version, now=now)
    return RejectionOutcome.REVOKED if revoked else RejectionOutcome.STALE


async def _revoke_version(
    actor: Principal, user_id: str, app_type: AppType, version: int, *, now: datetime
) -> bool:
    """Revoke the token as `github_rejected` if it is still at `version`; whether it was."""
    async with write_transaction():
        row = usable(await for_update(select_token(user_id, app_type)).first())
        if isinstance(row, Refusal) or row["credential_version"] != version:
            return False
        await mark_revoked(row["id"], version, RevocationReason.GITHUB_REJECTED, now)
        await audit.record(
            AuditAction.TOKEN_REVOKED,
            actor=actor,
            now=now,
            subject_user_id=user_id,
            app_type=app_type,
            detail={"reason": RevocationReason.GITHUB_REJECTED.value, "already_revoked": False},
        )
    return True
