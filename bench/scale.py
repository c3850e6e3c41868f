"""Latency of every query at 1,000 rows and at `--scale N` rows, and its growth.

`python -m bench.bench --scale N` runs this instead of the throughput
scenarios. Per engine: a database is migrated and 1,000 users' tokens are
stored through the domain (validated, encrypted, audited: real formats), a
mix of states (active, expired, refresh-expired, revoked through the API,
one in seven users with a second, LITE token). Every operation is timed
with sequential requests over HTTP (the median of `--repeat`); then the
tables are grown to N tokens (and as many users and audit events) by bulk
SQL copies of those rows, with new ids, logins and GitHub ids and earlier
timestamps, and every operation is timed again. The server is the
production profile with INFO logs, and its peak RSS is reported.
"""

# ruff: noqa: S608 -- the growth SQL is built from constants and an integer count

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from server.auth import Principal
from server.clock import utc_now
from server.crypto import Keyring
from server.domain.enums import AppType, Role
from server.domain.errors import Refusal
from server.domain.tokens import StoreTokenInput, revoke_token, store_token
from server.storage import engines
from tests.helpers import access_token, bearer, refresh_token

BASE_USERS = 1_000
SEED_ACTOR = Principal(id="bench-seed", role=Role.ADMIN)
SEED_CONCURRENCY = 8

LIST = """
query List($filter: GithubTokenFilter, $first: Int!, $after: String) {
  githubTokens(filter: $filter, first: $first, after: $after) {
    edges { node { userId state githubLogin } } pageInfo { hasNextPage endCursor }
  }
}
"""
AUDIT = """
query Audit($userId: ID, $action: AuditAction, $first: Int!, $after: String) {
  auditEvents(userId: $userId, action: $action, first: $first, after: $after) {
    edges { node { id action } } pageInfo { hasNextPage endCursor }
  }
}
"""
STATUS = "query Status { viewer { githubToken { state } } }"
PURGE = """
mutation Purge($userId: ID!) {
  purgeUser(userId: $userId) { __typename ... on OperationError { code message } }
}
"""
STORE = """
mutation Store($input: StoreGithubTokenInput!) {
  storeGithubToken(input: $input) { __typename ... on OperationError { code message } }
}
"""
CHECKOUT = """
mutation Checkout($userId: ID!) {
  checkoutGithubToken(userId: $userId) {
    __typename ... on OperationError { code message }
  }
}
"""


def user_id(index: int, copy: int = 0) -> str:
    base = f"scale-{index:04d}"
    return base if copy == 0 else f"{base}~{copy}"


def login(index: int, copy: int = 0) -> str:
    return f"Scale{index}" if copy == 0 else f"Scale{index}-{copy}"


def seed_tokens(now: datetime) -> list[StoreTokenInput]:
    """1,000 users: mostly active, 1 in 10 expired, 1 in 50 refresh-expired, some LITE."""
    tokens = []
    for index in range(BASE_USERS):
        access_expiry = now + timedelta(hours=8)
        refresh_expiry = now + timedelta(days=180)
        if index % 10 == 3:
            access_expiry = now - timedelta(hours=1)
        if index % 50 == 7:
            access_expiry = now - timedelta(hours=1)
            refresh_expiry = now - timedelta(days=1)
        app_types = [AppType.STANDARD] + ([AppType.LITE] if index % 7 == 1 else [])
        for app_type in app_types:
            lite = app_type is AppType.LITE
            tokens.append(
                StoreTokenInput(
                    user_id=user_id(index),
                    app_type=app_type,
                    github_user_id=str(3_000_000 + index + (500_000 if lite else 0)),
                    github_login=login(index),
                    access_token=access_token(),
                    access_token_expires_at=access_expiry,
                    refresh_token=refresh_token(),
                    refresh_token_expires_at=refresh_expiry,
                )
            )
    return tokens


def revoked_indexes() -> list[int]:
    return [index for index in range(BASE_USERS) if index % 25 == 5]


async def store_through_domain(keyring: Keyring, tokens: Sequence[StoreTokenInput]) -> None:
    """Store `tokens` with `store_token` (validated, encrypted, audited), 8 at a time."""
    semaphore = asyncio.Semaphore(SEED_CONCURRENCY)

    async def store(data: StoreTokenInput) -> None:
        async with semaphore:
            result = await store_token(SEED_ACTOR, data, keyring=keyring, now=utc_now())
        if isinstance(result, Refusal):
            raise RuntimeError(f"seeding {data.user_id} failed: {result.message}")

    await asyncio.gather(*(store(data) for data in tokens))


