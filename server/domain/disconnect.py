"""Disconnect: revoke the grant at GitHub, then delete the stored tokens regardless."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.auth import Principal
from server.crypto import DecryptionError, Keyring
from server.domain import audit
from server.domain.enums import AppType, AuditAction, TokenKind
from server.domain.errors import NO_TOKEN_STORED, Refusal
from server.domain.github_access import GitHubAccess
from server.domain.status import TokenStatus, not_connected
from server.domain.tokens import slot_of
from server.github import GitHubError
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import erase_freed_pages, write_transaction

# A user waiting on "Disconnect" should not wait on a slow GitHub for long.
GITHUB_REVOKE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Disconnection:
    revoked_at_github: bool
    token: TokenStatus


async def revoke_grant_at_github(
    row: dict[str, Any], *, keyring: Keyring, github: GitHubAccess
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
    row = (
        await Token.select(
            Token.id,
            Token.user_id,
            Token.github_app_type,
            Token.github_user_id,
            Token.access_token_encrypted,
        )
        .where(Token.of(principal.id, app_type))
        .first()
    )
    if row is None:
        return NO_TOKEN_STORED
    outcome = await revoke_grant_at_github(row, keyring=keyring, github=github)
    async with write_transaction():
        await Token.delete().where(Token.id == row["id"])
        await audit.record(
            AuditAction.TOKEN_DISCONNECTED,
            actor=principal,
            now=now,
            subject_user_id=principal.id,
            app_type=app_type,
            detail={"github": outcome, "revoked_at_github": outcome == "revoked"},
        )
    await erase_freed_pages()
    return Disconnection(
        revoked_at_github=outcome == "revoked", token=not_connected(principal.id, app_type)
    )
