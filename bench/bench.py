"""Throughput and latency of ghvault's hot paths over HTTP, each against a baseline.

Run from the project root::

    .venv/bin/python -m bench.bench [--duration 5] [--concurrency 16] [--users 1000]
                                    [--postgres postgres://user@host/db] [--quick]

Every engine gets its own database, migrated and seeded with `--users` users
holding tokens, and its own ghvault server process (`bench/serve.py`) on
loopback. This process drives the servers with one aiohttp session and a
fixed number of requests in flight, and also serves the fake GitHub
(`tests/fake_github.py`) that refreshes go to. Scenarios:

status
    ``viewer { githubToken { state } }`` as a random user (USER role).
checkout
    ``checkoutGithubToken`` (SERVICE) of a random user whose token needs no
    refresh: decrypt, last_used_at update and audit insert.
refresh
    `--burst` simultaneous checkouts for each of `--refresh-users` users whose
    access token is due for a refresh; GitHub must see exactly one refresh
    per user.
peer
    PostGraphile v4 (`bench/postgraphile.py`, no auth) reading the same
    status columns of a random user's token from the same PostgreSQL
    database; skipped without node and npm.

Engines: Piccolo's stock SQLiteEngine (the baseline), ghvault's pooled SQLite
engine, and PostgreSQL when `--postgres` (or TEST_DATABASE_URL) names a
server: a throwaway database ``ghvault_bench_<random>`` is created there and
dropped at the end. The HTTP floor (GET /healthz) and the status read without
Strawberry's parser and validation caches are measured once, for context.
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import platform
import random
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:  # run as a script: python bench/bench.py
    sys.path.insert(0, str(PROJECT_ROOT))

import aiohttp
import asyncpg
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine

from bench import load, postgraphile
from bench import profile as profiling
from bench import scale as scaling
from bench.serve import STATUS_WITHOUT_GRAPHQL_PATH
from server.clock import utc_now
from server.config import Settings
from server.crypto import Keyring
from server.domain.enums import AppType, Role
from server.domain.tokens import StoreTokenInput
from server.storage import engines
from server.storage.sqlite_pool import PooledSQLiteEngine
from tests.fake_github import STANDARD_APP, FakeGitHub, start_fake_github
from tests.helpers import access_token, base_env, bearer, github_env, migrate, refresh_token

STOCK = "sqlite-stock"
POOLED = "sqlite-pooled"
POSTGRES = "postgres"
POOLED_2 = "sqlite-pooled x2"
POSTGRES_2 = "postgres x2"

PEER_ENGINE = "postgraphile"
SQLITE_CEILING = "sqlite-ceiling"
POSTGRES_CEILING = "postgres-ceiling"
CEILING_OF = {
    POOLED: SQLITE_CEILING,
    POOLED_2: SQLITE_CEILING,
    POSTGRES: POSTGRES_CEILING,
    POSTGRES_2: POSTGRES_CEILING,
}

FLOOR = "http floor (GET /healthz)"
STATUS = "status"
CEILING = "status ceiling (bench/ceiling.py)"
WITHOUT_GRAPHQL = "status without GraphQL (bench/serve.py)"
PEER = "status peer (PostGraphile v4)"
STATUS_UNCACHED = "status, no parse/validation cache"
CHECKOUT = "checkout"
REFRESH = "refresh"
SCENARIOS = (FLOOR, STATUS, WITHOUT_GRAPHQL, CEILING, PEER, STATUS_UNCACHED, CHECKOUT, REFRESH)

STATUS_QUERY = "query Status { viewer { githubToken { state } } }"
CHECKOUT_MUTATION = """
mutation Checkout($userId: ID!) {
  checkoutGithubToken(userId: $userId) {
    __typename
    ... on CheckoutSuccess { accessToken commitAuthor refreshed }
    ... on OperationError { code message }
  }
}
"""

SERVER_START_TIMEOUT_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 60.0
# Too close to expiry for any window: a checkout refreshes it, and it is refreshable after
# it passes too.
NEAR_EXPIRY = timedelta(minutes=1)

# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    concurrency: int
    users: int
    refresh_users: int
    burst: int
    postgres_url: str | None
    seed: int
    load: str  # "wrk" | "python"
    baselines: bool
    profile: Path | None
    scenarios: tuple[str, ...]
    scale: int | None
    repeat: int


DEFAULTS = {
    "duration": 10.0,
    "warmup": 2.0,
    "concurrency": 32,
    "users": 1000,
    "refresh_users": 20,
    "burst": 50,
}
QUICK = {
    "duration": 0.5,
    "warmup": 0.2,
    "concurrency": 4,
    "users": 20,
    "refresh_users": 2,
    "burst": 10,
}


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench",
        description="Throughput and latency of ghvault's hot paths over HTTP.",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds measured per timed scenario (default 10)"
    )
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each (default 2)")
    parser.add_argument("--concurrency", type=int, help="requests in flight (default 32)")
    parser.add_argument("--users", type=int, help="users with stored tokens (default 1000)")
    parser.add_argument(
        "--refresh-users", type=int, help="users refreshed in the refresh scenario (default 20)"
    )
    parser.add_argument(
        "--burst", type=int, help="simultaneous checkouts per refreshed user (default 50)"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=os.environ.get("TEST_DATABASE_URL") or None,
        help="a PostgreSQL server to create a throwaway database on "
        "(default: TEST_DATABASE_URL; PostgreSQL is skipped without either)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the random user choice")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run, to check that everything works"
    )
    parser.add_argument(
        "--load",
        choices=("wrk", "python"),
        default="wrk" if load.available() else "python",
        help="load generator of the timed scenarios (default: wrk when installed)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        metavar="N",
        help="instead of throughput: each query's latency at 1,000 and at N tokens",
    )
    parser.add_argument(
        "--repeat", type=int, default=20, help="requests per operation with --scale (default 20)"
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated scenarios to run: " + ", ".join(SHORT_NAMES) + " (default all)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="record a py-spy profile of each server during the status scenario into DIR",
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="also Piccolo's stock SQLite engine and the status read without GraphQL caches",
    )
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    chosen = {name: getattr(args, name) for name in DEFAULTS}
    values = {name: base[name] if value is None else value for name, value in chosen.items()}
    if values["duration"] <= 0 or values["warmup"] < 0:
        parser.error("--duration must be positive and --warmup not negative")
    if min(values["concurrency"], values["users"], values["refresh_users"], values["burst"]) < 1:
        parser.error("--concurrency, --users, --refresh-users and --burst must be at least 1")
    return Options(
        duration=float(values["duration"]),
        warmup=float(values["warmup"]),
        concurrency=int(values["concurrency"]),
        users=int(values["users"]),
        refresh_users=int(values["refresh_users"]),
        burst=int(values["burst"]),
        postgres_url=args.postgres,
        seed=args.seed,
        load=args.load,
        baselines=args.baselines,
        profile=args.profile,
        scenarios=_chosen_scenarios(parser, args.only),
        scale=args.scale,
        repeat=args.repeat,
    )


SHORT_NAMES = {
    "floor": FLOOR,
    "status": STATUS,
    "ceiling": CEILING,
    "bare": WITHOUT_GRAPHQL,
    "peer": PEER,
    "uncached": STATUS_UNCACHED,
    "checkout": CHECKOUT,
    "refresh": REFRESH,
}


def _chosen_scenarios(parser: argparse.ArgumentParser, only: str | None) -> tuple[str, ...]:
    if not only:
        return SCENARIOS
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHORT_NAMES]
    if unknown:
        parser.error(f"--only: unknown scenario(s) {', '.join(unknown)}")
    return tuple(scenario for scenario in SCENARIOS if scenario in {SHORT_NAMES[n] for n in names})


# ---------------------------------------------------------------- requests and measurement


Check = Callable[[int, Any], str | None]


@dataclass(frozen=True)
class Call:
    """One request and how to judge its response (a problem description, or None)."""

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    check: Check


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds, measured requests only
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class Row:
    scenario: str
    engine: str
    requests: int
    errors: int
    rate: float
    p50: float  # milliseconds
    p95: float
    p99: float
    note: str = ""
    cpu_us: float | None = None  # the server's CPU time per request (all its processes)

    @classmethod
    def of_wrk(
        cls, scenario: str, engine: str, result: load.WrkResult, cpu_seconds: float | None = None
    ) -> Row:
        return cls(
            scenario,
            engine,
            result.requests,
            result.errors,
            result.rate,
            result.p50,
            result.p95,
            result.p99,
            cpu_us=cpu_seconds * 1e6 / result.requests
            if cpu_seconds is not None and result.requests
            else None,
        )

    @classmethod
    def of(cls, scenario: str, engine: str, sample: Sample, note: str = "") -> Row:
        ordered = sorted(sample.latencies)
        p50, p95, p99 = (percentile(ordered, p) * 1000 for p in (50, 95, 99))
        if sample.first_error:
            first_error = f"first error: {sample.first_error}"
            note = f"{note}; {first_error}" if note else first_error
        return cls(
            scenario, engine, sample.requests, sample.errors, sample.rate, p50, p95, p99, note
        )


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


async def send(session: aiohttp.ClientSession, base_url: str, call: Call) -> str | None:
    try:
        async with session.request(
            call.method, base_url + call.path, data=call.body, headers=call.headers
        ) as response:
            status, text = response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        payload = json.loads(text)
    except ValueError:
        return f"HTTP {status}, not JSON: {text[:120]!r}"
    return call.check(status, payload)


async def drive(
    session: aiohttp.ClientSession,
    base_url: str,
    next_call: Callable[[], Call | None],
    *,
    concurrency: int,
    measure_from: float,
) -> Sample:
    """`concurrency` workers send calls until `next_call` returns None.

    Requests started before `measure_from` (a perf_counter time) are the
    warm-up: sent, but neither timed nor counted.
    """
    sample = Sample()
    last_finish = measure_from

    async def worker() -> None:
        nonlocal last_finish
        while (call := next_call()) is not None:
            started = time.perf_counter()
            problem = await send(session, base_url, call)
            finished = time.perf_counter()
            if started < measure_from:
                continue
            sample.latencies.append(finished - started)
            last_finish = max(last_finish, finished)
            if problem is not None:
                sample.errors += 1
                sample.first_error = sample.first_error or problem

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.elapsed = last_finish - measure_from
    return sample


async def drive_for(
    session: aiohttp.ClientSession,
    base_url: str,
    make_call: Callable[[], Call],
    options: Options,
) -> Sample:
    """Warm up for `options.warmup` seconds, then measure for `options.duration`."""
    measure_from = time.perf_counter() + options.warmup
    deadline = measure_from + options.duration

    def next_call() -> Call | None:
        return make_call() if time.perf_counter() < deadline else None

    return await drive(
        session,
        base_url,
        next_call,
        concurrency=options.concurrency,
        measure_from=measure_from,
    )


async def drive_all(
    session: aiohttp.ClientSession, base_url: str, calls: Sequence[Call], *, concurrency: int
) -> Sample:
    """Send every call once, in order, `concurrency` at a time."""
    pending: Iterator[Call] = iter(calls)
    return await drive(
        session,
        base_url,
        lambda: next(pending, None),
        concurrency=concurrency,
        measure_from=time.perf_counter(),
    )


# ---------------------------------------------------------------- the calls


def graphql_call(
    query: str, variables: dict[str, Any], authorization: str | None, check: Check
) -> Call:
    body = json.dumps({"query": query, "variables": variables}).encode()
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return Call("POST", "/graphql", body, headers, check)


def graphql_data(status: int, payload: Any) -> tuple[dict[str, Any], str | None]:
    if status != 200:
        return {}, f"HTTP {status}"
    errors = payload.get("errors")
    if errors:
        return {}, f"GraphQL error: {str(errors[0].get('message'))[:160]}"
    return payload["data"], None


def check_healthz(status: int, payload: Any) -> str | None:
    return None if status == 200 and payload == {"status": "ok"} else f"HTTP {status}"


def check_active(status: int, payload: Any) -> str | None:
    data, problem = graphql_data(status, payload)
    if problem is not None:
        return problem
    state = data["viewer"]["githubToken"]["state"]
    return None if state == "ACTIVE" else f"state {state}, expected ACTIVE"


def check_peer_active(status: int, payload: Any) -> str | None:
    """PostGraphile's answer to `postgraphile.STATUS_QUERY`: one token, in state ACTIVE."""
    data, problem = graphql_data(status, payload)
    if problem is not None:
        return problem
    nodes = data["allUserGithubAppTokens"]["nodes"]
    if len(nodes) != 1:
        return f"{len(nodes)} tokens, expected one"
    token = nodes[0]
    expires = token["accessTokenExpiresAt"]
    if token["revokedAt"] is not None:
        return "token revoked, expected ACTIVE"
    if expires is not None and datetime.fromisoformat(expires) <= utc_now():
        return "access token expired, expected ACTIVE"
    return None