async def seed(engine: Any, keyring: Keyring) -> None:
    """Store the base rows through the domain; revoke 1 in 25 through it too."""
    async with engines.serving(engine):
        await store_through_domain(keyring, seed_tokens(utc_now()))
        for index in revoked_indexes():
            await revoke_token(
                SEED_ACTOR, user_id=user_id(index), app_type=AppType.STANDARD, now=utc_now()
            )
        if engines.is_sqlite(engine):
            await engine.run_ddl("PRAGMA wal_checkpoint(TRUNCATE)")


# ---------------------------------------------------------------- growing by SQL copies

_SQLITE_COPIES = (
    "WITH RECURSIVE copies(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM copies WHERE n < {copies}) "
)
_SQLITE_UUID = (
    "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || "
    "substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-' || "
    "hex(randomblob(6)))"
)


def _sqlite_earlier(column: str) -> str:
    # The format Piccolo writes (str() of a UTC datetime), n seconds earlier.
    return f"strftime('%Y-%m-%d %H:%M:%f', {column}, '-' || n || ' seconds') || '000+00:00'"


def sqlite_growth(copies: int) -> list[str]:
    with_copies = _SQLITE_COPIES.format(copies=copies)
    return [
        with_copies + "INSERT INTO users (id, email, display_name, created_at, purged_at) "
        "SELECT id || '~' || n, email, display_name, " + _sqlite_earlier("created_at") + ", "
        "purged_at FROM users, copies WHERE id NOT LIKE '%~%'",
        with_copies + "INSERT INTO user_github_app_tokens (id, user_id, github_app_type, "
        "github_user_id, github_login, github_email, access_token_encrypted, "
        "access_token_expires_at, refresh_token_encrypted, refresh_token_expires_at, "
        "credential_version, revoked_at, revocation_reason, last_used_at, last_refreshed_at, "
        "created_at, updated_at) SELECT " + _SQLITE_UUID + ", user_id || '~' || n, "
        "github_app_type, CAST(CAST(github_user_id AS INTEGER) + n * 10000000 AS TEXT), "
        "github_login || '-' || n, github_email, access_token_encrypted, "
        "access_token_expires_at, refresh_token_encrypted, refresh_token_expires_at, "
        "credential_version, revoked_at, revocation_reason, last_used_at, last_refreshed_at, "
        + _sqlite_earlier("created_at")
        + ", updated_at FROM user_github_app_tokens, copies WHERE user_id NOT LIKE '%~%'",
        with_copies + "INSERT INTO audit_events (occurred_at, action, actor_role, actor_id, "
        "subject_user_id, github_app_type, detail) SELECT " + _sqlite_earlier("occurred_at") + ", "
        "action, actor_role, actor_id, subject_user_id || '~' || n, github_app_type, detail "
        "FROM audit_events, copies WHERE subject_user_id NOT LIKE '%~%'",
        "ANALYZE",
    ]


def postgres_growth(copies: int) -> list[str]:
    series = f"generate_series(1, {copies}) AS n"
    return [
        "INSERT INTO users (id, email, display_name, created_at, purged_at) "
        "SELECT id || '~' || n, email, display_name, created_at - n * interval '1 second', "
        f"purged_at FROM users, {series} WHERE id NOT LIKE '%~%'",
        "INSERT INTO user_github_app_tokens (id, user_id, github_app_type, github_user_id, "
        "github_login, github_email, access_token_encrypted, access_token_expires_at, "
        "refresh_token_encrypted, refresh_token_expires_at, credential_version, revoked_at, "
        "revocation_reason, last_used_at, last_refreshed_at, created_at, updated_at) "
        "SELECT gen_random_uuid(), user_id || '~' || n, github_app_type, "
        "(github_user_id::bigint + n::bigint * 10000000)::text, github_login || '-' || n, "
        "github_email, "
        "access_token_encrypted, access_token_expires_at, refresh_token_encrypted, "
        "refresh_token_expires_at, credential_version, revoked_at, revocation_reason, "
        "last_used_at, last_refreshed_at, created_at - n * interval '1 second', updated_at "
        f"FROM user_github_app_tokens, {series} WHERE user_id NOT LIKE '%~%'",
        "INSERT INTO audit_events (occurred_at, action, actor_role, actor_id, subject_user_id, "
        "github_app_type, detail) SELECT occurred_at - n * interval '1 second', action, "
        "actor_role, actor_id, subject_user_id || '~' || n, github_app_type, detail "
        f"FROM audit_events, {series} WHERE subject_user_id NOT LIKE '%~%'",
        "VACUUM ANALYZE",
    ]


