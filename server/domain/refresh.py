"""Refresh: trade a stored refresh token at GitHub for a new pair, once per version.

Checkout (on demand) and the sweep (ahead of need) both refresh through
`refresh_single_flight`. GitHub refresh tokens work once, so exactly one
refresh may reach GitHub per credential_version. Within a process the
tasks that want the same version refreshed share one attempt and its
outcome, a failure included; across processes the row lock (PostgreSQL
`FOR UPDATE`, SQLite `BEGIN IMMEDIATE`) is held over the re-read, the call
to GitHub and the compare-and-swap of credential_version. Whoever finds the
version moved on uses what the winner stored. Nothing here looks at leases:
each caller's `due` says whether a refresh may break the windows open on
the version (server/domain/leases.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from server.auth import Principal
from server.crypto import DecryptionError, Keyring, key_id_of
from server.domain import audit
from server.domain.enums import AppType, AuditAction, ErrorCode, RevocationReason, TokenKind
from server.domain.errors import NO_TOKEN_STORED, TOKEN_REVOKED, Refusal
from server.domain.github_access import GitHubAccess, not_configured
from server.domain.leases import window_end
from server.domain.locks import KeyedLocks
from server.domain.tokens import mark_revoked, slot_of
from server.github import BadRefreshToken, GitHubError, TokenGrant
from server.storage.reads import PreparedSelect
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import for_update, write_transaction

NOT_REFRESHABLE = Refusal(
    ErrorCode.REFRESH_FAILED,
    "The access token expired and there is no usable refresh token; the user must connect again.",
)
GITHUB_COULD_NOT_REFRESH = Refusal(
    ErrorCode.GITHUB_UNAVAILABLE, "GitHub could not refresh the token right now; try again later."
)

REFRESH_COLUMNS = (
    Token.id,
    Token.user_id,
    Token.github_app_type,
    Token.github_user_id,
    Token.github_login,
    Token.access_token_encrypted,
    Token.access_token_expires_at,
    Token.refresh_token_encrypted,
    Token.refresh_token_expires_at,
    Token.credential_version,
    Token.revoked_at,
    Token.leased_until,
)


@dataclass(frozen=True)
class Locked:
    """The row as read under its lock; `access_token` is set when this call refreshed it."""

    row: dict[str, Any]
    access_token: str | None = field(default=None, repr=False)

    @property
    def refreshed(self) -> bool:
        return self.access_token is not None


def select_token(user_id: str, app_type: AppType) -> Any:
    return Token.select(*REFRESH_COLUMNS).where(Token.of(user_id, app_type))


# The commit worker's hot read, before any lock: compiled once (see server.storage.reads).
_TOKEN_OF = PreparedSelect(
    lambda user_id, app_type: Token.select(*REFRESH_COLUMNS).where(
        (Token.user_id == user_id) & (Token.github_app_type == app_type)
    ),
    arity=2,
)


async def read_token(user_id: str, app_type: AppType) -> dict[str, Any] | None:
    """The row a checkout starts from (no lock: what it decides is checked again locked)."""
    return await _TOKEN_OF.first(user_id, app_type.value)


def usable(row: dict[str, Any] | None) -> dict[str, Any] | Refusal:
    """The row, or why there is no token to use."""
    if row is None:
        return NO_TOKEN_STORED
    if row["revoked_at"] is not None:
        return TOKEN_REVOKED
    return row


def refresh_token_usable(row: Mapping[str, Any], now: datetime) -> bool:
    expires_at = row["refresh_token_expires_at"]
    return row["refresh_token_encrypted"] is not None and (expires_at is None or expires_at > now)


async def refresh_single_flight(
    actor: Principal | None,
    user_id: str,
    app_type: AppType,
    *,
    seen_version: int,
    due: Callable[[dict[str, Any]], bool],
    trigger: str,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    locks: KeyedLocks,
    lease: timedelta | None = None,
    skip_locked: bool = False,
) -> tuple[Locked | Refusal, bool]:
    """Refresh the token if it is still at `seen_version` and still `due`, in one attempt.

    Returns the attempt's outcome and whether this call made it. The outcome
    is the row as refreshed (with the new access token), or as found under
    its lock (another task or process got there first, or it is no longer
    due), or a Refusal. The tasks of this process that ask for the same
    version and `trigger` while an attempt runs share its outcome, failures
    included: a GitHub that times out costs them one timeout together, not
    one each in turn (holding SQLite's write lock each time).

    `trigger` ("checkout", "sweep", ...) goes into the audit log. `lease`
    opens a window on the refreshed version in the refresh's own
    transaction, so that no other process refreshes it again before its
    first holder has it. With `skip_locked`, a row another transaction holds
    counts as gone (PostgreSQL `SKIP LOCKED`): a sweeper leaves it to
    whoever holds it instead of waiting.
    """

    async def attempt() -> Locked | Refusal:
        """Lock the row, re-read it, refresh it if it is still the version seen and due."""
        async with locks.hold((user_id, app_type)):
            try:
                async with write_transaction():
                    locked = for_update(select_token(user_id, app_type), skip_locked)
                    row = usable(await locked.first())
                    if isinstance(row, Refusal):
                        return row
                    if row["credential_version"] != seen_version or not due(row):
                        return Locked(row)
                    return await _refresh_locked(
                        actor,
                        row,
                        now=now,
                        keyring=keyring,
                        github=github,
                        trigger=trigger,
                        lease=lease,
                    )
            except GitHubError as exc:
                # Raised inside the transaction, so the row is exactly as it was.
                async with write_transaction():
                    await _refresh_failed(
                        actor,
                        user_id,
                        app_type,
                        now,
                        "github_unavailable",
                        error=type(exc).__name__,
                        trigger=trigger,
                    )
                return GITHUB_COULD_NOT_REFRESH

    return await locks.share((user_id, app_type, seen_version, trigger), attempt)


async def _refresh_locked(
    actor: Principal | None,
    row: dict[str, Any],
    *,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    trigger: str,
    lease: timedelta | None,
) -> Locked | Refusal:
    """Refresh a locked, due row. Transient GitHub trouble raises GitHubError."""
    app_type = AppType(row["github_app_type"])
    user_id, seen_version = row["user_id"], row["credential_version"]
    if not refresh_token_usable(row, now):
        return NOT_REFRESHABLE
    configured = github.configured
    if configured is None:
        return not_configured(app_type)
    refresh_token = await decrypted(actor, row, TokenKind.REFRESH, keyring=keyring, now=now)
    if isinstance(refresh_token, Refusal):
        return refresh_token
    try:
        grant = await configured.client.refresh(
            configured.app, refresh_token=refresh_token, now=now
        )
    except BadRefreshToken:
        await mark_revoked(row["id"], seen_version, RevocationReason.REFRESH_FAILED, now)
        await _refresh_failed(
            actor,
            user_id,
            app_type,
            now,
            "bad_refresh_token",
            credential_version=seen_version + 1,
            trigger=trigger,
        )
        return Refusal(
            ErrorCode.REFRESH_FAILED,
            "GitHub refused the refresh token; the token is revoked and the user must connect "
            "again.",
        )
    refreshed = {
        **row,
        "access_token_expires_at": grant.access_token_expires_at,
        "refresh_token_expires_at": grant.refresh_token_expires_at,
        "credential_version": seen_version + 1,
    }
    refreshed["leased_until"] = None if lease is None else window_end(refreshed, now, lease)
    await _store_grant(row, grant, leased_until=refreshed["leased_until"], now=now, keyring=keyring)
    await audit.record(
        AuditAction.TOKEN_REFRESHED,
        actor=actor,
        now=now,
        subject_user_id=user_id,
        app_type=app_type,
        detail={
            "credential_version": seen_version + 1,
            "key_id": keyring.active_key_id,
            "reason": trigger,
        },
    )
    return Locked(refreshed, access_token=grant.access_token)


async def _refresh_failed(
    actor: Principal | None,
    user_id: str,
    app_type: AppType,
    now: datetime,
    reason: str,
    **detail: Any,
) -> None:
    """Audit a refresh that did not happen, and why."""
    await audit.record(
        AuditAction.TOKEN_REFRESH_FAILED,
        actor=actor,
        now=now,
        subject_user_id=user_id,
        app_type=app_type,
        detail={"reason": reason, **detail},
    )


async def _store_grant(
    row: dict[str, Any],
    grant: TokenGrant,
    *,
    leased_until: datetime | None,
    now: datetime,
    keyring: Keyring,
) -> None:
    """Compare-and-swap the new pair in; the version must be the one refreshed from.

    The new version starts with no window but the one opened for whoever refreshed.
    """
    seen_version = row["credential_version"]
    refresh_ciphertext = (
        keyring.encrypt(grant.refresh_token, slot_of(row, TokenKind.REFRESH))
        if grant.refresh_token
        else None
    )
    swapped = (
        await Token.update(
            {
                Token.access_token_encrypted: keyring.encrypt(
                    grant.access_token, slot_of(row, TokenKind.ACCESS)
                ),
                Token.access_token_expires_at: grant.access_token_expires_at,
                Token.refresh_token_encrypted: refresh_ciphertext,
                Token.refresh_token_expires_at: grant.refresh_token_expires_at,
                Token.credential_version: seen_version + 1,
                Token.last_refreshed_at: now,
                Token.leased_until: leased_until,
                Token.updated_at: now,
            }
        )
        .where((Token.id == row["id"]) & (Token.credential_version == seen_version))
        .returning(Token.id)
    )
    if not swapped:
        # The row lock makes this unreachable; if it ever happens, keep the stored row.
        raise RuntimeError("credential_version moved while the row was locked")


async def decrypted(
    actor: Principal | None,
    row: dict[str, Any],
    kind: TokenKind,
    *,
    keyring: Keyring,
    now: datetime,
) -> str | Refusal:
    """The row's token of `kind` in plain text, or TOKEN_UNREADABLE (audited)."""
    try:
        return keyring.decrypt(row[Token.ciphertext_column(kind)._meta.name], slot_of(row, kind))
    except DecryptionError as exc:
        return await unreadable(actor, row, kind, exc, now=now)


async def unreadable(
    actor: Principal | None,
    row: dict[str, Any],
    kind: TokenKind,
    error: DecryptionError,
    *,
    now: datetime,
) -> Refusal:
    """A ciphertext that will not open: say so, audit it, touch nothing else."""
    column = Token.ciphertext_column(kind)._meta.name
    try:
        key_id: str | None = key_id_of(row[column])
    except DecryptionError:
        key_id = None
    await audit.record(
        AuditAction.TOKEN_DECRYPTION_FAILED,
        actor=actor,
        now=now,
        subject_user_id=row["user_id"],
        app_type=AppType(row["github_app_type"]),
        detail={"column": column, "key_id": key_id, "error": str(error)},
    )
    return Refusal(
        ErrorCode.TOKEN_UNREADABLE,
        "The stored token cannot be decrypted (a missing key or a damaged value); "
        "an operator has the details in the audit log, and the user can connect again.",
    )