def checkout_result(status: int, payload: Any) -> tuple[bool | None, str | None]:
    """(refreshed, None) for a CheckoutSuccess, else (None, the problem)."""
    data, problem = graphql_data(status, payload)
    if problem is not None:
        return None, problem
    result = data["checkoutGithubToken"]
    if result["__typename"] != "CheckoutSuccess":
        return None, f"{result.get('code')}: {result.get('message')}"
    return bool(result["refreshed"]), None


def check_checkout_without_refresh(status: int, payload: Any) -> str | None:
    refreshed, problem = checkout_result(status, payload)
    if problem is not None:
        return problem
    return "refreshed a token that was not near expiry" if refreshed else None


def refresh_check(user_id: str, refreshed_by_user: Counter[str]) -> Check:
    def check(status: int, payload: Any) -> str | None:
        refreshed, problem = checkout_result(status, payload)
        if refreshed:
            refreshed_by_user[user_id] += 1
        return problem

    return check


# ---------------------------------------------------------------- seed data


def user_id(index: int) -> str:
    return f"user-{index:05d}"


def refresh_user_id(index: int) -> str:
    return f"refresh-{index:04d}"


def steady_tokens(count: int, now: datetime) -> list[StoreTokenInput]:
    """Tokens valid for 8 hours: checkouts hand them out without a refresh."""
    return [
        StoreTokenInput(
            user_id=user_id(index),
            app_type=AppType.STANDARD,
            github_user_id=str(1_000_000 + index),
            github_login=f"user{index}",
            access_token=access_token(),
            access_token_expires_at=now + timedelta(hours=8),
            refresh_token=refresh_token(),
            refresh_token_expires_at=now + timedelta(days=180),
        )
        for index in range(count)
    ]


