"""Test helpers: environment, throwaway databases, principals, GraphQL documents and data."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import string
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from piccolo.engine.base import Engine

from server.auth import mint_token
from server.domain.enums import Role
from tests.fake_github import LITE_APP, STANDARD_APP, FakeGitHub

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


# ---------------------------------------------------------------- environment

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PICCOLO = Path(sys.executable).parent / "piccolo"

JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"
ACTIVE_KEY = base64.b64encode(b"A" * 32).decode()
RETIRED_KEY = base64.b64encode(b"R" * 32).decode()
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)

# Anything shaped like a GitHub token or a JWT; scanned for in logs and files.
SECRET_PATTERN = re.compile(
    r"(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}|eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}"
)


def require_postgres() -> bool:
    return os.environ.get("GHVAULT_REQUIRE_POSTGRES", "") in ("1", "true", "yes")


def base_env(**overrides: str) -> dict[str, str]:
    env = {
        "USER_GH_APP_TOKEN_ENCRYPTION_KEY": ACTIVE_KEY,
        "AUTH_JWT_SECRET": JWT_SECRET,
        "GHVAULT_ENV": "development",
    }
    env.update(overrides)
    return env


def run_piccolo(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """`piccolo ...` from the project root, as an operator runs it."""
    env = {**os.environ, "DATABASE_URL": database_url, "PICCOLO_CONF": "piccolo_conf"}
    return subprocess.run(
        [str(PICCOLO), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def migrate(database_url: str) -> None:
    result = run_piccolo("migrations", "forwards", "all", database_url=database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout, result.stdout


# ---------------------------------------------------------------- PostgreSQL


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_statement(url: str, statement: str) -> None:
    """Run one statement on its own loop and thread (callers may be inside a loop)."""

    async def run() -> None:
        connection = await asyncpg.connect(url, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result()


@dataclass
class PostgresServer:
    """A throwaway database on the test server, created and dropped by this run."""

    admin_url: str

    def create_database(self, prefix: str = "ghvault_test") -> str:
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        admin_statement(self.admin_url, f'CREATE DATABASE "{name}"')
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        admin_statement(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- databases, clock, GitHub


@dataclass
class Database:
    kind: str  # "sqlite" | "postgres"
    engine: Engine
    url: str
    sqlite_path: Path | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"

    async def fetch(self, sql: str) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.engine.run_ddl(sql) or ()]


class MovableClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


WEBHOOK_SECRET = "standard-webhook-secret-for-tests"
WEBHOOK_SECRET_LITE = "lite-webhook-secret-for-tests"
GITHUB_TIMEOUT_SECONDS = 1.0


def github_env(fake: FakeGitHub) -> dict[str, str]:
    """Both apps pointed at the fake GitHub."""
    return {
        "GITHUB_APP_CLIENT_ID": STANDARD_APP.client_id,
        "GITHUB_APP_CLIENT_SECRET": STANDARD_APP.client_secret,
        "GITHUB_APP_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GITHUB_APP_CLIENT_ID_LITE": LITE_APP.client_id,
        "GITHUB_APP_CLIENT_SECRET_LITE": LITE_APP.client_secret,
        "GITHUB_APP_WEBHOOK_SECRET_LITE": WEBHOOK_SECRET_LITE,
        "GITHUB_OAUTH_BASE_URL": fake.base_url,
        "GITHUB_API_BASE_URL": fake.base_url,
        "GITHUB_TIMEOUT_SECONDS": str(GITHUB_TIMEOUT_SECONDS),
    }


# ---------------------------------------------------------------- principals and the GraphQL client


def bearer(sub: str, role: Role, *, ttl: timedelta = timedelta(hours=1), **claims: Any) -> str:
    token = mint_token(
        JWT_SECRET.encode(),
        sub=sub,
        role=role,
        now=datetime.now(UTC),
        ttl=ttl,
        extra=claims or None,
    )
    return f"Bearer {token}"


class GraphQLClient:
    """POSTs GraphQL to the app under test, as a given principal."""

    def __init__(self, client: Any) -> None:
        self.http = client

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, *, auth: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": auth} if auth else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        if response.status == 401:
            # Refused from the headers alone, with the GraphQL error body.
            body = await response.json()
            assert error_codes(body) == ["UNAUTHENTICATED"], body
            return body
        assert response.status == 200, await response.text()
        return await response.json()

    async def data(
        self, query: str, variables: dict[str, Any] | None = None, *, auth: str | None = None
    ) -> dict[str, Any]:
        """The `data` of a response that must have no errors."""
        body = await self.post(query, variables, auth=auth)
        assert "errors" not in body, body["errors"]
        return body["data"]


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in body.get("errors", [])]


# The principals most tests act as (bearer headers, valid for an hour from import).
SERVICE = bearer("commit-worker", Role.SERVICE)
ADMIN = bearer("root", Role.ADMIN)
ALICE = bearer("alice", Role.USER)
BOB = bearer("bob", Role.USER)
