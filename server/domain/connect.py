"""Connect: GitHub App user authorization with a single-use state and PKCE."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from server.auth import Principal
from server.crypto import Keyring
from server.domain import audit
from server.domain.disconnect import revoke_grant_at_github
from server.domain.enums import AppType, AuditAction, ErrorCode
from server.domain.errors import Refusal
from server.domain.github_access import GitHubAccess, not_configured
from server.domain.tokens import StoredToken, StoreTokenInput, store_token
from server.domain.users import ensure_user
from server.github import BadVerificationCode, GitHubError, pkce_pair
from server.storage.tables import OAuthState, User
from server.storage.transactions import for_update, write_transaction

STATE_TTL = timedelta(minutes=10)
MAX_REDIRECT_URI_LENGTH = 2048
# States a user holds at once (a few tabs, both apps); a new one replaces the oldest,
# so asking again and again cannot grow the table.
MAX_STATES_PER_USER = 5


@dataclass(frozen=True)
class PendingConnect:
    authorize_url: str
    state: str
    expires_at: datetime


def _state_hash(state: str) -> str:
    # Only the hash is stored: a database reader cannot finish someone's connect.
    return hashlib.sha256(state.encode()).hexdigest()


def _redirect_uri_problem(redirect_uri: str | None) -> Refusal | None:
    if redirect_uri is None:
        return None
    try:
        parts = urlsplit(redirect_uri)
        parts.port  # noqa: B018 -- urlsplit checks the port lazily
    except ValueError:
        parts = None
    if (
        parts is None
        or len(redirect_uri) > MAX_REDIRECT_URI_LENGTH
        or parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.fragment
    ):
        return Refusal(
            ErrorCode.INVALID_INPUT,
            "redirectUri must be an absolute http(s) URL without a fragment.",
            "redirectUri",
        )
    return None


async def start_connect(
    principal: Principal,
    app_type: AppType,
    redirect_uri: str | None,
    *,
    now: datetime,
    github: GitHubAccess,
) -> PendingConnect | Refusal:
    configured = github.configured
    if configured is None:
        return not_configured(app_type)
    problem = _redirect_uri_problem(redirect_uri)
    if problem is not None:
        return problem
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    expires_at = now + STATE_TTL
    async with write_transaction():
        await ensure_user(principal.id, now=now, email=principal.email, display_name=principal.name)
        # One start of a user at a time (PostgreSQL), so two cannot both find room.
        await for_update(User.select(User.id).where(User.id == principal.id))
        await _forget_expired(now)
        await _make_room(principal.id)
        await OAuthState.insert(
            OAuthState(
                state_hash=_state_hash(state),
                user_id=principal.id,
                github_app_type=app_type.value,
                code_verifier=verifier,
                redirect_uri=redirect_uri,
                created_at=now,
                expires_at=expires_at,
            )
        )
    return PendingConnect(
        authorize_url=configured.client.authorize_url(
            configured.app, state=state, code_challenge=challenge, redirect_uri=redirect_uri
        ),
        state=state,
        expires_at=expires_at,
    )


async def _forget_expired(now: datetime) -> None:
    """Delete every expired state, whoever's, and the PKCE verifier with it."""
    await OAuthState.delete().where(OAuthState.expires_at <= now)


async def _make_room(user_id: str) -> None:
    """Leave the user at most MAX_STATES_PER_USER - 1 states, the newest: the oldest go."""
    kept = (
        await OAuthState.select(OAuthState.state_hash)
        .where(OAuthState.user_id == user_id)
        .order_by(OAuthState.created_at, OAuthState.state_hash, ascending=False)
        .limit(MAX_STATES_PER_USER - 1)
    )
    if len(kept) < MAX_STATES_PER_USER - 1:
        return
    await OAuthState.delete().where(
        (OAuthState.user_id == user_id)
        & OAuthState.state_hash.not_in([row["state_hash"] for row in kept])
    )


@dataclass(frozen=True)
class _ClaimedState:
    app_type: AppType
    code_verifier: str
    redirect_uri: str | None