def near_expiry_tokens(fake: FakeGitHub, count: int, now: datetime) -> list[StoreTokenInput]:
    """Live grants at the fake GitHub whose access tokens are due for a refresh."""
    tokens = []
    for index in range(count):
        github_user_id = 2_000_000 + index
        login = f"refresh{index}"
        access, refresh = fake.seed_token(STANDARD_APP.client_id, github_user_id, login)
        tokens.append(
            StoreTokenInput(
                user_id=refresh_user_id(index),
                app_type=AppType.STANDARD,
                github_user_id=str(github_user_id),
                github_login=login,
                access_token=access,
                access_token_expires_at=now + NEAR_EXPIRY,
                refresh_token=refresh,
                refresh_token_expires_at=now + timedelta(days=180),
            )
        )
    return tokens


async def seed(engine: Engine[Any], keyring: Keyring, tokens: Sequence[StoreTokenInput]) -> None:
    """Store `tokens` through the domain (validated, encrypted, audited)."""
    async with engines.serving(engine):
        await scaling.store_through_domain(keyring, tokens)
        if engines.is_sqlite(engine):
            # Leave nothing in the write-ahead log, so the file can be copied alone.
            await engine.run_ddl("PRAGMA wal_checkpoint(TRUNCATE)")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def settings_env(database_url: str, fake: FakeGitHub) -> dict[str, str]:
    """The server's environment: production profile, GitHub apps on the fake."""
    return base_env(GHVAULT_ENV="production", DATABASE_URL=database_url, **github_env(fake))


