"""Shared test data and GraphQL documents."""

from __future__ import annotations

import secrets
import string
from datetime import datetime, timedelta
from typing import Any

_ALPHABET = string.ascii_letters + string.digits


def random_token(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def access_token() -> str:
    return random_token("ghu_", 36)


def refresh_token() -> str:
    return random_token("ghr_", 76)


STORE = """
mutation Store($input: StoreGithubTokenInput!) {
  storeGithubToken(input: $input) {
    __typename
    ... on StoreGithubTokenSuccess { token { state githubLogin userId appType } }
    ... on OperationError { code message field }
  }
}
"""

REVOKE = """
mutation Revoke($input: RevokeTokenInput!) {
  revokeToken(input: $input) {
    __typename
    ... on RevokeTokenSuccess { alreadyRevoked token { state revocationReason revokedAt } }
    ... on OperationError { code message }
  }
}
"""

PURGE = """
mutation Purge($userId: ID!) {
  purgeUser(userId: $userId) {
    __typename
    ... on PurgeUserSuccess { userId deletedTokens purgedAt alreadyPurged }
    ... on OperationError { code message }
  }
}
"""

VIEWER_TOKEN = """
{ viewer { githubToken(appType: STANDARD) {
    state needsReconnect githubLogin accessTokenExpiresAt revocationReason } } }
"""


def store_input(
    user_id: str,
    *,
    now: datetime,
    github_user_id: str = "583231",
    github_login: str = "octocat",
    app_type: str = "STANDARD",
    access: str | None = None,
    refresh: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Variables for STORE: an 8-hour access token and a 6-month refresh token."""
    return {
        "input": {
            "userId": user_id,
            "appType": app_type,
            "githubUserId": github_user_id,
            "githubLogin": github_login,
            "accessToken": access or access_token(),
            "accessTokenExpiresAt": (now + timedelta(hours=8)).isoformat(),
            "refreshToken": refresh or refresh_token(),
            "refreshTokenExpiresAt": (now + timedelta(days=180)).isoformat(),
            **extra,
        }
    }
