"""Refresh: trade a stored refresh token at GitHub for a new pair, once per version.

Checkout (on demand) and the sweep (ahead of need) both refresh through
`refresh_single_flight`. GitHub refresh tokens work once, so exactly one
refresh may reach GitHub per credential_version. Within a process a
per-token asyncio lock lets one task refresh while the others wait; across
processes the row lock (PostgreSQL `FOR UPDATE`, SQLite `BEGIN IMMEDIATE`)
is held over the re-read, the call to GitHub and the compare-and-swap of
credential_version. Whoever finds the version moved on uses what the winner
stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from server.auth import Principal
from server.crypto import DecryptionError, Keyring, key_id_of
from server.domain import audit
from server.domain.enums import AppType, AuditAction, ErrorCode, RevocationReason, TokenKind
from server.domain.errors import NO_TOKEN_STORED, TOKEN_REVOKED, Refusal
from server.domain.github_access import GitHubAccess, not_configured
from server.domain.locks import KeyedLocks
from server.domain.tokens import mark_revoked, slot_of
from server.github import BadRefreshToken, GitHubError, TokenGrant
from server.storage.reads import PreparedSelect
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import for_update, write_transaction

T = TypeVar("T")

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
    then: Callable[[Locked], Awaitable[T]],
    trigger: str,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    locks: KeyedLocks,
    skip_locked: bool = False,
) -> T | Refusal:
    """Refresh the token if it is still at `seen_version` and still `due`; then `then`.

    `then` runs in the same transaction, on the row as refreshed or as found
    (another task or process got there first). `trigger` ("checkout",
    "sweep") goes into the audit log. With `skip_locked`, a row another
    transaction holds counts as gone (PostgreSQL `SKIP LOCKED`): a sweeper
    leaves it to whoever holds it instead of waiting.
    """
    async with locks.hold((user_id, app_type)):
        try:
            async with write_transaction():
                row = usable(await for_update(select_token(user_id, app_type), skip_locked).first())
                if isinstance(row, Refusal):
                    return row
                if row["credential_version"] != seen_version or not due(row):
                    return await then(Locked(row))
                refreshed = await _refresh_locked(
                    actor, row, now=now, keyring=keyring, github=github, trigger=trigger
                )
                if isinstance(refreshed, Refusal):
                    return refreshed
                return await then(refreshed)
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
            return Refusal(
                ErrorCode.GITHUB_UNAVAILABLE,
                "GitHub could not refresh the token right now; try again later.",
            )


async def _refresh_locked(
    actor: Principal | None,
    row: dict[str, Any],
    *,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    trigger: str,
) -> Locked | Refusal:
    """Refresh a locked, due row. Transient GitHub trouble raises GitHubError."""
    app_type = AppType(row["github_app_type"])
    user_id, seen_version = row["user_id"], row["credential_version"]
    if not refresh_token_usable(row, now):
        return Refusal(
            ErrorCode.REFRESH_FAILED,
            "The access token expired and there is no usable refresh token; "
            "the user must connect again.",
        )
    configured = github.configured
    if configured is None:
        return not_configured(app_type)
    try:
        refresh_token = keyring.decrypt(
            row["refresh_token_encrypted"], slot_of(row, TokenKind.REFRESH)
        )
    except DecryptionError as exc:
        return await unreadable(actor, row, TokenKind.REFRESH, exc, now=now)
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
    await _store_grant(row, grant, now=now, keyring=keyring)
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
    refreshed = {
        **row,
        "access_token_expires_at": grant.access_token_expires_at,
        "refresh_token_expires_at": grant.refresh_token_expires_at,
        "credential_version": seen_version + 1,
    }
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
    row: dict[str, Any], grant: TokenGrant, *, now: datetime, keyring: Keyring
) -> None:
    """Compare-and-swap the new pair in; the version must be the one refreshed from."""
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
                Token.updated_at: now,
            }
        )
        .where((Token.id == row["id"]) & (Token.credential_version == seen_version))
        .returning(Token.id)
    )
    if not swapped:
        # The row lock makes this unreachable; if it ever happens, keep the stored row.
        raise RuntimeError("credential_version moved while the row was locked")


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
