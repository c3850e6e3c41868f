"""Connect: GitHub App user authorization with a single-use state and PKCE."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from server.auth import Principal
from server.crypto import Keyring
from server.domain.enums import AppType, ErrorCode
from server.domain.errors import Refusal
from server.domain.github_access import GitHubAccess, not_configured
from server.domain.tokens import StoredToken, StoreTokenInput, store_token
from server.domain.users import ensure_user
from server.github import BadVerificationCode, GitHubError, pkce_pair
from server.storage.tables import OAuthState
from server.storage.transactions import for_update, write_transaction

STATE_TTL = timedelta(minutes=10)
MAX_REDIRECT_URI_LENGTH = 2048


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
    return await store_token(
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
