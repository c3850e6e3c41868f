"""Checkout: a usable access token for the commit worker, refreshed when near expiry.

The refresh itself (single flight per credential_version, across tasks and
processes) is `refresh.refresh_single_flight`, shared with the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from server.auth import Principal
from server.crypto import DecryptionError, Keyring
from server.domain import audit
from server.domain.enums import AppType, AuditAction, TokenKind
from server.domain.errors import Refusal
from server.domain.github_access import GitHubAccess
from server.domain.locks import KeyedLocks
from server.domain.refresh import Locked, read_token, refresh_single_flight, unreadable, usable
from server.domain.tokens import slot_of
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import write_transaction

REFRESH_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class CheckedOutToken:
    access_token: str = field(repr=False)
    access_token_expires_at: datetime | None
    github_user_id: str
    github_login: str
    refreshed: bool

    @property
    def commit_author(self) -> str:
        """Ready for `git commit --author`, with GitHub's no-reply address."""
        login = self.github_login
        return f"{login} <{self.github_user_id}+{login}@users.noreply.github.com>"


def _needs_refresh(row: dict[str, Any], now: datetime) -> bool:
    expires_at = row["access_token_expires_at"]
    return expires_at is not None and expires_at <= now + REFRESH_MARGIN


async def checkout_token(
    actor: Principal,
    user_id: str,
    app_type: AppType,
    *,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
    locks: KeyedLocks,
) -> CheckedOutToken | Refusal:
    row = usable(await read_token(user_id, app_type))
    if isinstance(row, Refusal):
        return row
    if not _needs_refresh(row, now):
        async with write_transaction():
            return await _hand_out(actor, row, now=now, keyring=keyring)

    async def hand_out(locked: Locked) -> CheckedOutToken | Refusal:
        return await _hand_out(
            actor, locked.row, now=now, keyring=keyring, plaintext=locked.access_token
        )

    return await refresh_single_flight(
        actor,
        user_id,
        app_type,
        seen_version=row["credential_version"],
        due=lambda locked_row: _needs_refresh(locked_row, now),
        then=hand_out,
        trigger="checkout",
        now=now,
        keyring=keyring,
        github=github,
        locks=locks,
    )


async def _hand_out(
    actor: Principal,
    row: dict[str, Any],
    *,
    now: datetime,
    keyring: Keyring,
    plaintext: str | None = None,
) -> CheckedOutToken | Refusal:
    """Decrypt (unless just refreshed), note the use, audit, return."""
    refreshed = plaintext is not None
    if plaintext is None:
        try:
            plaintext = keyring.decrypt(
                row["access_token_encrypted"], slot_of(row, TokenKind.ACCESS)
            )
        except DecryptionError as exc:
            return await unreadable(actor, row, TokenKind.ACCESS, exc, now=now)
    await Token.update({Token.last_used_at: now}).where(Token.id == row["id"])
    await audit.record(
        AuditAction.TOKEN_CHECKED_OUT,
        actor=actor,
        now=now,
        subject_user_id=row["user_id"],
        app_type=AppType(row["github_app_type"]),
        detail={"refreshed": refreshed, "credential_version": row["credential_version"]},
    )
    return CheckedOutToken(
        access_token=plaintext,
        access_token_expires_at=row["access_token_expires_at"],
        github_user_id=row["github_user_id"],
        github_login=row["github_login"],
        refreshed=refreshed,
    )