async def _claim_state(principal: Principal, state: str, now: datetime) -> _ClaimedState | Refusal:
    """Use the state up, atomically: of two concurrent completes only one gets it."""
    async with write_transaction():
        row = await for_update(
            OAuthState.select().where(OAuthState.state_hash == _state_hash(state))
        ).first()
        # This one too when it expired: the answer below is all it is still good for.
        await _forget_expired(now)
        if row is None:
            return Refusal(
                ErrorCode.INVALID_STATE, "This state was not issued by this server.", "state"
            )
        if row["user_id"] != principal.id:
            return Refusal(
                ErrorCode.ACCOUNT_MISMATCH,
                "This state was issued to another user; start the connection again.",
                "state",
            )
        if row["used_at"] is not None:
            return Refusal(ErrorCode.STATE_ALREADY_USED, "This state was already used.", "state")
        if row["expires_at"] <= now:
            return Refusal(
                ErrorCode.STATE_EXPIRED,
                "This state expired; start the connection again.",
                "state",
            )
        await OAuthState.update({OAuthState.used_at: now, OAuthState.code_verifier: None}).where(
            OAuthState.state_hash == row["state_hash"]
        )
    return _ClaimedState(
        app_type=AppType(row["github_app_type"]),
        code_verifier=row["code_verifier"],
        redirect_uri=row["redirect_uri"],
    )


async def complete_connect(
    principal: Principal,
    code: str,
    state: str,
    *,
    now: datetime,
    keyring: Keyring,
    github_for: dict[AppType, GitHubAccess],
) -> StoredToken | Refusal:
    """Check the state, exchange the code (with the PKCE verifier), store the tokens."""
    claimed = await _claim_state(principal, state, now)
    if isinstance(claimed, Refusal):
        return claimed
    github = github_for[claimed.app_type].configured
    if github is None:
        return not_configured(claimed.app_type)
    try:
        grant = await github.client.exchange_code(
            github.app,
            code=code,
            code_verifier=claimed.code_verifier,
            redirect_uri=claimed.redirect_uri,
            now=now,
        )
        user = await github.client.get_user(grant.access_token)
    except BadVerificationCode:
        return Refusal(
            ErrorCode.INVALID_INPUT,
            "GitHub refused the authorization code (expired, used, or from another request).",
            "code",
        )
    except GitHubError:
        return Refusal(
            ErrorCode.GITHUB_UNAVAILABLE, "GitHub could not complete the connection right now."
        )
    stored = await store_token(
        principal,
        StoreTokenInput(
            user_id=principal.id,
            app_type=claimed.app_type,
            github_user_id=user.id,
            github_login=user.login,
            github_email=user.email,
            access_token=grant.access_token,
            access_token_expires_at=grant.access_token_expires_at,
            refresh_token=grant.refresh_token,
            refresh_token_expires_at=grant.refresh_token_expires_at,
        ),
        keyring=keyring,
        now=now,
        source="connect",
    )
    if isinstance(stored, StoredToken) and stored.replaced_grant is not None:
        await _revoke_replaced_grant(
            principal,
            stored.replaced_grant,
            now=now,
            keyring=keyring,
            github=github_for[claimed.app_type],
        )
    return stored


async def _revoke_replaced_grant(
    principal: Principal,
    replaced: Mapping[str, Any],
    *,
    now: datetime,
    keyring: Keyring,
    github: GitHubAccess,
) -> None:
    """Reconnected as another GitHub account: the previous account's grant, whose tokens
    ghvault no longer holds, is revoked at GitHub (best effort) and the outcome audited."""
    outcome = await revoke_grant_at_github(replaced, keyring=keyring, github=github)
    async with write_transaction():
        await audit.record(
            AuditAction.TOKEN_DISCONNECTED,
            actor=principal,
            now=now,
            subject_user_id=principal.id,
            app_type=AppType(replaced["github_app_type"]),
            detail={
                "github": outcome,
                "revoked_at_github": outcome == "revoked",
                "reason": "reconnected_as_another_github_account",
            },
        )