# ---------------------------------------------------------------- PostgreSQL


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@asynccontextmanager
async def throwaway_postgres(admin_url: str) -> AsyncIterator[tuple[str, str]]:
    """(url, server version) of a new database on `admin_url`'s server, dropped on exit."""
    name = f"ghvault_bench_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(admin_url, timeout=10)
    try:
        version = await connection.fetchval("SHOW server_version")
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    try:
        yield with_database(admin_url, name), str(version)
    finally:
        connection = await asyncpg.connect(admin_url, timeout=10)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


# ---------------------------------------------------------------- the server process


@dataclass(frozen=True)
class Target:
    """A server configuration under test and the scenarios it runs."""

    engine: str  # the label in the results
    database_url: str
    serve_args: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = (STATUS, CHECKOUT, REFRESH)
    module: str = "bench.serve"
    optional: bool = False  # a peer: skipped, not a failure, when it does not start
    fact: tuple[str, str] | None = None  # (name, version) for the report, once it runs


# Process id of each running server, by its label in the results (for profiles).
SERVER_PIDS: dict[str, int] = {}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) used so far by `pid` and every live process under it.

    A server's workers and PostGraphile's Node process are children of the
    process the benchmark started. None where /proc cannot tell (not Linux).
    """
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # After the command name (in parentheses, may hold spaces): state, ppid, ...
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    if pid not in stats:
        return None
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += stats[current][1]
        pending.extend(children.get(current, ()))
    return total


@asynccontextmanager
async def running_server(target: Target, env: dict[str, str], log_path: Path) -> AsyncIterator[str]:
    """Start `target.module` for `target`; yield its base URL; stop it on exit.

    The server's logs (INFO, as `ghvault serve` writes them) go to `log_path`.
    """
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            target.module,
            *target.serve_args,
            cwd=PROJECT_ROOT,
            env={"PATH": os.environ.get("PATH", ""), **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), SERVER_START_TIMEOUT_SECONDS)
        if not line.startswith(b"listening "):
            code = await process.wait()
            raise RuntimeError(f"the {target.engine} server did not start (exit code {code})")
        SERVER_PIDS[target.engine] = process.pid
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


# ---------------------------------------------------------------- scenarios


@dataclass
class Bench:
    options: Options
    fake: FakeGitHub
    rng: random.Random
    service_auth: str = field(default_factory=lambda: bearer("commit-worker", Role.SERVICE))
    user_auth: dict[str, str] = field(default_factory=dict)

    def authorization(self, user: str) -> str:
        if user not in self.user_auth:
            self.user_auth[user] = bearer(user, Role.USER)
        return self.user_auth[user]

    async def run_scenario(
        self, scenario: str, engine: str, session: aiohttp.ClientSession, base_url: str
    ) -> Row:
        if scenario == FLOOR:
            call = Call("GET", "/healthz", None, {}, check_healthz)
            if self.options.load == "wrk":
                return await self.wrk(scenario, engine, base_url, [call], expect='"ok"')
            sample = await drive_for(session, base_url, lambda: call, self.options)
            return Row.of(scenario, engine, sample)
        if scenario in (STATUS, STATUS_UNCACHED, CEILING, WITHOUT_GRAPHQL):
            return await self.status(scenario, engine, session, base_url)
        if scenario == PEER:
            return await self.peer(engine, session, base_url)
        if scenario == CHECKOUT:
            return await self.checkout(engine, session, base_url)
        if scenario == REFRESH:
            return await self.refresh(engine, session, base_url)
        raise ValueError(f"unknown scenario {scenario!r}")

    async def status(
        self, scenario: str, engine: str, session: aiohttp.ClientSession, base_url: str
    ) -> Row:
        calls = [
            graphql_call(STATUS_QUERY, {}, self.authorization(user_id(index)), check_active)
            for index in range(self.options.users)
        ]
        if scenario == WITHOUT_GRAPHQL:
            calls = [dataclasses.replace(call, path=STATUS_WITHOUT_GRAPHQL_PATH) for call in calls]
        # A user's first status read in a process also creates the user row (a write):
        # read once as every user first, so the measurement is of steady-state reads.
        await drive_all(session, base_url, calls, concurrency=self.options.concurrency)
        if self.options.load == "wrk":
            return await self.wrk(scenario, engine, base_url, calls, expect='"ACTIVE"')
        sample = await drive_for(session, base_url, lambda: self.rng.choice(calls), self.options)
        return Row.of(scenario, engine, sample)

    async def peer(self, engine: str, session: aiohttp.ClientSession, base_url: str) -> Row:
        """The status scenario's load on PostGraphile: no JWT, its own query."""
        calls = [
            graphql_call(
                postgraphile.STATUS_QUERY, {"userId": user_id(index)}, None, check_peer_active
            )
            for index in range(self.options.users)
        ]
        if self.options.load == "wrk":
            return await self.wrk(PEER, engine, base_url, calls, expect=postgraphile.EXPECTED)
        sample = await drive_for(session, base_url, lambda: self.rng.choice(calls), self.options)
        return Row.of(PEER, engine, sample)

    async def wrk(
        self, scenario: str, engine: str, base_url: str, calls: Sequence[Call], *, expect: str
    ) -> Row:
        """Warm up, then measure, with wrk picking one of `calls` at random per request."""
        requests = [
            load.Request(
                call.method,
                call.path,
                call.headers,
                call.body.decode() if call.body is not None else None,
            )
            for call in calls
        ]

        def measure(duration: float) -> load.WrkResult:
            return load.run(
                base_url,
                requests,
                expect=expect,
                duration=duration,
                connections=self.options.concurrency,
                seed=self.options.seed,
            )

        if self.options.warmup > 0:
            await asyncio.to_thread(measure, self.options.warmup)
        pid = SERVER_PIDS.get(engine)
        cpu_before = cpu_seconds(pid) if pid else None
        measured = asyncio.create_task(asyncio.to_thread(measure, self.options.duration))
        if self.options.profile and scenario in (STATUS, CHECKOUT) and pid:
            await self.profile(f"{scenario}-{engine}", pid)
        result = await measured
        cpu_after = cpu_seconds(pid) if pid else None
        used = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        return Row.of_wrk(scenario, engine, result, used)

    async def profile(self, name: str, pid: int) -> None:
        """Sample the server for most of the measured time; print the inclusive shares."""
        assert self.options.profile is not None
        self.options.profile.mkdir(parents=True, exist_ok=True)
        raw = self.options.profile / f"{name}.txt"
        await profiling.record(pid, max(1.0, self.options.duration - 2), raw)
        print(profiling.format_summary(name, profiling.summary(raw)), file=sys.stderr)

    async def checkout(self, engine: str, session: aiohttp.ClientSession, base_url: str) -> Row:
        calls = [
            graphql_call(
                CHECKOUT_MUTATION,
                {"userId": user_id(index)},
                self.service_auth,
                check_checkout_without_refresh,
            )
            for index in range(self.options.users)
        ]
        if self.options.load == "wrk":
            return await self.wrk(CHECKOUT, engine, base_url, calls, expect="CheckoutSuccess")
        sample = await drive_for(session, base_url, lambda: self.rng.choice(calls), self.options)
        return Row.of(CHECKOUT, engine, sample)

    async def refresh(self, engine: str, session: aiohttp.ClientSession, base_url: str) -> Row:
        users = [refresh_user_id(index) for index in range(self.options.refresh_users)]
        refreshed_by_user: Counter[str] = Counter()
        # User by user, `burst` checkouts each; `burst` requests are in flight throughout.
        calls = [
            graphql_call(
                CHECKOUT_MUTATION,
                {"userId": user},
                self.service_auth,
                refresh_check(user, refreshed_by_user),
            )
            for user in users
            for _ in range(self.options.burst)
        ]
        before = self.fake.calls["refresh"]
        sample = await drive_all(session, base_url, calls, concurrency=self.options.burst)
        at_github = self.fake.calls["refresh"] - before
        one_each = at_github == len(users) and all(refreshed_by_user[u] == 1 for u in users)
        verdict = "exactly one per user" if one_each else "NOT exactly one per user"
        per_second = len(users) / sample.elapsed if sample.elapsed > 0 else 0.0
        note = (
            f"{len(users)} users x {self.options.burst} checkouts: "
            f"{per_second:.1f} refreshes/s; GitHub saw {at_github} refreshes ({verdict})"
        )
        return Row.of(REFRESH, engine, sample, note)


def progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


async def prepare_sqlite(
    directory: Path, fake: FakeGitHub, keyring: Keyring, options: Options
) -> list[Target]:
    """One database file per SQLite target, copied from one migrated, seeded template."""
    template = directory / "template.sqlite"
    progress(f"migrating and seeding SQLite with {options.users} users")
    await asyncio.to_thread(migrate, sqlite_url(template))
    await seed(PooledSQLiteEngine(str(template)), keyring, steady_tokens(options.users, utc_now()))
    targets = []
    configurations = [
        ("pooled", POOLED, (), (FLOOR, STATUS, WITHOUT_GRAPHQL, CHECKOUT, REFRESH)),
        ("pooled-2", POOLED_2, ("--workers", "2"), (STATUS,)),
    ]
    if options.baselines:
        configurations += [
            ("stock", STOCK, ("--engine", "piccolo-sqlite"), (STATUS, CHECKOUT, REFRESH)),
            ("uncached", POOLED, ("--no-graphql-caches",), (STATUS_UNCACHED,)),
        ]
    for name, engine, serve_args, scenarios in configurations:
        path = directory / f"{name}.sqlite"
        shutil.copyfile(template, path)
        if REFRESH in scenarios:
            refreshing = near_expiry_tokens(fake, options.refresh_users, utc_now())
            await seed(PooledSQLiteEngine(str(path)), keyring, refreshing)
        targets.append(Target(engine, sqlite_url(path), serve_args, scenarios))
        if engine == POOLED and not serve_args:
            # The ceiling reads the same file, with the driver alone.
            targets.append(
                Target(SQLITE_CEILING, sqlite_url(path), (), (CEILING,), module="bench.ceiling")
            )
    return targets