async def grow(database_url: str, copies: int) -> None:
    if database_url.startswith("sqlite:///"):

        def run() -> None:
            connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
            try:
                connection.execute("PRAGMA busy_timeout = 60000")
                # Random UUID keys touch pages all over the indexes: keep them in memory.
                connection.execute("PRAGMA cache_size = -262144")
                for statement in sqlite_growth(copies):
                    connection.execute(statement)
                    connection.commit()
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.close()

        await asyncio.to_thread(run)
        return
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        for statement in postgres_growth(copies):
            await connection.execute(statement, timeout=None)
    finally:
        await connection.close()


# ---------------------------------------------------------------- operations


@dataclass
class Operation:
    name: str
    request: Callable[[int, int], tuple[str, dict[str, Any], str]]  # (repeat, copies) -> call


def _gql(query: str, variables: dict[str, Any], auth: str) -> tuple[str, dict[str, Any], str]:
    return query, variables, auth


class Scale:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.admin = bearer("scale-admin", Role.ADMIN)
        self.service = bearer("scale-service", Role.SERVICE)
        self.users: dict[str, str] = {}
        self.cursors: dict[str, str] = {}
        self.phase = 0

    def user_auth(self, user: str) -> str:
        if user not in self.users:
            self.users[user] = bearer(user, Role.USER, ttl=timedelta(hours=2))
        return self.users[user]

    def any_user(self, copies: int) -> tuple[int, int]:
        """(index, copy) of an existing user that is neither revoked nor purged."""
        while True:
            index = self.rng.randrange(BASE_USERS)
            if index % 25 != 5 and index < BASE_USERS - 200:
                return index, self.rng.randrange(copies + 1)

    def operations(self) -> list[Operation]:
        def listing(filter_: dict[str, Any] | None) -> Callable[[int, int], Any]:
            return lambda repeat, copies: _gql(LIST, {"filter": filter_, "first": 20}, self.admin)

        def by_login(repeat: int, copies: int) -> Any:
            index, copy = self.any_user(copies)
            return _gql(
                LIST,
                {"filter": {"githubLogin": login(index, copy).upper()}, "first": 20},
                self.admin,
            )

        def by_github_user(repeat: int, copies: int) -> Any:
            index, copy = self.any_user(copies)
            github_id = str(3_000_000 + index + copy * 10_000_000)
            return _gql(LIST, {"filter": {"githubUserId": github_id}, "first": 20}, self.admin)

        def next_page(name: str, query: str) -> Callable[[int, int], Any]:
            return lambda repeat, copies: _gql(
                query, {"first": 20, "after": self.cursors[name]}, self.admin
            )

        def audit(**variables: Any) -> Callable[[int, int], Any]:
            return lambda repeat, copies: _gql(AUDIT, {"first": 20, **variables}, self.admin)

        def audit_by_user(repeat: int, copies: int) -> Any:
            index, copy = self.any_user(copies)
            return _gql(AUDIT, {"first": 20, "userId": user_id(index, copy)}, self.admin)

        def status(repeat: int, copies: int) -> Any:
            index, copy = self.any_user(copies)
            return _gql(STATUS, {}, self.user_auth(user_id(index, copy)))

        def purge(repeat: int, copies: int) -> Any:
            # The last 200 base users (and their copies) are the ones purged.
            index = BASE_USERS - 200 + self.phase * 100 + repeat
            return _gql(PURGE, {"userId": user_id(index, copies)}, self.admin)

        def store(repeat: int, copies: int) -> Any:
            number = 9_000_000 + self.phase * 1000 + repeat
            return _gql(
                STORE,
                {
                    "input": {
                        "userId": f"scale-new-{number}",
                        "appType": "STANDARD",
                        "githubUserId": str(number),
                        "githubLogin": f"new{number}",
                        "accessToken": access_token(),
                        "accessTokenExpiresAt": (utc_now() + timedelta(hours=8)).isoformat(),
                        "refreshToken": refresh_token(),
                        "refreshTokenExpiresAt": (utc_now() + timedelta(days=180)).isoformat(),
                    }
                },
                self.service,
            )

        def checkout(repeat: int, copies: int) -> Any:
            # Fresh tokens of base users (a copy's ciphertext is bound to the row it
            # was made for, so only the originals decrypt), never checked out before.
            index = 100 + self.phase * 300 + repeat * 3
            index += 1 if index % 10 == 3 or index % 50 == 7 or index % 25 == 5 else 0
            return _gql(CHECKOUT, {"userId": user_id(index)}, self.service)

        return [
            Operation("status read (viewer.githubToken)", status),
            Operation("githubTokens(first: 20)", listing(None)),
            Operation("githubTokens, next page", next_page("tokens", LIST)),
            Operation("githubTokens(state: ACTIVE)", listing({"state": "ACTIVE"})),
            Operation("githubTokens(state: EXPIRED)", listing({"state": "EXPIRED"})),
            Operation(
                "githubTokens(state: REFRESH_EXPIRED)", listing({"state": "REFRESH_EXPIRED"})
            ),
            Operation("githubTokens(state: REVOKED)", listing({"state": "REVOKED"})),
            Operation("githubTokens(appType: LITE)", listing({"appType": "LITE"})),
            Operation(
                "githubTokens(appType: LITE, state: EXPIRED)",
                listing({"appType": "LITE", "state": "EXPIRED"}),
            ),
            Operation("githubTokens(githubLogin: ...)", by_login),
            Operation("githubTokens(githubUserId: ...)", by_github_user),
            Operation("auditEvents(first: 20)", audit()),
            Operation("auditEvents, next page", next_page("audit", AUDIT)),
            Operation("auditEvents(userId: ...)", audit_by_user),
            Operation("auditEvents(action: TOKEN_REVOKED)", audit(action="TOKEN_REVOKED")),
            Operation("purgeUser", purge),
            Operation("storeGithubToken (new user)", store),
            Operation("checkoutGithubToken (fresh token)", checkout),
        ]


