"""GDPR erasure of a user: tokens and capabilities deleted, profile nulled, the
repositories named in their capability events erased, bytes gone from disk."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.auth import Principal
from server.crypto import Keyring
from server.domain import audit
from server.domain.disconnect import revoke_grant_at_github
from server.domain.enums import AppType, AuditAction, ErrorCode
from server.domain.errors import Refusal
from server.domain.github_access import GitHubAccess
from server.github_proxy import capabilities
from server.storage.tables import OAuthState
from server.storage.tables import User as UserRow
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import erase_freed_pages, for_update, write_transaction


@dataclass(frozen=True)
class Erasure:
    user_id: str
    deleted_tokens: int
    purged_at: datetime
    already_purged: bool


async def _revoke_grants_of_user(
    user_id: str, *, keyring: Keyring, github_for: Mapping[AppType, GitHubAccess]
) -> dict[str, str]:
    """Best effort, concurrently and bounded in time: {app type: outcome}."""
    rows = await Token.select(
        Token.user_id, Token.github_app_type, Token.github_user_id, Token.access_token_encrypted
    ).where(Token.user_id == user_id)
    outcomes = await asyncio.gather(
        *(
            revoke_grant_at_github(
                row, keyring=keyring, github=github_for[AppType(row["github_app_type"])]
            )
            for row in rows
        )
    )
    return {row["github_app_type"]: outcome for row, outcome in zip(rows, outcomes, strict=True)}


async def purge_user(
    actor: Principal,
    user_id: str,
    *,
    now: datetime,
    keyring: Keyring | None = None,
    github_for: Mapping[AppType, GitHubAccess] | None = None,
) -> Erasure | Refusal:
    """Erase the user in one transaction; idempotent.

    With GitHub access given, the grants are revoked at GitHub first (best
    effort); the outcome goes into the audit detail, and local erasure
    happens whatever GitHub answered.
    """
    github_outcome: dict[str, Any] | None = None
    if keyring is not None and github_for is not None:
        github_outcome = await _revoke_grants_of_user(
            user_id, keyring=keyring, github_for=github_for
        )
    async with write_transaction():
        user = await for_update(
            UserRow.select(UserRow.purged_at).where(UserRow.id == user_id)
        ).first()
        if user is None:
            return Refusal(ErrorCode.NOT_FOUND, "No user has this id.", "userId")
        deleted_tokens = await Token.count().where(Token.user_id == user_id)
        # Their capabilities go with the token rows (ON DELETE CASCADE).
        await Token.delete().where(Token.user_id == user_id)
        await capabilities.erase_audit_details_of_user(user_id)
        await OAuthState.delete().where(OAuthState.user_id == user_id)
        already_purged = user["purged_at"] is not None
        purged_at = user["purged_at"] or now
        await UserRow.update(
            {UserRow.email: None, UserRow.display_name: None, UserRow.purged_at: purged_at}
        ).where(UserRow.id == user_id)
        await audit.record(
            AuditAction.USER_PURGED,
            actor=actor,
            now=now,
            subject_user_id=user_id,
            detail={
                "deleted_tokens": deleted_tokens,
                "already_purged": already_purged,
                **({"github": github_outcome} if github_outcome else {}),
            },
        )
    await erase_freed_pages()
    return Erasure(
        user_id=user_id,
        deleted_tokens=deleted_tokens,
        purged_at=purged_at,
        already_purged=already_purged,
    )