async def prepare_postgres(
    url: str, fake: FakeGitHub, keyring: Keyring, options: Options
) -> list[Target]:
    progress(f"migrating and seeding PostgreSQL with {options.users} users")
    await asyncio.to_thread(migrate, url)
    now = utc_now()
    tokens = steady_tokens(options.users, now) + near_expiry_tokens(
        fake, options.refresh_users, now
    )
    await seed(PostgresEngine(config={"dsn": url}), keyring, tokens)
    return [
        Target(POSTGRES, url, (), (STATUS, WITHOUT_GRAPHQL, CHECKOUT, REFRESH)),
        Target(POSTGRES_2, url, ("--workers", "2"), (STATUS,)),
        Target(POSTGRES_CEILING, url, (), (CEILING,), module="bench.ceiling"),
    ]


async def prepare_peer(url: str) -> list[Target]:
    """PostGraphile on the PostgreSQL database, installed on first use; none without node."""
    try:
        installed = await asyncio.to_thread(postgraphile.install, progress)
    except (postgraphile.Unavailable, OSError) as exc:
        progress(f"PostGraphile peer skipped: {exc}")
        return []
    peer = Target(
        PEER_ENGINE,
        url,
        (str(installed.cli),),
        (PEER,),
        module="bench.postgraphile",
        optional=True,
        fact=("PostGraphile", installed.description),
    )
    return [peer]


