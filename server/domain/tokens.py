"""Storing and revoking a user's GitHub tokens."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from piccolo.columns import Column

from server.auth import Principal
from server.crypto import Keyring, TokenSlot
from server.domain import audit
from server.domain.enums import AppType, AuditAction, ErrorCode, RevocationReason, TokenKind
from server.domain.errors import NO_TOKEN_STORED, Refusal
from server.domain.status import TokenStatus, token_status
from server.domain.users import ensure_user
from server.github_proxy import capabilities
from server.identifiers import (
    GITHUB_LOGIN,
    MAX_USER_ID_LENGTH,
    canonical_github_user_id,
    is_user_id,
)
from server.storage.tables import User as UserRow
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import for_update, is_unique_violation, write_transaction

# GitHub documents these as prefix + up to 255 characters; today's are 36 (ghu_) and 76 (ghr_).
ACCESS_TOKEN = re.compile(r"ghu_[A-Za-z0-9_]{36,255}")
REFRESH_TOKEN = re.compile(r"ghr_[A-Za-z0-9_]{36,255}")
MAX_PROFILE_LENGTH = 320


@dataclass(frozen=True)
class StoreTokenInput:
    user_id: str
    app_type: AppType
    github_user_id: str
    github_login: str
    access_token: str = field(repr=False)
    access_token_expires_at: datetime | None = None
    refresh_token: str | None = field(default=None, repr=False)
    refresh_token_expires_at: datetime | None = None
    email: str | None = field(default=None, repr=False)
    display_name: str | None = field(default=None, repr=False)
    github_email: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StoredToken:
    token: TokenStatus
    # The row this store replaced when it held a live token of another GitHub account:
    # that account's grant is still live at GitHub (the connect flow revokes it).
    replaced_grant: Mapping[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Revocation:
    token: TokenStatus
    already_revoked: bool


def checked_store_input(data: StoreTokenInput) -> StoreTokenInput | Refusal:
    """`data` with its GitHub user id in canonical form, or its first problem, described
    without echoing any of it."""
    if not ACCESS_TOKEN.fullmatch(data.access_token):
        return Refusal(
            ErrorCode.INVALID_TOKEN_FORMAT,
            "accessToken is not a GitHub App user access token "
            "(ghu_ followed by 36 to 255 letters, digits or underscores).",
            "accessToken",
        )
    if data.refresh_token is not None and not REFRESH_TOKEN.fullmatch(data.refresh_token):
        return Refusal(
            ErrorCode.INVALID_TOKEN_FORMAT,
            "refreshToken is not a GitHub App refresh token "
            "(ghr_ followed by 36 to 255 letters, digits or underscores).",
            "refreshToken",
        )
    checks = (
        (
            not is_user_id(data.user_id),
            "userId",
            f"userId must be 1 to {MAX_USER_ID_LENGTH} printable characters.",
        ),
        (
            not GITHUB_LOGIN.fullmatch(data.github_login),
            "githubLogin",
            "githubLogin must be a GitHub login (letters, digits and hyphens, at most 39).",
        ),
        (
            data.refresh_token is None and data.refresh_token_expires_at is not None,
            "refreshTokenExpiresAt",
            "refreshTokenExpiresAt needs a refreshToken.",
        ),
    )
    for failed, field_name, message in checks:
        if failed:
            return Refusal(ErrorCode.INVALID_INPUT, message, field_name)
    # "01001" is GitHub's account 1001: stored one way only, so lookups and webhooks find it.
    github_user_id = canonical_github_user_id(data.github_user_id)
    if github_user_id is None:
        return Refusal(
            ErrorCode.INVALID_INPUT,
            "githubUserId must be GitHub's numeric user id.",
            "githubUserId",
        )
    for field_name, value in (
        ("accessTokenExpiresAt", data.access_token_expires_at),
        ("refreshTokenExpiresAt", data.refresh_token_expires_at),
    ):
        if value is not None and value.utcoffset() is None:
            return Refusal(
                ErrorCode.INVALID_INPUT, f"{field_name} must include a UTC offset.", field_name
            )
        if value is not None and not _fits_in_utc(value):
            return Refusal(ErrorCode.INVALID_INPUT, f"{field_name} is out of range.", field_name)
    for field_name, text in (
        ("email", data.email),
        ("displayName", data.display_name),
        ("githubEmail", data.github_email),
    ):
        if text is not None and len(text) > MAX_PROFILE_LENGTH:
            return Refusal(
                ErrorCode.INVALID_INPUT,
                f"{field_name} must be at most {MAX_PROFILE_LENGTH} characters.",
                field_name,
            )
    return replace(data, github_user_id=github_user_id)


def slot_of(row: Mapping[str, Any], kind: TokenKind) -> TokenSlot:
    """Where a stored row's ciphertext of `kind` lives (its associated data)."""
    return TokenSlot(row["user_id"], row["github_app_type"], row["github_user_id"], kind.value)