async def post(
    session: aiohttp.ClientSession, base_url: str, call: tuple[str, dict[str, Any], str]
) -> tuple[float, dict[str, Any]]:
    query, variables, auth = call
    started = time.perf_counter()
    async with session.post(
        base_url + "/graphql",
        data=json.dumps({"query": query, "variables": variables}),
        headers={"Authorization": auth, "Content-Type": "application/json"},
    ) as response:
        body = await response.json()
    elapsed = time.perf_counter() - started
    if response.status != 200 or body.get("errors"):
        raise RuntimeError(f"{query.split()[1]} failed: HTTP {response.status} {body}")
    return elapsed, body["data"]


def _problem(data: dict[str, Any]) -> str | None:
    for value in data.values():
        if isinstance(value, dict) and value.get("__typename") == "OperationError":
            return f"{value.get('code')}: {value.get('message')}"
    return None


async def measure(
    scale: Scale, session: aiohttp.ClientSession, base_url: str, copies: int, repeat: int
) -> dict[str, float]:
    """Median milliseconds of each operation (sequential requests)."""
    _, first = await post(session, base_url, _gql(LIST, {"first": 20}, scale.admin))
    scale.cursors["tokens"] = first["githubTokens"]["pageInfo"]["endCursor"]
    _, first = await post(session, base_url, _gql(AUDIT, {"first": 20}, scale.admin))
    scale.cursors["audit"] = first["auditEvents"]["pageInfo"]["endCursor"]
    medians = {}
    for operation in scale.operations():
        # One untimed request first: the server's first use of a query path.
        await post(session, base_url, operation.request(repeat, copies))
        timings = []
        for attempt in range(repeat):
            elapsed, data = await post(session, base_url, operation.request(attempt, copies))
            problem = _problem(data)
            if problem:
                raise RuntimeError(f"{operation.name}: {problem}")
            timings.append(elapsed * 1000)
        medians[operation.name] = statistics.median(timings)
    scale.phase += 1
    return medians


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class ScaleResult:
    engine: str
    rows: int
    at_base: dict[str, float]
    at_scale: dict[str, float]
    grow_seconds: float
    peak_rss_mb: float | None


def format_results(results: Sequence[ScaleResult]) -> str:
    lines = []
    for result in results:
        lines.append(
            f"{result.engine}: medians of sequential requests, 1k vs {result.rows:,} tokens "
            f"(grown in {result.grow_seconds:.0f} s); server peak RSS "
            + (f"{result.peak_rss_mb:.0f} MB" if result.peak_rss_mb else "unknown")
        )
        width = max(len(name) for name in result.at_base)
        lines.append(f"  {'operation'.ljust(width)}  {'1k ms':>8}  {'N ms':>8}  growth")
        for name, base in result.at_base.items():
            scaled = result.at_scale[name]
            lines.append(f"  {name.ljust(width)}  {base:8.2f}  {scaled:8.2f}  x{scaled / base:.2f}")
        lines.append("")
    return "\n".join(lines)


async def count_tokens(database_url: str) -> int:
    sql = "SELECT COUNT(*) FROM user_github_app_tokens"
    count: int
    if database_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as file:
            (count,) = file.execute(sql).fetchone()
        return count
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        count = await connection.fetchval(sql)
    finally:
        await connection.close()
    return count