async def run(options: Options, facts: dict[str, str]) -> list[Row]:
    """Prepare every database, start every server, then run the scenarios.

    Each scenario runs on one engine after the other, so a baseline and the
    engines compared with it are measured minutes apart at most; the idle
    servers wait meanwhile.
    """
    keyring = Settings.from_env(base_env()).keyring
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(start_fake_github())
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ghvault-bench-")))
        targets = await prepare_sqlite(directory, fake, keyring, options)
        if options.postgres_url:
            url, version = await stack.enter_async_context(throwaway_postgres(options.postgres_url))
            facts["PostgreSQL"] = version
            targets += await prepare_postgres(url, fake, keyring, options)
            if PEER in options.scenarios:
                targets += await prepare_peer(url)
        elif PEER in options.scenarios:
            progress("PostGraphile peer skipped: it needs --postgres (or TEST_DATABASE_URL)")
        log_path = directory / "servers.log"
        started = []
        for target in targets:
            server = running_server(target, settings_env(target.database_url, fake), log_path)
            try:
                started.append((target, await stack.enter_async_context(server)))
            except (RuntimeError, TimeoutError) as exc:
                if not target.optional:
                    raise
                reason = str(exc) or f"no answer within {SERVER_START_TIMEOUT_SECONDS:g} s"
                progress(f"{target.engine} skipped: {reason}")
                continue
            if target.fact:
                facts[target.fact[0]] = target.fact[1]
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            )
        )
        bench = Bench(options, fake, random.Random(options.seed))  # noqa: S311 -- not for secrets
        rows = []
        for scenario in options.scenarios:
            for target, base_url in started:
                if scenario in target.scenarios:
                    progress(f"{scenario} on {target.engine}")
                    rows.append(
                        await bench.run_scenario(scenario, target.engine, session, base_url)
                    )
        return rows


async def run_scale(options: Options, facts: dict[str, str]) -> list[scaling.ScaleResult]:
    """Each engine in turn: seed 1,000 users, time every query, grow to N, time again."""
    assert options.scale is not None
    keyring = Settings.from_env(base_env()).keyring
    copies = max(1, options.scale // scaling.BASE_USERS - 1)
    results = []
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(start_fake_github())
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ghvault-scale-")))
        targets = [Target(POOLED, sqlite_url(directory / "scale.sqlite"))]
        if options.postgres_url:
            url, version = await stack.enter_async_context(throwaway_postgres(options.postgres_url))
            facts["PostgreSQL"] = version
            targets.append(Target(POSTGRES, url))
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS))
        )
        for target in targets:
            progress(f"{target.engine}: migrating and seeding {scaling.BASE_USERS} users")
            await asyncio.to_thread(migrate, target.database_url)
            engine: Engine[Any] = (
                PooledSQLiteEngine(target.database_url.removeprefix("sqlite:///"))
                if target.engine == POOLED
                else PostgresEngine(config={"dsn": target.database_url})
            )
            await scaling.seed(engine, keyring)
            env = settings_env(target.database_url, fake)
            async with running_server(target, env, directory / "servers.log") as base_url:
                scale = scaling.Scale(random.Random(options.seed))  # noqa: S311 -- not secrets
                progress(f"{target.engine}: timing every operation at 1k")
                at_base = await scaling.measure(scale, session, base_url, 0, options.repeat)
                progress(f"{target.engine}: growing to {options.scale:,} by SQL copies")
                started = time.perf_counter()
                await scaling.grow(target.database_url, copies)
                grow_seconds = time.perf_counter() - started
                progress(f"{target.engine}: timing every operation at {options.scale:,}")
                at_scale = await scaling.measure(scale, session, base_url, copies, options.repeat)
                rss = scaling.peak_rss_mb(SERVER_PIDS[target.engine])
            rows = await scaling.count_tokens(target.database_url)
            results.append(
                scaling.ScaleResult(target.engine, rows, at_base, at_scale, grow_seconds, rss)
            )
    return results


# ---------------------------------------------------------------- report


