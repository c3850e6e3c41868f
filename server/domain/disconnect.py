"""Disconnect: revoke the grant at GitHub, then delete the stored tokens regardless
of GitHub's answer, but never a token newer than the one whose grant was revoked."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.auth import Principal
from server.crypto import DecryptionError, Keyring
from server.domain import audit
from server.domain.enums import AppType, AuditAction, ErrorCode, TokenKind
from server.domain.errors import NO_TOKEN_STORED, Refusal
from server.domain.github_access import GitHubAccess
from server.domain.status import TokenStatus, not_connected
from server.domain.tokens import slot_of
from server.github import GitHubError
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import erase_freed_pages, write_transaction

# A user waiting on "Disconnect" should not wait on a slow GitHub for long.
GITHUB_REVOKE_TIMEOUT_SECONDS = 5.0
# Grants revoked in turn while tokens keep being stored during the revocations; past
# that the user is asked to try again rather than kept waiting.
MAX_DISCONNECT_ATTEMPTS = 3

TOKEN_CHANGED_DURING_DISCONNECT = Refusal(
    ErrorCode.GITHUB_UNAVAILABLE,
    "The GitHub token kept changing while it was being disconnected; nothing was deleted. "
    "Disconnect again.",
)


@dataclass(frozen=True)
class Disconnection:
    revoked_at_github: bool
    token: TokenStatus


async def revoke_grant_at_github(
    row: Mapping[str, Any], *, keyring: Keyring, github: GitHubAccess
) -> str:
    """Best effort, bounded in time; returns what happened, for the audit log."""
    configured = github.configured
    if configured is None:
        return "not_configured"
    if row["access_token_encrypted"] is None:
        return "no_token"
    try:
        access_token = keyring.decrypt(
            row["access_token_encrypted"], slot_of(row, TokenKind.ACCESS)
        )
    except DecryptionError:
        return "unreadable"
    try:
        revoked = await asyncio.wait_for(
            configured.client.revoke_grant(configured.app, access_token=access_token),
            GITHUB_REVOKE_TIMEOUT_SECONDS,
        )
    except (GitHubError, TimeoutError):
        return "unavailable"
    return "revoked" if revoked else "not_found"


async def disconnect(
    principal: Principal,
    app_type: AppType,
    *,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
) -> Disconnection | Refusal:
    """Revoke the stored grant at GitHub, then delete exactly the row whose grant that was.

    GitHub may take seconds; a token stored (or refreshed) meanwhile has a grant this
    revocation may not have touched, so the row is deleted only while its
    credential_version is still the one read, and otherwise the newer token's grant is
    revoked in turn.
    """
    revoked_accounts: set[str] = set()
    for attempt in range(1, MAX_DISCONNECT_ATTEMPTS + 1):
        row = (
            await Token.select(
                Token.id,
                Token.user_id,
                Token.github_app_type,
                Token.github_user_id,
                Token.access_token_encrypted,
                Token.credential_version,
            )
            .where(Token.of(principal.id, app_type))
            .first()
        )
        if row is None:
            return NO_TOKEN_STORED
        outcome = await revoke_grant_at_github(row, keyring=keyring, github=github)
        if outcome == "revoked":
            revoked_accounts.add(row["github_user_id"])
        # Revoked now, or dead already because an earlier attempt revoked its account's grant.
        revoked = outcome == "revoked" or (
            outcome in ("not_found", "no_token") and row["github_user_id"] in revoked_accounts
        )
        detail: dict[str, Any] = {"github": outcome, "revoked_at_github": revoked}
        if attempt > 1:
            detail["attempts"] = attempt
        if await _delete_unchanged(row, principal, now=now, app_type=app_type, detail=detail):
            await erase_freed_pages()
            return Disconnection(
                revoked_at_github=revoked, token=not_connected(principal.id, app_type)
            )
    return TOKEN_CHANGED_DURING_DISCONNECT


async def _delete_unchanged(
    row: dict[str, Any],
    principal: Principal,
    *,
    now: datetime,
    app_type: AppType,
    detail: dict[str, Any],
) -> bool:
    """Delete the row, and audit it, if it still holds the credential version read."""
    async with write_transaction():
        deleted = (
            await Token.delete()
            .where(
                (Token.id == row["id"]) & (Token.credential_version == row["credential_version"])
            )
            .returning(Token.id)
        )
        if not deleted:
            return False
        await audit.record(
            AuditAction.TOKEN_DISCONNECTED,
            actor=principal,
            now=now,
            subject_user_id=principal.id,
            app_type=app_type,
            detail=detail,
        )
    return True