# asyncpg writes the first and last instants Python has as PostgreSQL's
# -infinity and infinity, which read back as naive datetimes.
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _fits_in_utc(value: datetime) -> bool:
    """Whether the time is storable and reads back as stored on both engines
    (9999-12-31T23:00-02:00, for one, is past year 9999 in UTC)."""
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:
        return False
    return _EARLIEST < in_utc < _LATEST


ALREADY_CONNECTED = Refusal(
    ErrorCode.ALREADY_CONNECTED_TO_ANOTHER_USER,
    "This GitHub account is connected to another user; "
    "that user must disconnect it (or be purged) first.",
    "githubUserId",
)
PURGED = Refusal(
    ErrorCode.INVALID_INPUT,
    "This user was purged; a purge is not undone by storing new tokens.",
    "userId",
)


async def store_token(
    actor: Principal,
    data: StoreTokenInput,
    *,
    keyring: Keyring,
    now: datetime,
    source: str = "api",
) -> StoredToken | Refusal:
    """Upsert the user and their token row; clears any revocation.

    `source` says how the tokens arrived (the API or the connect flow), for the audit log.
    """
    checked = checked_store_input(data)
    if isinstance(checked, Refusal):
        return checked
    data = checked
    try:
        async with write_transaction():
            return await _store_locked(actor, data, keyring=keyring, now=now, source=source)
    except Exception as exc:
        # Two users racing to attach one GitHub identity: the unique index decides.
        if is_unique_violation(exc):
            return ALREADY_CONNECTED
        raise


async def _store_locked(
    actor: Principal, data: StoreTokenInput, *, keyring: Keyring, now: datetime, source: str
) -> StoredToken | Refusal:
    """The steps of a store, inside the transaction `store_token` opened."""
    await ensure_user(data.user_id, now=now)
    if await _lock_user_and_check_purged(data.user_id):
        return PURGED
    await _update_profile(data)
    if await _connected_to_another_user(data):
        return ALREADY_CONNECTED
    version, replaced = await _upsert_token_row(data, _token_values(data, keyring, now), now)
    await audit.record(
        AuditAction.TOKEN_STORED,
        actor=actor,
        now=now,
        subject_user_id=data.user_id,
        app_type=data.app_type,
        detail={
            "credential_version": version,
            "has_refresh_token": data.refresh_token is not None,
            "key_id": keyring.active_key_id,
            "source": source,
        },
    )
    return StoredToken(
        await token_status(data.user_id, data.app_type, now),
        replaced_grant=_grant_of_another_account(replaced, data),
    )


def _grant_of_another_account(
    replaced: Mapping[str, Any] | None, data: StoreTokenInput
) -> Mapping[str, Any] | None:
    if replaced is None or replaced["access_token_encrypted"] is None:
        return None
    return replaced if replaced["github_user_id"] != data.github_user_id else None


async def _lock_user_and_check_purged(user_id: str) -> bool:
    """Whether the user was purged; the lock serializes every token write of that user
    (PostgreSQL)."""
    user = await for_update(UserRow.select(UserRow.purged_at).where(UserRow.id == user_id)).first()
    return user is not None and user["purged_at"] is not None


async def _update_profile(data: StoreTokenInput) -> None:
    """Keep the email and display name given; absent ones leave the stored ones alone."""
    profile: dict[str, Any] = {
        column._meta.name: value
        for column, value in (
            (UserRow.email, data.email),
            (UserRow.display_name, data.display_name),
        )
        if value is not None
    }
    if profile:
        await UserRow.update(**profile).where(UserRow.id == data.user_id)


async def _connected_to_another_user(data: StoreTokenInput) -> bool:
    owner = (
        await Token.select(Token.user_id)
        .where(
            Token.of_github_account(data.github_user_id, data.app_type)
            & (Token.user_id != data.user_id)
        )
        .first()
    )
    return owner is not None