def machine_facts() -> dict[str, str]:
    facts = {
        "CPUs": str(os.cpu_count()),
        "platform": platform.platform(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
    }
    cpu_model = _cpu_model()
    if cpu_model:
        facts["CPUs"] += f" ({cpu_model})"
    if hasattr(os, "getloadavg"):
        # Other work on the machine competes with both processes of the benchmark.
        facts["load average at start"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    revision = _revision()
    if revision:
        facts["ghvault"] = revision
    return facts


def _revision() -> str | None:
    """The checked-out commit, marked -dirty when the working tree has changes."""
    try:
        result = subprocess.run(  # noqa: S603 -- a fixed git command
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def library_versions() -> str:
    names = ("aiohttp", "strawberry-graphql", "piccolo", "aiosqlite", "asyncpg")
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)


def format_table(rows: Sequence[Row]) -> str:
    header = (
        "scenario",
        "engine",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "CPU us/req",
    )
    lines = [header] + [
        (
            row.scenario,
            row.engine,
            str(row.requests),
            str(row.errors),
            f"{row.rate:.0f}",
            f"{row.p50:.2f}",
            f"{row.p95:.2f}",
            f"{row.p99:.2f}",
            f"{row.cpu_us:.0f}" if row.cpu_us is not None else "-",
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    numeric = range(2, len(header))

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])


def comparisons(rows: Sequence[Row]) -> list[str]:
    """Each scenario's engines against the stock SQLite baseline; caches against none."""
    by_key = {(row.scenario, row.engine): row for row in rows}
    lines = []
    for scenario in (STATUS, CHECKOUT, REFRESH):
        baseline = by_key.get((scenario, STOCK))
        for engine in (POOLED, POSTGRES):
            row = by_key.get((scenario, engine))
            if baseline and row:
                lines.append(f"{scenario}: {engine} vs {STOCK}: {_versus(row, baseline)}")
    for engine, ceiling_engine in CEILING_OF.items():
        status, ceiling = by_key.get((STATUS, engine)), by_key.get((CEILING, ceiling_engine))
        if status and ceiling and ceiling.rate:
            lines.append(f"status on {engine} / its ceiling: {_ratio(status, ceiling)}")
        bare = by_key.get((WITHOUT_GRAPHQL, engine))
        if bare and ceiling and ceiling.rate:
            lines.append(
                f"status without GraphQL on {engine} / its ceiling: {_ratio(bare, ceiling)}"
            )
        if status and bare and bare.rate:
            lines.append(f"status on {engine} / without GraphQL: {_ratio(status, bare)}")
    peer = by_key.get((PEER, PEER_ENGINE))
    for engine in (POSTGRES_2, POSTGRES):
        status = by_key.get((STATUS, engine))
        if status and peer and peer.rate:
            lines.append(f"status on {engine} / PostGraphile: {_ratio(status, peer)}")
    cached, uncached = by_key.get((STATUS, POOLED)), by_key.get((STATUS_UNCACHED, POOLED))
    if cached and uncached:
        lines.append(
            f"status on {POOLED}: with vs without parse/validation caches: "
            f"{_versus(cached, uncached)}"
        )
    return lines


def _ratio(row: Row, other: Row) -> str:
    cpu = (
        f", CPU {row.cpu_us:.0f} vs {other.cpu_us:.0f} us/req"
        if row.cpu_us is not None and other.cpu_us is not None
        else ""
    )
    return (
        f"ratio {row.rate / other.rate:.2f} ({row.rate:.0f} vs {other.rate:.0f} req/s), "
        f"p99/p50 {row.p99 / row.p50:.1f} vs {other.p99 / other.p50:.1f}{cpu}"
    )


def _versus(row: Row, baseline: Row) -> str:
    speedup = row.rate / baseline.rate if baseline.rate else math.nan
    return f"{speedup:.2f}x the req/s, p50 {row.p50:.2f} ms vs {baseline.p50:.2f} ms"


def report(options: Options, facts: dict[str, str], rows: Sequence[Row]) -> str:
    settings = (
        f"{options.duration:g} s measured after {options.warmup:g} s warm-up per timed "
        f"scenario, {options.concurrency} in flight, {options.users} users; refresh: "
        f"{options.refresh_users} users x {options.burst} simultaneous checkouts; "
        f"load generator {options.load}"
    )
    lines = [
        f"command:   {shlex.join(sys.orig_argv)}",
        "machine:   " + ", ".join(f"{name} {value}" for name, value in facts.items()),
        f"libraries: {library_versions()}",
        f"settings:  {settings}",
        "",
        format_table(rows),
    ]
    notes = [f"{row.scenario} on {row.engine}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", "notes:", *(f"  {note}" for note in notes)]
    compared = comparisons(rows)
    if compared:
        lines += ["", "against the baselines:", *(f"  {line}" for line in compared)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    logging.getLogger().setLevel(logging.WARNING)
    facts = machine_facts()
    if options.scale is not None:
        results = asyncio.run(run_scale(options, facts))
        print(f"command:   {shlex.join(sys.orig_argv)}")
        print("machine:   " + ", ".join(f"{name} {value}" for name, value in facts.items()))
        print(f"libraries: {library_versions()}\n")
        print(scaling.format_results(results))
        return 0
    rows = asyncio.run(run(options, facts))
    print(report(options, facts, rows))
    # The stock engine and the peer are baselines: their errors are a result, not a
    # failure of ghvault.
    ours = [row for row in rows if row.engine not in (STOCK, PEER_ENGINE)]
    failed = any(row.errors or "NOT exactly" in row.note for row in ours)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
