"""Test helpers: environment, throwaway databases, principals, GraphQL documents and data."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import secrets
import socket
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
from server.domain.enums import AppType, Role
from server.domain.stats import token_stats
from server.domain.status import STATUS_COLUMNS, STORED_STATES, status_from_row
from server.domain.sweep import DEFAULT_WINDOW, is_due
from server.storage.sqlite_pool import PooledSQLiteEngine
from server.storage.tables import User
from server.storage.tables import UserGithubAppToken as Token
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

ISSUE_CAPABILITY = """
mutation Issue($input: IssueGithubCapabilityInput!) {
  issueGithubCapability(input: $input) {
    __typename
    ... on GithubCapabilityIssued { capability id expiresAt }
    ... on OperationError { code message field }
  }
}
"""

REVOKE_CAPABILITY = """
mutation RevokeCapability($id: ID!) {
  revokeGithubCapability(id: $id) {
    __typename
    ... on RevokeGithubCapabilitySuccess { id alreadyRevoked }
    ... on OperationError { code message field }
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

# Anything shaped like a GitHub token, a GitHub capability or a JWT; scanned for in logs
# and files.
SECRET_PATTERN = re.compile(
    r"(?:gh[pousr]_|github_pat_|ghvcap_)[A-Za-z0-9_]{20,}"
    r"|eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}"
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


def run_piccolo(
    *args: str, database_url: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`piccolo ...` from the project root, as an operator runs it."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PICCOLO_CONF": "piccolo_conf",
        **(extra_env or {}),
    }
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
    engine: Engine[Any]
    url: str
    sqlite_path: Path | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"

    @property
    def sqlite_file(self) -> Path:
        """The database file, for SQLite-only tests."""
        assert self.sqlite_path is not None, "not a SQLite database"
        return self.sqlite_path

    @property
    def sqlite_engine(self) -> PooledSQLiteEngine:
        """The pool itself, for SQLite-only tests."""
        assert isinstance(self.engine, PooledSQLiteEngine), "not a SQLite database"
        return self.engine

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
# For refreshes that must not time out: a refresh GitHub answered after the client
# gave up would spend the refresh token without the row learning the new one, and a
# loaded CI machine is slow.
PATIENT_GITHUB_TIMEOUT_SECONDS = 10.0


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


# ---------------------------------------------------------------- token statistics

MICROSECOND = timedelta(microseconds=1)


def hour_start(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def boundary_instants(rows: list[dict[str, Any]], window: timedelta) -> set[datetime]:
    """Instants where some row changes state or dueness, a microsecond either side of
    them, and the starts of their hours (where the kept counts change buckets)."""
    edges = set()
    for row in rows:
        access, refresh = row["access_token_expires_at"], row["refresh_token_expires_at"]
        edges |= {value for value in (access, refresh) if value is not None}
        if refresh is not None:
            edges.add(refresh - window)
    edges |= {hour_start(edge) for edge in edges}
    return {edge + step * MICROSECOND for edge in edges for step in (-1, 0, 1)}


# Each expiry is NULL, on an hour boundary (T0 is one), inside an hour with
# microseconds, or exactly where the sweep's window starts; some refresh tokens
# expire before their access token.
_ACCESS_EXPIRIES = (
    None,
    T0 - timedelta(hours=1),
    T0,
    T0 + timedelta(minutes=25, microseconds=1),
    T0 + timedelta(hours=8),
)
_REFRESH_EXPIRIES = (
    None,
    T0 - timedelta(hours=2),
    T0 + timedelta(minutes=10),
    T0 + DEFAULT_WINDOW,
    T0 + DEFAULT_WINDOW + timedelta(minutes=30, microseconds=1),
    T0 + timedelta(days=180),
)


async def insert_varied_tokens() -> int:
    """Tokens of every combination of app type, revocation, expiries and refresh token
    presence (users `varied000`...); returns how many."""
    combinations = itertools.product(
        AppType, (None, T0 - timedelta(hours=1)), _ACCESS_EXPIRIES, (False, True), _REFRESH_EXPIRIES
    )
    users, tokens = [], []
    for index, (app_type, revoked, access, has_refresh, refresh) in enumerate(combinations):
        user_id = f"varied{index:03}"
        users.append(User(id=user_id))
        tokens.append(
            Token(
                user_id=user_id,
                github_app_type=app_type.value,
                github_user_id=str(10_000 + index),
                github_login=f"login{index}",
                access_token_encrypted="v1:opaque",
                access_token_expires_at=access,
                refresh_token_encrypted="v1:opaque" if has_refresh else None,
                refresh_token_expires_at=refresh,
                revoked_at=revoked,
            )
        )
    await User.insert(*users)
    await Token.insert(*tokens)
    return len(tokens)


async def assert_stats_agree_with_rows(instants: set[datetime] | None = None) -> int:
    """githubTokenStats at each instant equals `derive_state` and `is_due` applied to every
    stored row in Python; by default at every boundary instant of the rows. Returns how
    many instants were checked."""
    rows = await Token.select(*STATUS_COLUMNS, Token.refresh_token_encrypted)
    if instants is None:
        instants = boundary_instants(rows, DEFAULT_WINDOW) | {T0}
    for now in sorted(instants):
        stats = await token_stats(now)
        expected = dict.fromkeys(
            ((state, app_type) for state in STORED_STATES for app_type in AppType), 0
        )
        for row in rows:
            status = status_from_row(row, now)
            expected[status.state, status.app_type] += 1
        counted = {(item.state, item.app_type): item.count for item in stats.by_state}
        assert counted == expected, now
        due = sum(is_due(row, now, DEFAULT_WINDOW) for row in rows)
        assert stats.due_for_refresh == due, now
    return len(instants)


# ---------------------------------------------------------------- GitHub capabilities


async def issue_capability(gql: GraphQLClient, user_id: str = "alice", **fields: Any) -> str:
    """A capability for the user's stored token, issued as SERVICE; the ghvcap_ text."""
    variables = {"input": {"userId": user_id, **fields}}
    result = (await gql.data(ISSUE_CAPABILITY, variables, auth=SERVICE))["issueGithubCapability"]
    assert result["__typename"] == "GithubCapabilityIssued", result
    capability: str = result["capability"]
    return capability


async def store_live_token(
    gql: GraphQLClient,
    fake: FakeGitHub,
    now: datetime,
    *,
    user_id: str = "alice",
    github_id: str = "583231",
    login: str = "octocat",
    expires_in: timedelta = timedelta(hours=8),
) -> str:
    """Store a grant the fake GitHub holds live (through STORE, as SERVICE); its access token."""
    access, refresh = fake.seed_token(STANDARD_APP.client_id, int(github_id), login)
    variables = store_input(
        user_id,
        now=now,
        github_user_id=github_id,
        github_login=login,
        access=access,
        refresh=refresh,
    )
    variables["input"]["accessTokenExpiresAt"] = (now + expires_in).isoformat()
    result = await gql.data(STORE, variables, auth=SERVICE)
    assert result["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess", result
    return access


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago), for "unreachable"."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