def _token_values(data: StoreTokenInput, keyring: Keyring, now: datetime) -> dict[Column, Any]:
    """What a store writes into the row: the sealed tokens and the account, unrevoked."""

    def seal(plaintext: str, kind: TokenKind) -> str:
        slot = TokenSlot(data.user_id, data.app_type.value, data.github_user_id, kind.value)
        return keyring.encrypt(plaintext, slot)

    return {
        Token.github_user_id: data.github_user_id,
        Token.github_login: data.github_login,
        Token.github_email: data.github_email,
        Token.access_token_encrypted: seal(data.access_token, TokenKind.ACCESS),
        Token.access_token_expires_at: data.access_token_expires_at,
        Token.refresh_token_encrypted: (
            seal(data.refresh_token, TokenKind.REFRESH) if data.refresh_token else None
        ),
        Token.refresh_token_expires_at: data.refresh_token_expires_at,
        Token.revoked_at: None,
        Token.revocation_reason: None,
        # A new credential version: the windows promised on the old one end with it.
        Token.leased_until: None,
        Token.updated_at: now,
    }


async def _upsert_token_row(
    data: StoreTokenInput, values: dict[Column, Any], now: datetime
) -> tuple[int, dict[str, Any] | None]:
    """Insert the row, or update it with the next credential_version; returns that
    version, and the row as it was before when there was one."""
    by_name = {column._meta.name: value for column, value in values.items()}
    existing = await for_update(
        Token.select(
            Token.id,
            Token.credential_version,
            Token.user_id,
            Token.github_app_type,
            Token.github_user_id,
            Token.access_token_encrypted,
        ).where(Token.of(data.user_id, data.app_type))
    ).first()
    if existing is None:
        await Token.insert(
            Token(
                user_id=data.user_id,
                github_app_type=data.app_type.value,
                credential_version=1,
                created_at=now,
                **by_name,
            )
        )
        return 1, None
    version: int = existing["credential_version"] + 1
    await Token.update(credential_version=version, **by_name).where(Token.id == existing["id"])
    return version, existing


async def revoke_token(
    actor: Principal, *, user_id: str | None, app_type: AppType, now: datetime
) -> Revocation | Refusal:
    """Soft, idempotent revocation: the row stays, its ciphertexts are erased.

    Who may revoke whose token is decided at the API edge (IsUserOnSelfOrAdmin);
    `user_id` None means the actor's own. Bumping credential_version makes a
    refresh in flight lose its compare-and-swap, so a revocation always wins.
    """
    target = user_id or actor.id
    reason = (
        RevocationReason.ADMIN
        if user_id is not None and actor.is_admin
        else RevocationReason.USER_REVOKED
    )
    async with write_transaction():
        row = await for_update(
            Token.select(Token.id, Token.revoked_at, Token.credential_version).where(
                Token.of(target, app_type)
            )
        ).first()
        if row is None:
            return NO_TOKEN_STORED
        already_revoked = row["revoked_at"] is not None
        if not already_revoked:
            await mark_revoked(row["id"], row["credential_version"], reason, now)
        if not already_revoked or not await _noop_revoke_recorded(actor, target, app_type):
            await audit.record(
                AuditAction.TOKEN_REVOKED,
                actor=actor,
                now=now,
                subject_user_id=target,
                app_type=app_type,
                detail={"reason": reason.value, "already_revoked": already_revoked},
            )
        status = await token_status(target, app_type, now)
    return Revocation(token=status, already_revoked=already_revoked)


# How far back a no-op revoke looks for its own earlier record: the subject's newest
# events, room for both app types and a few admins between two changes of a token.
NOOP_REVOKE_LOOKBACK = 10


async def _noop_revoke_recorded(actor: Principal, user_id: str, app_type: AppType) -> bool:
    """Whether this actor's revoke of an already revoked token is in the log since the
    token last changed. Repeats of it are not recorded again: asking again and again
    cannot grow the log, and each actor's first try still shows."""
    for event in await audit.newest_events(user_id, NOOP_REVOKE_LOOKBACK):
        if event.app_type is not app_type:
            continue
        detail = json.loads(event.detail) if event.detail else {}
        if event.action is not AuditAction.TOKEN_REVOKED or not detail.get("already_revoked"):
            return False  # the token changed since: this try is news
        if (event.actor_role, event.actor_id) == (actor.role, actor.id):
            return True
    return False


async def mark_revoked(
    row_id: object, credential_version: int, reason: RevocationReason, now: datetime
) -> None:
    """Revoke a locked row: erase both ciphertexts, bump the version, end its capabilities.

    The bump is what makes a refresh in flight lose its compare-and-swap; the
    windows promised on the revoked version end with it, on purpose.
    """
    await Token.update(
        {
            Token.revoked_at: now,
            Token.revocation_reason: reason.value,
            Token.access_token_encrypted: None,
            Token.refresh_token_encrypted: None,
            Token.leased_until: None,
            Token.credential_version: credential_version + 1,
            Token.updated_at: now,
        }
    ).where(Token.id == row_id)
    await capabilities.end_for_token(row_id, now)
